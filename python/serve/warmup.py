"""Replays assets.extra/tf_serving_warmup_requests when a version loads.

Mirrors TF Serving's saved_model_warmup_util.cc: the file is optional, each
TFRecord holds a `PredictionLog` whose request (predict, classify, regress or
multi_inference) runs against the freshly loaded version before it is made
available; at most 1000 records; any failure fails the load.
"""

import os

from absl import logging
import grpc
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from python.serve import inference
from python.serve import servable as servable_lib
from python.serve import serving_error

WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
MAX_NUM_RECORDS = 1000


class WarmupError(servable_lib.LoadError):
  """The warmup file is unreadable or one of its requests failed."""


def _run_record(servable: servable_lib.Servable,
                log: prediction_log_pb2.PredictionLog) -> None:
  kind = log.WhichOneof('log_type')
  if kind == 'predict_log':
    inference.predict(servable, log.predict_log.request)
  elif kind == 'classify_log':
    inference.classify(servable, log.classify_log.request)
  elif kind == 'regress_log':
    inference.regress(servable, log.regress_log.request)
  elif kind == 'multi_inference_log':
    inference.multi_inference(servable, log.multi_inference_log.request)
  else:
    raise serving_error.unimplemented(
        f'Unsupported log_type for warmup: {kind}. Supported: predict_log, '
        'classify_log, regress_log, multi_inference_log.')


def run_warmup(servable: servable_lib.Servable,
               num_request_iterations: int = 1) -> int:
  """Replays the warmup requests of a loaded version.

  Args:
    servable: The freshly loaded version (not yet available to clients).
    num_request_iterations: How many times each record runs.

  Returns:
    The number of records replayed (0 when there is no warmup file).

  Raises:
    WarmupError: unparsable record, too many records, or a failing request.
  """
  path = os.path.join(servable.path, WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    logging.info('No warmup data file found at %s', path)
    return 0
  logging.info('Starting to read warmup data for model at %s', path)
  count = 0
  try:
    for record in tf.compat.v1.io.tf_record_iterator(path):
      log = prediction_log_pb2.PredictionLog()
      try:
        log.ParseFromString(record)
      except Exception as e:  # pylint: disable=broad-except
        raise WarmupError(
            f'Failed to parse warmup record {count} from {path}: {e}',
            grpc.StatusCode.INVALID_ARGUMENT) from e
      for _ in range(num_request_iterations):
        try:
          _run_record(servable, log)
        except serving_error.ServingError as e:
          raise WarmupError(
              f'Warmup record {count} ({log.WhichOneof("log_type")}) of '
              f'{path} failed: {e}', e.code) from e
      count += 1
      if count > MAX_NUM_RECORDS:
        raise WarmupError(
            f'Number of warmup records exceeds the maximum '
            f'({MAX_NUM_RECORDS}) at {path}',
            grpc.StatusCode.INVALID_ARGUMENT)
  except tf.errors.DataLossError as e:
    raise WarmupError(
        f'{e.message}. Please verify your warmup data is in TFRecord format: '
        f'{path}', grpc.StatusCode.DATA_LOSS) from e
  logging.info('Finished reading warmup data for model at %s. Number of '
               'warmup records read: %d.', path, count)
  return count
