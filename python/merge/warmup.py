"""TF Serving warmup requests for a merged bundle.

`assets.extra/tf_serving_warmup_requests` is a TFRecord file of
`tensorflow.serving.PredictionLog` protos that TF Serving replays when it
loads a version, so the first real request does not pay for lazy
initialization. One request per signature: batch 1, inputs synthesized from
the signature's dtype and shape (zeros, empty strings); classify and regress
signatures get one tf.Example holding every feature that the graph's parse ops
read from their input (TF Serving refuses to load a version whose warmup
request fails, and an empty tf.Example fails on any required feature).
"""

import collections
from typing import Mapping, Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.framework import node_def_pb2
from tensorflow_serving.apis import prediction_log_pb2

from python.merge import errors
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def synthesize(tensor_spec: signatures_lib.TensorSpec,
               batch_size: int = 1) -> np.ndarray:
  """Returns a value of the spec's dtype and shape (unknown dims -> batch).

  Unknown rank becomes a vector of `batch_size` elements. Numbers are zeros
  and strings empty, which every graph accepts shape-wise.

  Args:
    tensor_spec: dtype name and shape.
    batch_size: Size given to unknown dimensions.
  """
  shape = ([batch_size] if tensor_spec.shape is None else
           [batch_size if d == -1 else d for d in tensor_spec.shape])
  dtype = tf.dtypes.as_dtype(tensor_spec.dtype)
  if dtype == tf.string:
    return np.full(shape, b"", dtype=object)
  if dtype == tf.bool:
    return np.zeros(shape, dtype=bool)
  return np.zeros(shape, dtype=dtype.as_numpy_dtype)


_PARSE_OPS = ("ParseExample", "ParseExampleV2", "ParseSingleExample")


def synthesized_feature(dtype: tf.dtypes.DType, count: int) -> tf.train.Feature:
  """A tf.train.Feature of `count` nonzero values of `dtype`'s kind.

  Nonzero: a serialized Example ending in a NUL byte would lose it when a
  session converts the feed to a fixed-width numpy bytes array.
  """
  if dtype == tf.string:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"] *
                                                          count))
  if dtype.is_integer or dtype == tf.bool:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * count))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * count))


def _node_name(tensor_or_input: str) -> str:
  return tensor_or_input.lstrip("^").split(":")[0]


class _KeysNotConstant(Exception):
  """A parse op's feature keys are not Const nodes of the GraphDef."""


def _const_strings(nodes: Mapping[str, node_def_pb2.NodeDef],
                   inputs: list[str]) -> list[str]:
  keys = []
  for name in inputs:
    node = nodes.get(_node_name(name))
    if node is None or node.op != "Const":
      raise _KeysNotConstant(name)
    value = tf.make_ndarray(node.attr["value"].tensor)
    keys.extend(v.decode() for v in np.asarray(value).reshape(-1))
  return keys


def _parse_op_features(nodes: Mapping[str, node_def_pb2.NodeDef],
                       node: node_def_pb2.NodeDef) -> dict:
  """Feature name -> synthesized tf.train.Feature for what `node` parses."""
  attr = node.attr

  def types(key):
    return [tf.dtypes.as_dtype(t) for t in attr[key].list.type] if (
        key in attr) else []

  dense_types = types("Tdense")
  sparse_types = types("sparse_types")
  dense_shapes = list(attr["dense_shapes"].list.shape) if (
      "dense_shapes" in attr) else []
  inputs = [i for i in node.input if not i.startswith("^")]
  if node.op == "ParseSingleExample":
    dense_keys = [k.decode() for k in attr["dense_keys"].list.s]
    sparse_keys = [k.decode() for k in attr["sparse_keys"].list.s]
  elif node.op == "ParseExample":
    n_sparse = attr["Nsparse"].i
    n_dense = attr["Ndense"].i
    keys = _const_strings(nodes, inputs[2:2 + n_sparse + n_dense])
    sparse_keys, dense_keys = keys[:n_sparse], keys[n_sparse:]
  else:  # ParseExampleV2: serialized, names, sparse, dense, ragged keys, ...
    sparse_keys = _const_strings(nodes, inputs[2:3])
    dense_keys = _const_strings(nodes, inputs[3:4])
    sparse_keys += _const_strings(nodes, inputs[4:5])
    sparse_types += types("ragged_value_types")
  features = {}
  for key, dtype, shape in zip(dense_keys, dense_types, dense_shapes):
    count = 1
    for dim in ([] if shape.unknown_rank else shape.dim):
      count *= dim.size if dim.size > 0 else 1
    features[key] = synthesized_feature(dtype, count)
  for key, dtype in zip(sparse_keys, sparse_types):
    features[key] = synthesized_feature(dtype, 1)
  return features


class ExampleSynthesizer:
  """Builds tf.Examples that the parse ops of a graph accept.

  For a DT_STRING tensor of serialized tf.Examples, `example_for` returns one
  serialized tf.Example holding every feature that the parse ops it feeds
  (directly or through other ops) read, with synthesized values, so a request
  runs even when features have no default. Works on the GraphDef alone,
  indexed on the first `example_for` call (most bundles have no string
  inputs, and indexing a large GraphDef costs ~0.3 s).
  """

  def __init__(self, graph_def: graph_pb2.GraphDef):
    self._graph_def = graph_def
    self._nodes = None
    self._consumers = None

  def _index(self) -> None:
    self._nodes = {node.name: node for node in self._graph_def.node}
    self._consumers = collections.defaultdict(list)
    for node in self._graph_def.node:
      for name in node.input:
        if not name.startswith("^"):
          self._consumers[_node_name(name)].append(node)

  def example_for(self, tensor_name: str) -> bytes:
    """Serialized tf.Example for `tensor_name` (b"" if no parse op reads it).

    A parse op whose feature keys are not constants (for instance moved to
    variables/) contributes no features; a warning says so.
    """
    if self._nodes is None:
      self._index()
    features = {}
    seen = set()
    queue = collections.deque(self._consumers.get(_node_name(tensor_name),
                                                  []))
    while queue:
      node = queue.popleft()
      if node.name in seen:
        continue
      seen.add(node.name)
      if node.op in _PARSE_OPS:
        try:
          features.update(_parse_op_features(self._nodes, node))
        except _KeysNotConstant as e:
          # E.g. keys moved to variables/ by --externalize_threshold_bytes=0.
          logging.warning(
              'Parse op "%s" reads its feature keys from "%s", which is not '
              "a constant; its features are left out of the synthesized "
              "tf.Example (a request without them fails if they have no "
              "default).", node.name, e)
      else:
        queue.extend(self._consumers.get(node.name, []))
    if not features:
      return b""
    return tf.train.Example(features=tf.train.Features(
        feature=features)).SerializeToString(deterministic=True)


def synthesize_examples(graph_def: graph_pb2.GraphDef,
                        signature_infos: Mapping[
                            str, signatures_lib.SignatureInfo]
                        ) -> dict[str, bytes]:
  """One serialized tf.Example per classify/regress signature.

  Args:
    graph_def: The merged graph.
    signature_infos: Signature name -> SignatureInfo (with merged tensors).

  Returns:
    Signature name -> serialized tf.Example from `ExampleSynthesizer` (b""
    when no parse op reads the input), for classify and regress signatures.
  """
  wanted = {name: info for name, info in signature_infos.items()
            if info.method in (spec_lib.CLASSIFY, spec_lib.REGRESS)}
  if not wanted:
    return {}
  synthesizer = ExampleSynthesizer(graph_def)
  return {name: synthesizer.example_for(info.tensors.get("inputs", ""))
          for name, info in wanted.items()}


def _log(name: str, info: signatures_lib.SignatureInfo,
         example: bytes = b"") -> prediction_log_pb2.PredictionLog:
  log = prediction_log_pb2.PredictionLog()
  if info.method == spec_lib.PREDICT:
    request = log.predict_log.request
    request.model_spec.signature_name = name
    for alias, tensor_spec in info.inputs.items():
      request.inputs[alias].CopyFrom(
          tf.make_tensor_proto(synthesize(tensor_spec),
                               dtype=tf.dtypes.as_dtype(tensor_spec.dtype)))
  elif info.method == spec_lib.CLASSIFY:
    request = log.classify_log.request
    request.model_spec.signature_name = name
    request.input.example_list.examples.add().ParseFromString(example)
  elif info.method == spec_lib.REGRESS:
    request = log.regress_log.request
    request.model_spec.signature_name = name
    request.input.example_list.examples.add().ParseFromString(example)
  else:
    raise errors.SpecError(f'signature "{name}": unknown method '
                           f"{info.method!r}")
  return log


def warmup_records(signature_infos: Mapping[str, signatures_lib.SignatureInfo],
                   examples: Optional[Mapping[str, bytes]] = None
                   ) -> list[bytes]:
  """Serialized PredictionLogs, one per signature, in signature order.

  Args:
    signature_infos: Signature name -> SignatureInfo.
    examples: Signature name -> serialized tf.Example for classify/regress
      requests (from `synthesize_examples`); missing ones are empty.
  """
  examples = examples or {}
  return [_log(name, info, examples.get(name, b"")).SerializeToString()
          for name, info in signature_infos.items()]


def write_warmup(export_dir: str, records: list[bytes]) -> str:
  """Writes the records as `assets.extra/tf_serving_warmup_requests`.

  Returns:
    The path written.

  Raises:
    GraphError: if the file cannot be written.
  """
  path = export_dir.rstrip("/") + "/" + WARMUP_FILE
  try:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        writer.write(record)
  except tf.errors.OpError as e:
    raise errors.GraphError(f"cannot write warmup requests {path}: "
                            f"{e.message}") from e
  return path


def record_file_size(records: list[bytes]) -> int:
  """Size of a TFRecord file holding `records` (12 + 4 bytes framing each)."""
  return sum(len(r) + 16 for r in records)

