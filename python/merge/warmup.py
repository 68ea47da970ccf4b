"""TF Serving warmup requests for a merged bundle.

`assets.extra/tf_serving_warmup_requests` is a TFRecord file of
`tensorflow.serving.PredictionLog` protos that TF Serving replays when it
loads a version, so the first real request does not pay for lazy
initialization. One request per signature, its inputs synthesized by the
policy of `python/common/synthesis.py` that the merge's check and the C++
verifier's smoke run share: batch 1, small positive floats, integer zeros;
classify and regress signatures get one tf.Example holding every feature that
the graph's parse ops read from their input (TF Serving refuses to load a
version whose warmup request fails, and an empty tf.Example fails on any
required feature).
"""

from typing import Mapping, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow_serving.apis import prediction_log_pb2

from python.common import synthesis
from python.merge import errors
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def synthesize(tensor_spec: signatures_lib.TensorSpec,
               batch_size: int = 1,
               synthesizer: Optional[synthesis.GraphSynthesizer] = None,
               tensor_name: str = "") -> np.ndarray:
  """A value of the spec's dtype and shape, per `python/common/synthesis`.

  Unknown dimensions become `batch_size` (first) or 1; an unknown rank takes
  the first of the policy's candidate shapes (the shape the consumers pin
  down, else a scalar). Floats are small positive numbers, integers zeros;
  strings are the tf.Example (or SequenceExample) that the graph's parse ops
  read from `tensor_name`, or b"" without a synthesizer.

  Args:
    tensor_spec: dtype name and shape.
    batch_size: Size given to unknown dimensions.
    synthesizer: The graph's synthesizer; None synthesizes from the spec
      alone.
    tensor_name: The tensor fed, for the synthesizer.
  """
  dtype = tf.dtypes.as_dtype(tensor_spec.dtype)
  if synthesizer is None:
    shape = (synthesis.unknown_rank_candidates(None, batch_size)[0]
             if tensor_spec.shape is None else
             synthesis.known_shape(tensor_spec.shape, batch_size))
    if dtype == tf.string:
      return np.full(shape, b"", dtype=object)
    return synthesis.dense_values(dtype, shape)
  shape = synthesizer.candidate_shapes(tensor_name, tensor_spec.shape,
                                       batch_size)[0]
  return synthesizer.input_value(tensor_name, dtype, shape)


synthesized_feature = synthesis.synthesized_feature

# The synthesizer of tf.Examples for a graph's parse ops (kept under its
# earlier name for python/merge/bundle_check.py).
ExampleSynthesizer = synthesis.GraphSynthesizer


def synthesize_examples(graph_def: graph_pb2.GraphDef,
                        signature_infos: Mapping[
                            str, signatures_lib.SignatureInfo]
                        ) -> dict[str, bytes]:
  """One serialized tf.Example per classify/regress signature.

  Args:
    graph_def: The merged graph.
    signature_infos: Signature name -> SignatureInfo (with merged tensors).

  Returns:
    Signature name -> serialized tf.Example from `synthesis.GraphSynthesizer`
    (b"" when no parse op reads the input), for classify and regress
    signatures.
  """
  wanted = {name: info.tensors.get("inputs", "")
            for name, info in signature_infos.items()
            if info.method in (spec_lib.CLASSIFY, spec_lib.REGRESS)}
  if not wanted:
    return {}
  return synthesis.synthesize_examples(graph_def, wanted)


def _takes_non_string_examples(info: signatures_lib.SignatureInfo) -> bool:
  """A classify/regress signature whose input is not serialized Examples.

  TF Serving's Classify/Regress APIs cannot call it, its Predict API can: the
  policy sends it a Predict request (as the C++ verifier's smoke run does).
  """
  spec = info.inputs.get("inputs")
  return (info.method in (spec_lib.CLASSIFY, spec_lib.REGRESS) and
          len(info.inputs) == 1 and spec is not None and
          tf.dtypes.as_dtype(spec.dtype) != tf.string)


def _log(name: str, info: signatures_lib.SignatureInfo, example: bytes,
         synthesizer: Optional[synthesis.GraphSynthesizer]
         ) -> prediction_log_pb2.PredictionLog:
  log = prediction_log_pb2.PredictionLog()
  if info.method == spec_lib.PREDICT or _takes_non_string_examples(info):
    request = log.predict_log.request
    request.model_spec.signature_name = name
    for alias, tensor_spec in info.inputs.items():
      value = synthesize(tensor_spec, synthesizer=synthesizer,
                         tensor_name=info.tensors.get(alias, ""))
      request.inputs[alias].CopyFrom(
          tf.make_tensor_proto(value,
                               dtype=tf.dtypes.as_dtype(tensor_spec.dtype),
                               shape=value.shape))
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
                   examples: Optional[Mapping[str, bytes]] = None,
                   graph_def: Optional[graph_pb2.GraphDef] = None
                   ) -> list[bytes]:
  """Serialized PredictionLogs, one per signature, in signature order.

  Inputs follow `python/common/synthesis`'s policy, as the C++ verifier's
  smoke run synthesizes them.

  Args:
    signature_infos: Signature name -> SignatureInfo.
    examples: Signature name -> serialized tf.Example for classify/regress
      requests (from `synthesize_examples`); missing ones are synthesized
      from `graph_def`, or empty without it.
    graph_def: The merged graph. With it, predict inputs of unknown rank take
      the shape their consumers pin down and string inputs carry the
      tf.Example their parse ops read; without it they are synthesized from
      the TensorSpec alone (strings empty).
  """
  examples = dict(examples or {})
  synthesizer = (None if graph_def is None else
                 synthesis.GraphSynthesizer(graph_def))
  records = []
  for name, info in signature_infos.items():
    example = examples.get(name)
    if example is None:
      example = (b"" if synthesizer is None else
                 synthesizer.example_for(info.tensors.get("inputs", "")))
    records.append(_log(name, info, example, synthesizer).SerializeToString())
  return records


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

