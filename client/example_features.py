"""Which tf.Example features a classify or regress signature needs.

A Classify or Regress request carries tf.Examples; a model that parses them
with a required feature (a `FixedLenFeature` without default) fails on empty
ones with TensorFlow's `Feature: x (data type: float) is required but could
not be found`. The client learns the features, in this order:

1. From the bundle, when the model's base path is readable (--model_base_path):
   a. its warmup records (`assets.extra/tf_serving_warmup_requests`, the
      PredictionLogs TF Serving replays at load): the Examples of the first
      record that calls the signature are used as they are;
   b. else the graph's parse ops fed by the signature's `inputs` tensor
      (also inside the functions of TF2 bundles): `ParseExample` (v1, keys and
      defaults as Const inputs), `ParseExampleV2` (keys as Const vectors) and
      `ParseSingleExample` (keys as attributes), with dtypes and dense shapes
      from their attributes.
2. Otherwise from the server's INVALID_ARGUMENT answers: `Feature: NAME (data
   type: TYPE) is required but could not be found` adds the feature, `Key:
   NAME, Index: 0.  Number of TYPE values != expected.  Values size: N but
   output shape: [S]` fixes its shape, `Key: NAME ... Data type: T but expected
   type: U` its dtype; each fact is one retry, up to a bound (see
   `learn_from_error`).

Features are described as `Feature`s and turned into Examples with sample
values by `examples_for`.
"""

import collections
import dataclasses
import math
import os
import re
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXAMPLES_INPUT_ALIAS = "inputs"

# Origins of the features, as the report names them.
FROM_WARMUP = "warmup"
FROM_GRAPH = "graph"
FROM_SERVER = "server"

_PARSE_OPS = ("ParseExample", "ParseExampleV2", "ParseSingleExample")
_PASS_THROUGH_OPS = ("Identity", "Snapshot", "StopGradient", "Reshape",
                     "Squeeze", "ExpandDims")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_MAX_CALL_DEPTH = 8

# TensorFlow's names of the tf.Example dtypes, as its messages print them.
_MESSAGE_DTYPES = {"float": tf.float32, "int64": tf.int64,
                   "string": tf.string}


class BundleError(Exception):
  """The bundle cannot be read (missing, unreadable or malformed)."""


@dataclasses.dataclass(frozen=True)
class Feature:
  """One tf.Example feature a signature reads.

  Attributes:
    name: the feature key.
    dtype: tf.float32, tf.int64 or tf.string.
    shape: the dense shape of one example's value (-1: any size, given one
      value); () for a scalar; sparse and ragged features get (-1,).
    required: False for dense features with a default and for sparse ones.
  """
  name: str
  dtype: tf.dtypes.DType
  shape: Tuple[int, ...] = (1,)
  required: bool = True

  @property
  def num_values(self) -> int:
    """How many values one example carries."""
    return math.prod(max(d, 1) for d in self.shape)

  def spec(self) -> str:
    """E.g. "float32[1]"."""
    return f"{self.dtype.name}[{','.join(str(d) for d in self.shape)}]"

  def describe(self) -> str:
    """E.g. "x float32[1]", or "x2 float32[1] optional"."""
    optional = "" if self.required else " optional"
    return f"{self.name} {self.spec()}{optional}"


@dataclasses.dataclass(frozen=True)
class LearnedExamples:
  """The Examples to send to one signature, and where they came from.

  Attributes:
    examples: the Examples of one request (batch = len).
    features: the features they carry (from the first Example for warmup).
    origin: FROM_WARMUP, FROM_GRAPH or FROM_SERVER.
    detail: a phrase for the report, e.g. "the graph's ParseExample op
      'ParseExample' in /m/123".
  """
  examples: Tuple[example_pb2.Example, ...]
  features: Tuple[Feature, ...]
  origin: str
  detail: str


# ---------------------------------------------------------------------------
# Sample Examples from Features.


def examples_for(features: Sequence[Feature], batch_size: int,
                 seed: int = 0) -> List[example_pb2.Example]:
  """Builds `batch_size` Examples holding every feature with sample values.

  Floats are standard normal, integers uniform in [0, 10), strings
  b"sample"; each example gets `feature.num_values` values.
  """
  rng = np.random.default_rng(seed)
  examples = [example_pb2.Example() for _ in range(batch_size)]
  for example in examples:
    for feature in features:
      slot = example.features.feature[feature.name]
      n = feature.num_values
      if feature.dtype == tf.string:
        slot.bytes_list.value.extend([b"sample"] * n)
      elif feature.dtype.is_integer or feature.dtype == tf.bool:
        slot.int64_list.value.extend(int(v) for v in rng.integers(0, 10, n))
      else:
        slot.float_list.value.extend(float(v) for v in
                                     rng.standard_normal(n))
  return examples


def features_of_example(example: example_pb2.Example) -> Tuple[Feature, ...]:
  """The features an Example carries (dtype and count), sorted by name."""
  features = []
  for name, value in sorted(example.features.feature.items()):
    kind = value.WhichOneof("kind")
    dtype = {"float_list": tf.float32, "int64_list": tf.int64,
             "bytes_list": tf.string}.get(kind, tf.float32)
    count = len(getattr(value, kind).value) if kind else 0
    features.append(Feature(name, dtype, (count,)))
  return tuple(features)


# ---------------------------------------------------------------------------
# The bundle: version directory, warmup records, graph.


def export_dir_of(base_path: str, version: Optional[int]) -> str:
  """The version directory of `base_path` that serves `version`.

  Args:
    base_path: a model base path (numeric version subdirectories, possibly
      zero-padded as TF Serving's `00000123`), or a version directory itself.
    version: the version the server answered with (None: the highest).

  Returns:
    The directory holding saved_model.pb.

  Raises:
    BundleError: if there is no such directory.
  """
  if _has_saved_model(base_path):
    return base_path
  try:
    names = tf.io.gfile.listdir(base_path)
  except (tf.errors.OpError, OSError) as e:
    raise BundleError(f"cannot list the model base path {base_path}: {e}")
  versions = {}
  for name in names:
    name = name.rstrip("/")
    if name.isdigit() and _has_saved_model(os.path.join(base_path, name)):
      versions[int(name)] = os.path.join(base_path, name)
  if not versions:
    raise BundleError(f"the model base path {base_path} has no numeric "
                      "version directory with a saved_model.pb")
  if version is None:
    return versions[max(versions)]
  if version not in versions:
    raise BundleError(
        f"the model base path {base_path} has no version {version} (it has "
        f"{', '.join(str(v) for v in sorted(versions))})")
  return versions[version]


def _has_saved_model(path: str) -> bool:
  return any(tf.io.gfile.exists(os.path.join(path, f))
             for f in ("saved_model.pb", "saved_model.pbtxt"))


def read_saved_model(export_dir: str) -> saved_model_pb2.SavedModel:
  """Reads saved_model.pb (or .pbtxt) of a version directory.

  Raises:
    BundleError: if it cannot be read or parsed.
  """
  saved_model = saved_model_pb2.SavedModel()
  binary = os.path.join(export_dir, "saved_model.pb")
  try:
    if tf.io.gfile.exists(binary):
      with tf.io.gfile.GFile(binary, "rb") as f:
        saved_model.ParseFromString(f.read())
    else:
      with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pbtxt"),
                             "r") as f:
        text_format.Parse(f.read(), saved_model)
  except (tf.errors.OpError, OSError, text_format.ParseError) as e:
    raise BundleError(f"cannot read the SavedModel in {export_dir}: {e}")
  except Exception as e:  # protobuf's DecodeError
    raise BundleError(f"{binary} is not a SavedModel: {e}")
  return saved_model


def _tfrecords(path: str) -> Iterator[bytes]:
  """The records of a TFRecord file (length, CRC, data, CRC; CRCs unchecked)."""
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    length = int.from_bytes(data[offset:offset + 8], "little")
    start = offset + 12
    if start + length + 4 > len(data):
      raise BundleError(f"{path} is truncated at byte {offset}")
    yield data[start:start + length]
    offset = start + length + 4


def _examples_of_input(model_input) -> List[example_pb2.Example]:
  kind = model_input.WhichOneof("kind")
  if kind == "example_list":
    return list(model_input.example_list.examples)
  if kind == "example_list_with_context":
    context = model_input.example_list_with_context.context
    examples = []
    for example in model_input.example_list_with_context.examples:
      merged = example_pb2.Example()
      merged.CopyFrom(context)
      merged.MergeFrom(example)
      examples.append(merged)
    return examples
  return []


def _requests_of_log(log: prediction_log_pb2.PredictionLog):
  kind = log.WhichOneof("log_type")
  if kind in ("classify_log", "regress_log"):
    request = getattr(log, kind).request
    yield request.model_spec.signature_name, request.input
  elif kind == "multi_inference_log":
    request = log.multi_inference_log.request
    for task in request.tasks:
      yield task.model_spec.signature_name, request.input


def examples_from_warmup(export_dir: str,
                         signature_name: str) -> List[example_pb2.Example]:
  """The Examples of the first warmup record that calls `signature_name`.

  Returns:
    The Examples ([] if there is no warmup file or no such record).

  Raises:
    BundleError: if the file cannot be read or holds no PredictionLogs.
  """
  path = os.path.join(export_dir, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return []
  try:
    for record in _tfrecords(path):
      log = prediction_log_pb2.PredictionLog.FromString(record)
      for name, model_input in _requests_of_log(log):
        if (name or "serving_default") == signature_name:
          examples = _examples_of_input(model_input)
          if examples:
            return examples
  except (tf.errors.OpError, OSError) as e:
    raise BundleError(f"cannot read {path}: {e}")
  except BundleError:
    raise
  except Exception as e:  # protobuf's DecodeError
    raise BundleError(f"{path} does not hold PredictionLog records: {e}")
  return []


class _Scope:
  """The nodes of the top-level graph or of one function, with consumers."""

  def __init__(self, nodes: Sequence[node_def_pb2.NodeDef],
               in_function: bool):
    self.in_function = in_function
    self.nodes = {n.name: n for n in nodes}
    self.consumers: Dict[str, List[Tuple[node_def_pb2.NodeDef, int]]] = (
        collections.defaultdict(list))
    for node in nodes:
      for index, name in enumerate(node.input):
        if not name.startswith("^"):
          self.consumers[self.key(name)].append((node, index))

  def key(self, tensor: str) -> str:
    """A tensor name as consumers spell it ("n" and "n:0" are one tensor)."""
    if not self.in_function and ":" not in tensor:
      return tensor + ":0"
    return tensor

  def output(self, node: node_def_pb2.NodeDef) -> str:
    """The name of a pass-through node's first output."""
    return f"{node.name}:output:0" if self.in_function else f"{node.name}:0"

  def const(self, tensor: str) -> Optional[np.ndarray]:
    """The value of a Const (through Identity, Reshape...), else None.

    The value is the Const's: a Reshape's shape is not applied (the callers
    need keys and whether a default is empty).
    """
    node = self.nodes.get(tensor.lstrip("^").split(":")[0])
    for _ in range(16):
      if node is None:
        return None
      if node.op == "Const":
        return tf.make_ndarray(node.attr["value"].tensor)
      if node.op not in _PASS_THROUGH_OPS or not node.input:
        return None
      node = self.nodes.get(node.input[0].split(":")[0])
    return None


def _shape(proto) -> Tuple[int, ...]:
  if proto.unknown_rank:
    return (-1,)
  return tuple(int(d.size) for d in proto.dim)


def _strings(value: Optional[np.ndarray]) -> List[Optional[str]]:
  if value is None:
    return []
  return [v.decode("utf-8", errors="replace") if isinstance(v, bytes)
          else str(v) for v in np.asarray(value, dtype=object).reshape(-1)]


def _parse_op_features(scope: _Scope,
                       node: node_def_pb2.NodeDef) -> List[Feature]:
  """The features a parse op reads (keys it cannot resolve are skipped)."""
  attr = node.attr
  dense_types = [tf.dtypes.as_dtype(t) for t in attr["Tdense"].list.type]
  dense_shapes = [_shape(s) for s in attr["dense_shapes"].list.shape]
  sparse_types = [tf.dtypes.as_dtype(t) for t in attr["sparse_types"].list.type]
  inputs = list(node.input)
  if node.op == "ParseExample":
    num_sparse, num_dense = int(attr["Nsparse"].i), int(attr["Ndense"].i)
    sparse_keys = [(_strings(scope.const(k)) or [None])[0]
                   for k in inputs[2:2 + num_sparse]]
    dense_start = 2 + num_sparse
    dense_keys = [(_strings(scope.const(k)) or [None])[0]
                  for k in inputs[dense_start:dense_start + num_dense]]
    defaults = inputs[dense_start + num_dense:]
    ragged: List[Tuple[str, tf.dtypes.DType]] = []
  elif node.op == "ParseExampleV2":
    sparse_keys = _strings(scope.const(inputs[2]))
    dense_keys = _strings(scope.const(inputs[3]))
    ragged_types = [tf.dtypes.as_dtype(t)
                    for t in attr["ragged_value_types"].list.type]
    ragged = list(zip(_strings(scope.const(inputs[4])), ragged_types))
    defaults = inputs[5:]
  else:  # ParseSingleExample
    sparse_keys = [k.decode() for k in attr["sparse_keys"].list.s]
    dense_keys = [k.decode() for k in attr["dense_keys"].list.s]
    defaults = inputs[1:]
    ragged = []
  features = []
  for i, key in enumerate(dense_keys):
    if key is None or i >= len(dense_types):
      continue
    default = scope.const(defaults[i]) if i < len(defaults) else None
    required = default is None or np.asarray(default).size == 0
    shape = dense_shapes[i] if i < len(dense_shapes) else (1,)
    features.append(Feature(key, dense_types[i], shape, required))
  for key, dtype in list(zip(sparse_keys, sparse_types)) + ragged:
    if key is not None:
      features.append(Feature(key, dtype, (-1,), required=False))
  return features


def _find_parse_ops(scope: _Scope, tensor: str,
                    library: Mapping[str, function_pb2.FunctionDef],
                    depth: int = 0) -> List[Tuple[_Scope, node_def_pb2.NodeDef]]:
  """The parse ops that read `tensor` as their serialized input."""
  found = []
  pending, seen = [scope.key(tensor)], set()
  while pending:
    current = pending.pop()
    if current in seen:
      continue
    seen.add(current)
    for node, index in scope.consumers.get(current, ()):
      if node.op in _PARSE_OPS and index == 0:
        found.append((scope, node))
      elif node.op in _PASS_THROUGH_OPS and index == 0:
        pending.append(scope.output(node))
      elif node.op in _CALL_OPS and depth < _MAX_CALL_DEPTH:
        function = library.get(node.attr["f"].func.name)
        if function is not None and index < len(function.signature.input_arg):
          inner = _Scope(function.node_def, in_function=True)
          found += _find_parse_ops(
              inner, function.signature.input_arg[index].name, library,
              depth + 1)
  return found


def features_from_graph(saved_model: saved_model_pb2.SavedModel,
                        signature_name: str,
                        tags: Sequence[str] = ("serve",),
                        alias: str = EXAMPLES_INPUT_ALIAS
                        ) -> Tuple[List[Feature], List[str]]:
  """The features the parse ops fed by one input of a signature read.

  Args:
    saved_model: the SavedModel proto.
    signature_name: the signature.
    tags: the MetaGraph's tag-set.
    alias: the input alias (`inputs` for classify/regress signatures; any
      string input of a predict signature, as TF2 exports parse Examples in
      predict signatures).

  Returns:
    (features, names of the parse ops found); both empty when the signature
    or the alias is not there or no parse op reads that input.
  """
  for meta_graph in saved_model.meta_graphs:
    if set(meta_graph.meta_info_def.tags) != set(tags):
      continue
    signature = meta_graph.signature_def.get(signature_name)
    if signature is None or alias not in signature.inputs:
      return [], []
    graph = meta_graph.graph_def
    library = {f.signature.name: f for f in graph.library.function}
    ops = _find_parse_ops(_Scope(graph.node, in_function=False),
                          signature.inputs[alias].name, library)
    features: Dict[str, Feature] = {}
    for scope, node in ops:
      for feature in _parse_op_features(scope, node):
        features.setdefault(feature.name, feature)
    return sorted(features.values(), key=lambda f: f.name), [
        f"{node.op} op {node.name!r}" for _, node in ops]
  return [], []


def learn_from_bundle(export_dir: str, signature_name: str,
                      batch_size: int) -> Optional[LearnedExamples]:
  """The Examples for a signature from its bundle: warmup, else graph.

  Returns:
    The Examples, or None if the bundle says nothing about the features.

  Raises:
    BundleError: if the bundle cannot be read.
  """
  warmup = examples_from_warmup(export_dir, signature_name)
  if warmup:
    rows = [warmup[i % len(warmup)] for i in range(batch_size)]
    return LearnedExamples(
        tuple(rows), features_of_example(warmup[0]), FROM_WARMUP,
        f"the warmup records of {export_dir}")
  features, ops = features_from_graph(read_saved_model(export_dir),
                                      signature_name)
  if not ops:
    return None
  return LearnedExamples(
      tuple(examples_for(features, batch_size)), tuple(features), FROM_GRAPH,
      f"the graph's {', '.join(ops)} in {export_dir}")


# ---------------------------------------------------------------------------
# Server errors.

_MISSING = re.compile(
    r"Feature: (?P<name>.+?) \(data type: (?P<dtype>\w+)\) is required but "
    r"could not be found")
_COUNT = re.compile(
    r"Key: (?P<name>[^,]+), Index: \d+\.\s+Number of (?P<dtype>\w+) values "
    r"!= expected\.\s+Values size: \d+ but output shape: \[(?P<shape>[\d,]*)\]")
# A string input fed to a parse op with something that is not a tf.Example.
NOT_AN_EXAMPLE = re.compile(r"Could not parse example input")
_DTYPE = re.compile(
    r"Key: (?P<name>[^,.]+?)[,.].*?Data types don't match\. Data type: \w+ "
    r"but expected type: (?P<dtype>\w+)")


def learn_from_error(features: Sequence[Feature],
                     message: str) -> Optional[List[Feature]]:
  """Applies what a server's INVALID_ARGUMENT message says about features.

  Args:
    features: the features sent.
    message: the server's error details.

  Returns:
    The corrected features, or None when the message teaches nothing new
    (another error, an unknown dtype, or a fact already applied).
  """
  by_name = {f.name: f for f in features}
  match = _MISSING.search(message)
  if match and match["dtype"] in _MESSAGE_DTYPES:
    name = match["name"]
    if name in by_name:
      return None
    by_name[name] = Feature(name, _MESSAGE_DTYPES[match["dtype"]], (1,))
    return list(by_name.values())
  match = _COUNT.search(message)
  if match and match["name"] in by_name:
    shape = tuple(int(d) for d in match["shape"].split(",") if d) or ()
    old = by_name[match["name"]]
    if old.shape == shape:
      return None
    by_name[old.name] = dataclasses.replace(old, shape=shape)
    return list(by_name.values())
  match = _DTYPE.search(message)
  if match and match["name"] in by_name and (
      match["dtype"] in _MESSAGE_DTYPES):
    old = by_name[match["name"]]
    dtype = _MESSAGE_DTYPES[match["dtype"]]
    if old.dtype == dtype:
      return None
    by_name[old.name] = dataclasses.replace(old, dtype=dtype)
    return list(by_name.values())
  return None
