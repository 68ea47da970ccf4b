"""Tests for warmup: replaying assets.extra/tf_serving_warmup_requests at load.

On the TF1 test model of python/serve/testdata, whose `bump` signature
increments a counter that `count` reads, so a test sees how many warmup
requests ran.
"""

import os

from absl.testing import absltest
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from python.serve import servable as servable_lib
from python.serve import warmup
from python.serve.testdata import models


def _request(signature: str) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'm'
  request.model_spec.signature_name = signature
  return request


class RunWarmupTest(absltest.TestCase):

  def _servable(self, warmup_file: bool = False) -> servable_lib.Servable:
    path = models.write_tf1_model(
        os.path.join(self.create_tempdir().full_path, '1'),
        warmup=warmup_file)
    servable = servable_lib.load('m', 1, path, ['serve'])
    self.addCleanup(servable.close, 10)
    return servable

  def _count(self, servable) -> int:
    (count,) = servable.run({}, ['count:0'])
    return int(count)

  def _write_records(self, servable, records) -> str:
    path = os.path.join(servable.path, warmup.WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        writer.write(record)
    return path

  def test_every_record_runs_the_given_number_of_times(self):
    servable = self._servable(warmup_file=True)
    self.assertEqual(warmup.run_warmup(servable), models.WARMUP_RECORDS)
    self.assertEqual(self._count(servable), models.WARMUP_RECORDS)
    self.assertEqual(warmup.run_warmup(servable, num_request_iterations=3),
                     models.WARMUP_RECORDS)
    self.assertEqual(self._count(servable), 4 * models.WARMUP_RECORDS)

  def test_no_file_is_no_warmup(self):
    servable = self._servable()
    self.assertEqual(warmup.run_warmup(servable), 0)
    self.assertEqual(self._count(servable), 0)

  def test_a_failing_request_fails_with_its_code(self):
    servable = self._servable()
    request = _request('serving_default')
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.ones((1, 3), np.float32)))
    bad = _request('no_such_signature')
    models.write_warmup_file(servable.path, [request, bad])
    with self.assertRaises(warmup.WarmupError) as raised:
      warmup.run_warmup(servable)
    self.assertIsInstance(raised.exception, servable_lib.LoadError)
    self.assertEqual(raised.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
    self.assertRegex(str(raised.exception),
                     r'^Warmup record 1 \(predict_log\) of .*'
                     r'tf_serving_warmup_requests failed: .*no_such_signature')

  def test_unsupported_and_unparsable_records(self):
    servable = self._servable()
    session_log = prediction_log_pb2.PredictionLog()
    session_log.session_run_log.SetInParent()
    self._write_records(servable, [session_log.SerializeToString()])
    with self.assertRaises(warmup.WarmupError) as raised:
      warmup.run_warmup(servable)
    self.assertEqual(raised.exception.code, grpc.StatusCode.UNIMPLEMENTED)
    self.assertIn('Unsupported log_type for warmup: session_run_log',
                  str(raised.exception))
    self._write_records(servable, [b'\xff\xfe not a PredictionLog'])
    with self.assertRaisesRegex(warmup.WarmupError,
                                r'Failed to parse warmup record 0 from '):
      warmup.run_warmup(servable)

  def test_a_file_that_is_not_tfrecord(self):
    servable = self._servable()
    path = os.path.join(servable.path, warmup.WARMUP_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as f:
      f.write(b'plain text, no TFRecord framing at all\n' * 4)
    with self.assertRaises(warmup.WarmupError) as raised:
      warmup.run_warmup(servable)
    self.assertEqual(raised.exception.code, grpc.StatusCode.DATA_LOSS)
    self.assertIn('Please verify your warmup data is in TFRecord format',
                  str(raised.exception))

  def test_more_records_than_tf_serving_allows(self):
    servable = self._servable()
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(
            request=_request('bump'))).SerializeToString()
    self._write_records(servable, [record] * (warmup.MAX_NUM_RECORDS + 1))
    with self.assertRaises(warmup.WarmupError) as raised:
      warmup.run_warmup(servable)
    self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Number of warmup records exceeds the maximum (1000)',
                  str(raised.exception))


if __name__ == '__main__':
  absltest.main()
