"""What the //client binary does: check every signature, or load-test them.

`run()` asks the server for the model's signatures, then either sends one
request per signature and reports its outputs and latency (check mode), or
sends `requests` requests per signature with `concurrency` in flight and
reports throughput and p50/p90/p99 latency (load mode). Reports are text for
people or one JSON document for scripts.
"""

import collections
import dataclasses
import io
import json
import sys
import threading
import time
from typing import Any, Collection, Dict, List, Optional, Sequence, Set, TextIO

import numpy as np

from client import client_lib
from client import example_features
from client import input_files
from python.common.stats import percentile  # The one percentile; tests use it here.


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """What to run.

  Attributes:
    signature_names: the signatures to call (empty: every signature).
    inputs: --input flag values (see input_files).
    batch_size: the size of unknown dimensions of sampled inputs.
    requests: 0 for check mode; else requests per signature (load mode).
    concurrency: requests in flight in load mode.
    output_format: "text" or "json".
    max_values: how many leading values of each output to print.
    progress: show a progress bar on stderr in load mode.
    model_base_path: the model's base path (or a version directory), read
      to learn the tf.Example features of classify/regress signatures
      (warmup records, else parse ops); None: learn them from the server's
      errors.
    max_feature_retries: how many requests per signature may be resent
      after the server names a missing feature (or a wrong shape or dtype).
  """
  signature_names: Sequence[str] = ()
  inputs: Sequence[str] = ()
  batch_size: int = 1
  requests: int = 0
  concurrency: int = 1
  output_format: str = "text"
  max_values: int = 6
  progress: bool = True
  model_base_path: Optional[str] = None
  max_feature_retries: int = 10


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


@dataclasses.dataclass
class LoadReport:
  """The outcome of a load run against one signature."""
  signature: str
  method: str
  requests: int
  latencies_s: List[float]
  elapsed_s: float
  errors: Dict[str, int]
  versions: Dict[str, int]
  input_error: Optional[str] = None

  @property
  def failed(self) -> int:
    return sum(self.errors.values())

  @property
  def succeeded(self) -> int:
    return len(self.latencies_s)

  @property
  def ok(self) -> bool:
    return self.failed == 0 and self.input_error is None

  @property
  def throughput_rps(self) -> float:
    total = self.succeeded + self.failed
    return total / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ProgressBar:
  """A thread-safe progress bar on a stream (stderr).

  On a terminal it redraws one line; elsewhere (logs, CI) it prints a line
  at every quarter so the log stays short.
  """

  def __init__(self, label: str, total: int, stream: TextIO = sys.stderr,
               width: int = 30):
    self._label = label
    self._total = max(total, 1)
    self._stream = stream
    self._width = width
    self._done = 0
    self._lock = threading.Lock()
    self._tty = hasattr(stream, "isatty") and stream.isatty()
    self._last_draw = 0.0
    self._last_quarter = -1

  def _line(self) -> str:
    filled = int(self._width * self._done / self._total)
    bar = "#" * filled + "-" * (self._width - filled)
    return f"{self._label} [{bar}] {self._done}/{self._total}"

  def advance(self, n: int = 1) -> None:
    with self._lock:
      self._done += n
      if self._tty:
        now = time.monotonic()
        if now - self._last_draw >= 0.1 or self._done >= self._total:
          self._last_draw = now
          self._stream.write("\r" + self._line())
          self._stream.flush()
      else:
        quarter = 4 * self._done // self._total
        if quarter > self._last_quarter:
          self._last_quarter = quarter
          self._stream.write(self._line() + "\n")
          self._stream.flush()

  def close(self) -> None:
    with self._lock:
      if self._tty:
        self._stream.write("\r" + self._line() + "\n")
        self._stream.flush()


def select_signatures(metadata: client_lib.ModelMetadata,
                      names: Sequence[str],
                      where: str) -> List[client_lib.Signature]:
  """The signatures to run: `names` in order, or all of them.

  Raises:
    client_lib.SignatureError: for a name the model does not have.
  """
  if not names:
    return list(metadata.signatures.values())
  selected = []
  for name in names:
    if name not in metadata.signatures:
      choices = sorted(metadata.signatures)
      message = (f"{where} has no signature {name!r} (--signature_name); it "
                 f"has: {', '.join(choices)}.")
      close = client_lib.closest_names(name, choices)
      if close:
        message += f" Did you mean {close[0]!r}?"
      raise client_lib.SignatureError(message)
    if metadata.signatures[name] not in selected:
      selected.append(metadata.signatures[name])
  return selected


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


def _check_unused(loaded: Sequence[input_files.NamedArray],
                  signatures: Sequence[client_lib.Signature],
                  all_names: Sequence[str]) -> None:
  for item in loaded:
    if item.signature is not None:
      if item.signature not in [s.name for s in signatures]:
        raise client_lib.InputError(
            f"--input for {item.signature}:{item.name} ({item.source}) names "
            f"a signature that is not being run; running: "
            f"{', '.join(s.name for s in signatures)} (of "
            f"{', '.join(all_names)})")
      continue
    takers = [s for s in signatures
              if s.takes_examples or item.name in s.inputs]
    if not takers:
      aliases = sorted({a for s in signatures for a in s.inputs})
      raise client_lib.InputError(
          f"--input {item.name!r} ({item.source}) matches no input of the "
          f"signatures being run; their inputs are: {', '.join(aliases)}")


@dataclasses.dataclass(frozen=True)
class Bundle:
  """Where to learn tf.Example features: a version directory, or why not."""
  export_dir: Optional[str] = None
  note: str = ""
  max_retries: int = 10


def bundle_for(config: RunConfig,
               metadata: client_lib.ModelMetadata) -> Bundle:
  """The version directory to learn features from (config.model_base_path)."""
  if not config.model_base_path:
    return Bundle(max_retries=config.max_feature_retries)
  try:
    export_dir = example_features.export_dir_of(config.model_base_path,
                                                metadata.version)
  except example_features.BundleError as e:
    return Bundle(note=f" (--model_base_path not used: {e})",
                   max_retries=config.max_feature_retries)
  return Bundle(export_dir, max_retries=config.max_feature_retries)


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


def _call(client: client_lib.ServingClient, signature: client_lib.Signature,
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


def check(client: client_lib.ServingClient,
          signatures: Sequence[client_lib.Signature],
          loaded: Sequence[input_files.NamedArray],
          batch_size: int,
          bundle: Bundle = Bundle()) -> List[CallReport]:
  """Sends one request to each signature; never raises for server errors."""
  reports = []
  claimed = predict_input_names(signatures)
  for signature in signatures:
    report = CallReport(signature.name, signature.method, {}, signature.rpc)
    try:
      inputs, report.inputs = build_inputs(client, signature, loaded,
                                           batch_size, claimed)
      report.result, _ = _call(client, signature, inputs, batch_size, bundle,
                               report.inputs)
    except client_lib.RpcError as e:
      report.error_code = e.code.name
      report.error = f"{e.code.name}: {e.details}"
    except client_lib.ClientError as e:
      report.error_code = "CLIENT"
      report.error = str(e)
    reports.append(report)
  return reports


def load(client: client_lib.ServingClient,
         signatures: Sequence[client_lib.Signature],
         loaded: Sequence[input_files.NamedArray],
         batch_size: int,
         requests: int,
         concurrency: int,
         progress_stream: Optional[TextIO] = sys.stderr,
         bundle: Bundle = Bundle()) -> List[LoadReport]:
  """Sends `requests` requests to each signature, `concurrency` at a time.

  Signatures run one after the other over the client's single channel.
  Every request is counted exactly once, as a success or as a failure.

  Args:
    client: the client.
    signatures: the signatures to load.
    loaded: --input arrays.
    batch_size: the size of unknown dimensions of sampled inputs.
    requests: requests per signature (>= 1).
    concurrency: worker threads, each with one request in flight (>= 1).
    progress_stream: where to draw the progress bar (None: no bar).
    bundle: where to learn tf.Example features. The request that got an
      answer with them counts as the first of `requests`; the ones the
      server refused while learning are not counted.

  Returns:
    One LoadReport per signature.

  Raises:
    ValueError: if requests or concurrency is < 1.
  """
  if requests < 1 or concurrency < 1:
    raise ValueError(
        f"requests and concurrency must be >= 1; got {requests}, {concurrency}")
  reports = []
  claimed = predict_input_names(signatures)
  for signature in signatures:
    first = None
    try:
      inputs, info = build_inputs(client, signature, loaded, batch_size,
                                  claimed)
      if signature.takes_examples and not inputs:
        first, inputs = _call(client, signature, inputs, batch_size, bundle,
                              info)
    except client_lib.ClientError as e:
      reports.append(LoadReport(signature.name, signature.method, requests,
                                [], 0.0, {}, {}, input_error=str(e)))
      continue
    lock = threading.Lock()
    next_index = [0]
    latencies: List[float] = []
    errors: Dict[str, int] = collections.Counter()
    versions: Dict[str, int] = collections.Counter()
    if first is not None:
      next_index[0] = 1
      latencies.append(first.latency_s)
      versions[str(first.model_version)] += 1
    bar = (ProgressBar(signature.name, requests, progress_stream)
           if progress_stream is not None else None)
    if bar and first is not None:
      bar.advance()

    def worker():
      while True:
        with lock:
          if next_index[0] >= requests:
            return
          next_index[0] += 1
        start = time.perf_counter()
        try:
          result = client.run(signature.name, inputs, batch_size)
        except client_lib.RpcError as e:
          with lock:
            errors[f"{e.code.name}: {e.details}"] += 1
        except client_lib.ClientError as e:
          with lock:
            errors[f"CLIENT: {e}"] += 1
        else:
          with lock:
            latencies.append(time.perf_counter() - start)
            versions[str(result.model_version)] += 1
        if bar:
          bar.advance()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(concurrency, requests))]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    elapsed = time.perf_counter() - start
    if bar:
      bar.close()
    reports.append(LoadReport(signature.name, signature.method, requests,
                              latencies, elapsed, dict(errors),
                              dict(versions)))
  return reports


def _jsonable(value: Any) -> Any:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", errors="replace")
  if isinstance(value, np.generic):
    return value.item()
  return value


def leading_values(array: np.ndarray, n: int) -> List[Any]:
  """The first `n` values of `array` (flattened), as JSON-able scalars."""
  flat = np.asarray(array).reshape(-1)[:n]
  return [_jsonable(v) for v in flat.tolist()] if flat.dtype != object else [
      _jsonable(v) for v in flat]


def _format_values(array: np.ndarray, n: int) -> str:
  values = leading_values(array, n)
  parts = [f"{v:.4g}" if isinstance(v, float) else repr(v) if isinstance(
      v, str) else str(v) for v in values]
  more = ", ..." if np.asarray(array).size > n else ""
  return "[" + ", ".join(parts) + more + "]"


def _describe(array: np.ndarray) -> str:
  array = np.asarray(array)
  if array.dtype == object or array.dtype.kind in "SU":
    dtype = "string"
  else:
    dtype = str(array.dtype)
  return f"{dtype}[{','.join(str(d) for d in array.shape)}]"


def _version_text(version: Optional[int]) -> str:
  # REST answers do not say which version answered.
  return "?" if version is None else str(version)


def _ms(seconds: float) -> float:
  return round(seconds * 1000, 3)


def to_json(client: client_lib.ServingClient,
            metadata: Optional[client_lib.ModelMetadata],
            reports: Sequence[CallReport],
            load_reports: Sequence[LoadReport],
            error: Optional[client_lib.ClientError],
            max_values: int) -> Dict[str, Any]:
  """The JSON document //client --format=json prints."""
  document: Dict[str, Any] = {
      "server": client.server,
      "protocol": client.protocol,
      "model_name": client.model_name,
      "model_version": metadata.version if metadata else None,
      "ok": error is None and all(r.ok for r in reports) and all(
          r.ok for r in load_reports),
      "error": None,
      "signatures": {},
  }
  if error is not None:
    code = (error.code.name if isinstance(error, client_lib.RpcError)
            else "CLIENT")
    document["error"] = {"code": code, "message": str(error)}
  for r in reports:
    entry = {
        "ok": r.ok,
        "method": r.method,
        "model_version": r.result.model_version if r.result else None,
        "latency_ms": _ms(r.result.latency_s) if r.result else None,
        "rpc": r.rpc,
        "inputs": {k: v.to_json() for k, v in r.inputs.items()},
        "outputs": {},
        "error": None if r.ok else {"code": r.error_code, "message": r.error},
    }
    if r.result:
      for alias, array in r.result.outputs.items():
        entry["outputs"][alias] = {
            "dtype": _describe(array).split("[")[0],
            "shape": list(np.asarray(array).shape),
            "values": leading_values(array, max_values),
        }
    document["signatures"][r.signature] = entry
  if load_reports:
    document["load"] = {}
  for r in load_reports:
    latency = {}
    if r.latencies_s:
      latency = {f"p{p}": _ms(percentile(r.latencies_s, p))
                 for p in (50, 90, 99)}
      latency["mean"] = _ms(sum(r.latencies_s) / len(r.latencies_s))
      latency["max"] = _ms(max(r.latencies_s))
    document["load"][r.signature] = {
        "ok": r.ok,
        "method": r.method,
        "requests": r.requests,
        "succeeded": r.succeeded,
        "failed": r.failed,
        "errors": r.errors,
        "input_error": r.input_error,
        "model_versions": r.versions,
        "elapsed_s": round(r.elapsed_s, 4),
        "throughput_rps": round(r.throughput_rps, 2),
        "latency_ms": latency,
    }
  return document


def to_text(client: client_lib.ServingClient,
            metadata: Optional[client_lib.ModelMetadata],
            reports: Sequence[CallReport],
            load_reports: Sequence[LoadReport],
            error: Optional[client_lib.ClientError],
            max_values: int) -> str:
  """The report //client prints for people."""
  out = io.StringIO()
  if error is not None:
    where = f"model {client.model_name!r} at {client.server}"
    message = str(error)
    if not message.startswith(where):
      message = f"{where}: {message}"
    out.write(f"error: {message}\n")
    return out.getvalue()
  version = metadata.version if metadata.version is not None else "?"
  over = " over REST" if client.protocol == "rest" else ""
  out.write(f"model {metadata.model_name!r} at {client.server}{over}: "
            f"version {version}, {len(metadata.signatures)} signature(s)\n")
  for r in reports:
    method = r.method
    if r.rpc == "Predict" and r.method in ("classify", "regress"):
      method += ", sent as Predict: its input is not tf.Examples"
    if r.ok:
      out.write(f"OK    {r.signature}  ({method})  "
                f"{r.result.latency_s * 1000:.1f} ms  version "
                f"{_version_text(r.result.model_version)}\n")
    else:
      out.write(f"FAIL  {r.signature}  ({method})  {r.error}\n")
    for alias, info in r.inputs.items():
      shape = ",".join(str(d) for d in info.shape)
      described = f"{info.dtype}[{shape}]"
      out.write(f"        in   {alias:<16} {described:<16} {info.source}\n")
    if r.result:
      for alias, array in r.result.outputs.items():
        out.write(f"        out  {alias:<16} {_describe(array):<16} "
                  f"{_format_values(array, max_values)}\n")
  if reports:
    answered = sum(r.ok for r in reports)
    out.write(f"{answered} of {len(reports)} signature(s) answered.\n")
  if load_reports:
    header = (f"{'signature':<20} {'requests':>8} {'failed':>6} "
              f"{'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  "
              "versions\n")
    out.write(header)
    for r in load_reports:
      if r.input_error:
        out.write(f"{r.signature:<20} not run: {r.input_error}\n")
        continue
      if r.latencies_s:
        p = [f"{percentile(r.latencies_s, q) * 1000:8.2f}"
             for q in (50, 90, 99)]
      else:
        p = [f"{'-':>8}"] * 3
      versions = ",".join(f"{_version_text(v)}:{n}" for v, n in sorted(
          r.versions.items(), key=lambda item: (item[0] is None, item[0])))
      out.write(f"{r.signature:<20} {r.requests:>8} {r.failed:>6} "
                f"{r.throughput_rps:>9.1f} {' '.join(p)}  {versions}\n")
      for message, count in sorted(r.errors.items()):
        out.write(f"    {count} x {message}\n")
    failed = sum(r.failed for r in load_reports)
    total = sum(r.requests for r in load_reports)
    out.write(f"{total - failed} of {total} request(s) succeeded.\n")
  return out.getvalue()


def run(client: client_lib.ServingClient, config: RunConfig,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
  """Runs the client once and prints the report.

  Args:
    client: the client.
    config: what to run.
    out: where the report goes.
    err: where errors (text mode) and the progress bar go.

  Returns:
    0 if every request succeeded, else 1.

  Raises:
    input_files.InputFileError: for bad --input values (bad usage), before
      any call is made.
  """
  loaded = input_files.load_inputs(config.inputs)
  metadata = None
  error = None
  reports: List[CallReport] = []
  load_reports: List[LoadReport] = []
  try:
    metadata = client.metadata()
    signatures = select_signatures(
        metadata, config.signature_names,
        f"model {client.model_name!r} at {client.server}")
    _check_unused(loaded, signatures, list(metadata.signatures))
    bundle = bundle_for(config, metadata)
    if config.requests > 0:
      load_reports = load(client, signatures, loaded, config.batch_size,
                          config.requests, config.concurrency,
                          err if config.progress else None, bundle)
    else:
      reports = check(client, signatures, loaded, config.batch_size, bundle)
  except client_lib.ClientError as e:
    error = e
  if config.output_format == "json":
    document = to_json(client, metadata, reports, load_reports, error,
                       config.max_values)
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    ok = document["ok"]
  else:
    text = to_text(client, metadata, reports, load_reports, error,
                   config.max_values)
    (err if error is not None else out).write(text)
    ok = error is None and all(r.ok for r in reports) and all(
        r.ok for r in load_reports)
  out.flush()
  return 0 if ok else 1
