"""TF Serving warmup requests for a merged bundle.

`assets.extra/tf_serving_warmup_requests` is a TFRecord file of
`tensorflow.serving.PredictionLog` protos that TF Serving replays when it
loads a version, so the first real request does not pay for lazy
initialization. One request per signature: batch 1, inputs synthesized from
the signature's dtype and shape (zeros, empty strings); classify and regress
signatures get one empty tf.Example.
"""

from typing import Mapping

import numpy as np
import tensorflow as tf
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


def _log(name: str, info: signatures_lib.SignatureInfo
         ) -> prediction_log_pb2.PredictionLog:
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
    request.input.example_list.examples.add()
  elif info.method == spec_lib.REGRESS:
    request = log.regress_log.request
    request.model_spec.signature_name = name
    request.input.example_list.examples.add()
  else:
    raise errors.SpecError(f'signature "{name}": unknown method '
                           f"{info.method!r}")
  return log


def warmup_records(signature_infos: Mapping[str, signatures_lib.SignatureInfo]
                   ) -> list[bytes]:
  """Serialized PredictionLogs, one per signature, in signature order."""
  return [_log(name, info).SerializeToString()
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

