"""How one request to a signature is made, and what was sent.

`build_inputs` takes --input arrays where given and samples elsewhere;
`call_signature` sends one request, learning the tf.Example features of a
classify/regress signature (from the bundle, else the server's errors) when
none were given. Check mode (run_lib) and load mode (load_mode) both make
their requests here, so the two modes send the same inputs.
"""

import dataclasses
from typing import Any, Collection, Dict, List, Optional, Sequence, Set

import numpy as np

from client import client_lib
from client import example_features
from client import input_files


@dataclasses.dataclass
class InputInfo:
  """How one input of a request was made.

  Attributes:
    dtype: the dtype sent ("tf.Example" for serialized Examples).
    shape: the shape sent.
    source: "sample", "file", or a phrase saying where tf.Example features
      came from.
    features: for tf.Examples: feature name -> "dtype[shape]".
    features_from: for learned features: "warmup", "graph" or "server".
  """
  dtype: str
  shape: List[int]
  source: str
  features: Optional[Dict[str, str]] = None
  features_from: Optional[str] = None

  def to_json(self) -> Dict[str, Any]:
    """The fields, without the ones that are None."""
    return {k: v for k, v in dataclasses.asdict(self).items()
            if v is not None}


@dataclasses.dataclass
class CallReport:
  """The outcome of one request to one signature (check mode)."""
  signature: str
  method: str
  inputs: Dict[str, InputInfo]
  rpc: str = ""
  result: Optional[client_lib.Result] = None
  error_code: Optional[str] = None
  error: Optional[str] = None

  @property
  def ok(self) -> bool:
    return self.error is None


def build_inputs(client: client_lib.ServingClient,
                 signature: client_lib.Signature,
                 loaded: Sequence[input_files.NamedArray],
                 batch_size: int,
                 claimed: Collection[str] = ()):
  """The inputs for one signature: files where given, samples elsewhere.

  Unscoped --input names go to the predict signatures that have an input of
  that name; classify and regress signatures take the other unscoped names
  as tf.Example features (`claimed` = the predict signatures' input names).

  Returns:
    (name -> array, name -> InputInfo).

  Raises:
    client_lib.InputError: if a missing input cannot be sampled.
  """
  given = input_files.inputs_for_signature(
      loaded, signature.name, signature.inputs,
      any_name=signature.takes_examples, claimed=claimed)
  info = {name: InputInfo(_sent_dtype(signature, name, a), list(a.shape),
                          _file_source(signature, name, a))
          for name, a in given.items()}
  if signature.takes_examples:
    return dict(given), info
  missing = [a for a in signature.inputs if a not in given]
  inputs = dict(given)
  if missing:
    samples = client.sample_inputs(signature.name, batch_size)
    for alias in missing:
      inputs[alias] = samples[alias]
      info[alias] = InputInfo(signature.inputs[alias].dtype.name,
                              list(samples[alias].shape), "sample")
  return inputs, info


def _sent_dtype(signature: client_lib.Signature, name: str,
                array: np.ndarray) -> str:
  """The dtype an input from a file is sent as (not the file's)."""
  if not signature.takes_examples and name in signature.inputs:
    return signature.inputs[name].dtype.name
  kind = np.asarray(array).dtype.kind
  if kind == "f":
    return "float32"  # A tf.Example float_list holds float32.
  if kind in "iub":
    return "int64"
  return "string"


def _file_source(signature: client_lib.Signature, name: str,
                 array: np.ndarray) -> str:
  sent = _sent_dtype(signature, name, array)
  held = "string" if np.asarray(array).dtype.kind in "SUO" else str(
      np.asarray(array).dtype)
  return "file" if held == sent else f"file ({held}, sent as {sent})"


def _describe_features(
    features: Sequence[example_features.Feature]) -> Dict[str, str]:
  return {f.name: f.spec() for f in features}


def _learned_info(batch_size: int, learned: example_features.LearnedExamples,
                  note: str = "") -> InputInfo:
  names = ", ".join(f.describe() for f in learned.features) or "no feature"
  return InputInfo("tf.Example", [batch_size],
                   f"features {names} from {learned.detail}{note}",
                   _describe_features(learned.features), learned.origin)


def _server_info(batch_size: int, features, retries: int,
                 note: str) -> InputInfo:
  if features:
    names = ", ".join(f.describe() for f in features)
    plural = "retry" if retries == 1 else "retries"
    source = (f"features {names} learned from the server's INVALID_ARGUMENT "
              f"answers ({retries} {plural})")
  else:
    source = "empty tf.Examples"
  return InputInfo("tf.Example", [batch_size], source + note,
                   _describe_features(features),
                   example_features.FROM_SERVER if features else None)


def call_with_learned_examples(
    client: client_lib.ServingClient, signature: client_lib.Signature,
    batch_size: int, export_dir: Optional[str], bundle_note: str,
    max_retries: int, info: Dict[str, InputInfo]):
  """Calls a classify/regress signature with tf.Examples it accepts.

  The features come from the bundle (`export_dir`: warmup records, else the
  graph's parse ops) when it is readable, else from the server's errors,
  resending up to `max_retries` times (see client.example_features).

  Args:
    client: the client.
    signature: a signature that takes tf.Examples.
    batch_size: Examples per request.
    export_dir: the version directory, or None.
    bundle_note: why the bundle was not used (appended to the report).
    max_retries: the bound on resent requests.
    info: filled with the InputInfo of the `inputs` alias, also on errors.

  Returns:
    (the Result, the Examples that got it).

  Raises:
    client_lib.ClientError: the last error when the features could not be
      learned (or another error).
  """
  alias = client_lib.EXAMPLES_INPUT_ALIAS
  if export_dir:
    try:
      learned = example_features.learn_from_bundle(export_dir, signature.name,
                                                   batch_size)
    except example_features.BundleError as e:
      learned, bundle_note = None, f" (the bundle was not read: {e})"
    if learned is not None:
      info[alias] = _learned_info(batch_size, learned)
      examples = list(learned.examples)
      return client.run(signature.name, examples, batch_size), examples
    if not bundle_note:
      bundle_note = (f" ({export_dir} has no warmup record for the signature "
                     "and no parse op fed by its inputs)")
  features: List[example_features.Feature] = []
  retries = 0
  while True:
    info[alias] = _server_info(batch_size, features, retries, bundle_note)
    examples = example_features.examples_for(features, batch_size)
    try:
      return client.run(signature.name, examples, batch_size), examples
    except client_lib.RpcError as e:
      if e.code.name != "INVALID_ARGUMENT":
        raise
      better = example_features.learn_from_error(features, e.details)
      if better is None:
        raise
      if retries >= max_retries:
        info[alias].source += (f"; not resent: --max_feature_retries="
                               f"{max_retries} reached")
        raise
      features = better
      retries += 1


def predict_input_names(
    signatures: Sequence[client_lib.Signature]) -> Set[str]:
  """The input aliases of the predict signatures among `signatures`."""
  return {alias for s in signatures if not s.takes_examples
          for alias in s.inputs}


@dataclasses.dataclass(frozen=True)
class Bundle:
  """Where to learn tf.Example features: a version directory, or why not."""
  export_dir: Optional[str] = None
  note: str = ""
  max_retries: int = 10


def _serialized(features, shape: Sequence[int]) -> np.ndarray:
  """Serialized sample Examples in a string array of `shape` (rank <= 1)."""
  count = int(np.prod(shape)) if shape else 1
  rows = [e.SerializeToString()
          for e in example_features.examples_for(features, count)]
  return np.array(rows if shape else rows[0], dtype=object).reshape(
      tuple(shape))


def _sampled_string_inputs(signature: client_lib.Signature,
                           info: Dict[str, InputInfo]) -> List[str]:
  """Sampled string inputs of rank <= 1: maybe serialized tf.Examples."""
  return [alias for alias, spec in signature.inputs.items()
          if spec.dtype.name == "string" and spec.shape is not None
          and len(spec.shape) <= 1 and alias in info
          and info[alias].source == "sample"]


def call_predict_learning_examples(
    client: client_lib.ServingClient, signature: client_lib.Signature,
    inputs: Dict[str, np.ndarray], bundle: Bundle,
    info: Dict[str, InputInfo]):
  """Predict on a signature whose sampled string inputs may be tf.Examples.

  TF2 exports parse Examples in predict signatures (a string `inputs` of
  shape [None] into ParseExampleV2). Such an input gets serialized Examples
  when the bundle shows a parse op reading it; else the sample is sent, and
  if the server answers `Could not parse example input` the string inputs
  become Examples whose features are learned from the errors that follow,
  as for classify/regress (at most `bundle.max_retries` resends).

  Returns:
    (the Result, the inputs that got it).

  Raises:
    client_lib.ClientError: the last error.
  """
  candidates = _sampled_string_inputs(signature, info)
  shapes = {a: list(inputs[a].shape) for a in candidates}
  as_examples: Dict[str, list] = {}  # alias -> features
  if bundle.export_dir and candidates:
    try:
      saved_model = example_features.read_saved_model(bundle.export_dir)
    except example_features.BundleError:
      saved_model = None
    for alias in candidates if saved_model is not None else ():
      features, ops = example_features.features_from_graph(
          saved_model, signature.name, alias=alias)
      if ops:
        as_examples[alias] = features
        names = ", ".join(f.describe() for f in features) or "no feature"
        info[alias] = InputInfo(
            "tf.Example", shapes[alias],
            f"serialized tf.Examples, features {names} from the graph's "
            f"{', '.join(ops)} in {bundle.export_dir}",
            _describe_features(features), example_features.FROM_GRAPH)
  from_graph = set(as_examples)
  retries = 0
  while True:
    for alias, features in as_examples.items():
      inputs[alias] = _serialized(features, shapes[alias])
    try:
      return client.run(signature.name, inputs), inputs
    except client_lib.RpcError as e:
      if e.code.name != "INVALID_ARGUMENT" or retries >= bundle.max_retries:
        raise
      if example_features.NOT_AN_EXAMPLE.search(e.details) and (
          set(candidates) - set(as_examples)):
        for alias in candidates:
          as_examples.setdefault(alias, [])
      else:
        learned = [a for a in as_examples if a not in from_graph]
        better = (example_features.learn_from_error(as_examples[learned[0]],
                                                    e.details)
                  if learned else None)
        if better is None:
          raise
        for alias in learned:
          as_examples[alias] = better
      retries += 1
      for alias in set(as_examples) - from_graph:
        learned_info = _server_info(1, as_examples[alias], retries, "")
        learned_info.shape = shapes[alias]
        learned_info.source = "serialized " + learned_info.source.replace(
            "features", "tf.Examples, features", 1)
        info[alias] = learned_info


def call_signature(client: client_lib.ServingClient,
                   signature: client_lib.Signature,
                   inputs, batch_size: int, bundle: Bundle,
                   info: Dict[str, InputInfo]):
  """One request: learned tf.Examples when no features were given."""
  if signature.takes_examples and not inputs:
    return call_with_learned_examples(client, signature, batch_size,
                                      bundle.export_dir, bundle.note,
                                      bundle.max_retries, info)
  if not signature.takes_examples and _sampled_string_inputs(signature, info):
    return call_predict_learning_examples(client, signature, dict(inputs),
                                          bundle, info)
  return client.run(signature.name, inputs, batch_size), inputs
