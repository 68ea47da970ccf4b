"""Batching and control-call isolation on TF Serving's half_plus_two.

* Batched answers are byte-for-byte the unbatched ones (Predict, Classify,
  Regress, MultiInference, from 16 threads at once), and batches did form.
* --enable_per_model_batching_parameters reads batching_params.pbtxt from
  the version directory; a bad file fails the load with INVALID_ARGUMENT.
* Nine HandleReloadConfigRequest calls waiting for a model that has no
  version yet do not starve Predict, GetModelStatus or health checks on a
  server with 4 serving threads; a call past the control slots is refused
  at once with RESOURCE_EXHAUSTED.
"""

import concurrent.futures
import os
import socket
import threading
import time

from absl.testing import absltest
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from python.serve import batching
from python.serve import inference
from python.serve import model_manager
from python.serve import server_config
from python.serve import server_lib
from tests.testdata import tf_serving_models as models

_MODEL = 'half_plus_two'


def _predict(values, signature='serving_default'):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = _MODEL
  request.model_spec.signature_name = signature
  request.inputs['x'].CopyFrom(
      tf.make_tensor_proto(np.array(values, np.float32)))
  return request


def _examples(request, signature, xs):
  request.model_spec.name = _MODEL
  request.model_spec.signature_name = signature
  for x in xs:
    example = request.input.example_list.examples.add()
    example.features.feature['x'].float_list.value.append(x)
  return request


def _requests():
  """(function, request) pairs of every kind, with different batch sizes."""
  calls = []
  for i in range(12):
    xs = [float(i + k) for k in range(1 + i % 3)]
    calls.append((inference.predict, _predict([[x] for x in xs])))
    calls.append((inference.predict, _predict(xs[:1])))
    calls.append((inference.classify, _examples(
        classification_pb2.ClassificationRequest(), 'classify_x_to_y', xs)))
    calls.append((inference.regress, _examples(
        regression_pb2.RegressionRequest(), 'regress_x_to_y2', xs)))
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (('regress_x_to_y', inference.REGRESS_METHOD),
                              ('classify_x_to_y', inference.CLASSIFY_METHOD)):
      task = multi.tasks.add()
      task.model_spec.name = _MODEL
      task.model_spec.signature_name = signature
      task.method_name = method
    for x in xs:
      example = multi.input.example_list.examples.add()
      example.features.feature['x'].float_list.value.append(x)
    calls.append((inference.multi_inference, multi))
  return calls


def _manager(**options) -> model_manager.ModelManager:
  manager = model_manager.ModelManager(model_manager.ManagerOptions(
      file_system_poll_wait_seconds=0.2, **options))
  return manager


class BatchedAnswersTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = os.path.join(absltest.get_default_test_tmpdir(), 'hp2')
    models.write_half_plus_two(cls.base)

  def _serve(self, manager):
    manager.start()
    self.addCleanup(manager.stop, 10)
    config = model_manager.ModelConfigList()
    config.config.add(name=_MODEL, base_path=self.base)
    manager.reload_config(config, 60)

  def test_batched_answers_are_the_unbatched_ones(self):
    plain = _manager()
    self._serve(plain)
    params = batching.parse_batching_parameters(
        'max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } '
        'num_batch_threads { value: 2 } max_enqueued_batches { value: 100 }',
        'test')
    batched = _manager(batching_parameters=params)
    self._serve(batched)
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = _MODEL
    calls = _requests()
    with plain.servable(spec) as servable:
      self.assertIsNone(servable.batching)
      want = [run(servable, request).SerializeToString()
              for run, request in calls]
    with batched.servable(spec) as servable:
      session = servable.batching
      self.assertIsNotNone(session)
      # One queue per signature's (inputs, outputs), made at load.
      self.assertGreaterEqual(session.num_queues, 4)
      with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(
            lambda call: call[0](servable, call[1]).SerializeToString(),
            calls * 4))
    self.assertEqual(got, want * 4)
    # Batches formed: fewer runs than calls (warmup-free model, 2 ms window).
    self.assertEqual(session.tasks_run, len(calls) * 4)
    self.assertLess(session.batches_run, session.tasks_run)
    self.assertGreater(session.largest_batch, 3)

  def test_batching_errors_as_tf_serving(self):
    batched = _manager(
        batching_parameters=batching.default_batching_parameters())
    self._serve(batched)
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = _MODEL
    request = predict_pb2.PredictRequest()
    request.model_spec.name = _MODEL
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.float32(2.0)))
    with batched.servable(spec) as servable:
      with self.assertRaisesRegex(
          Exception, 'Batching Run\\(\\) input tensors must have at least '
          'one dimension'):
        inference.predict(servable, request)

  def test_per_model_parameters(self):
    base = self.create_tempdir().full_path
    version_dir = models.write_half_plus_two(base, version_dir='1')
    with open(os.path.join(version_dir, batching.PER_MODEL_FILENAME), 'w',
              encoding='utf-8') as f:
      f.write('max_batch_size { value: 10 } allowed_batch_sizes: 4 '
              'allowed_batch_sizes: 10')
    manager = _manager(
        batching_parameters=batching.parse_batching_parameters(
            'max_batch_size { value: 4 }', 'test'),
        enable_per_model_batching_parameters=True, max_num_load_retries=0)
    manager.start()
    self.addCleanup(manager.stop, 10)
    config = model_manager.ModelConfigList()
    config.config.add(name=_MODEL, base_path=base)
    manager.reload_config(config, 60)
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = _MODEL
    with manager.servable(spec) as servable:
      self.assertEqual(servable.batching.options.max_batch_size, 10)
      self.assertEqual(servable.batching.options.allowed_batch_sizes, (4, 10))
      response = inference.predict(servable, _predict([[1.0], [3.0]]))
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs['y']), [[2.5], [3.5]])
    # A version whose file TF Serving would refuse fails its load.
    bad_dir = models.write_half_plus_two(base, version_dir='2')
    with open(os.path.join(bad_dir, batching.PER_MODEL_FILENAME), 'w',
              encoding='utf-8') as f:
      f.write('max_batch_size { value: 10 } allowed_batch_sizes: 4')
    deadline = time.monotonic() + 60
    states = []
    while time.monotonic() < deadline:
      states = manager.model_status(_MODEL, None)
      if states[0][0] == 2 and states[0][1] == model_manager.State.END:
        break
      time.sleep(0.1)
    version, state, error = states[0]
    self.assertEqual((version, state), (2, model_manager.State.END))
    self.assertEqual(error.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Last entry in allowed_batch_sizes must match '
                  'max_batch_size; last entry was 4; expected 10',
                  error.message)
    self.assertIn(batching.PER_MODEL_FILENAME, error.message)


class ControlCallIsolationTest(absltest.TestCase):

  def test_waiting_reloads_do_not_starve_serving(self):
    root = self.create_tempdir().full_path
    served = os.path.join(root, _MODEL)
    models.write_half_plus_two(served, version_dir='1')
    empty = os.path.join(root, 'empty')
    os.makedirs(empty)
    config_path = os.path.join(root, 'models.config')
    models.write_model_config(config_path, {_MODEL: served})
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      free_port = s.getsockname()[1]
    server = server_lib.ModelServer(server_config.ServerOptions(
        port=free_port, model_config_file=config_path, grpc_max_threads=4,
        enable_grpc_healthcheck_service=True,
        manager=model_manager.ManagerOptions(
            file_system_poll_wait_seconds=0.2,
            max_concurrent_control_calls=9)))
    port = server.start()
    self.addCleanup(server.stop)
    address = f'127.0.0.1:{port}'
    reload_request = model_management_pb2.ReloadConfigRequest()
    for name, path in ((_MODEL, served), ('empty', empty)):
      reload_request.config.model_config_list.config.add(
          name=name, base_path=path, model_platform='tensorflow')
    channel = grpc.insecure_channel(address)
    self.addCleanup(channel.close)
    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    reloads = [model_stub.HandleReloadConfigRequest.future(
        reload_request, timeout=60) for _ in range(9)]
    time.sleep(1.0)  # Every reload is now waiting for 'empty'.
    self.assertEqual([r.result() for r in reloads if r.done()], [])
    # A tenth finds every control slot taken and is refused at once.
    start = time.monotonic()
    with self.assertRaises(grpc.RpcError) as cm:
      model_stub.HandleReloadConfigRequest(reload_request, timeout=10)
    self.assertLess(time.monotonic() - start, 5)
    self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
    self.assertIn('already waiting', cm.exception.details())
    # Serving, status and health keep answering while the nine wait.
    predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    health_stub = health_pb2_grpc.HealthStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = _MODEL
    for _ in range(20):
      response = predict_stub.Predict(_predict([2.0]), timeout=5)
      self.assertEqual(list(response.outputs['y'].float_val), [3.0])
      self.assertEqual(
          health_stub.Check(health_pb2.HealthCheckRequest(service=_MODEL),
                            timeout=5).status,
          health_pb2.HealthCheckResponse.SERVING)
      model_stub.GetModelStatus(status_request, timeout=5)
    self.assertFalse(any(r.done() for r in reloads))
    # A version appears (written aside and renamed in, as a publish does,
    # so the 0.2 s poll never sees a half-written one): every waiting
    # reload succeeds.
    staging = os.path.join(root, 'staging')
    models.write_half_plus_two(staging, version_dir='1')
    os.rename(os.path.join(staging, '1'), os.path.join(empty, '1'))
    for future in reloads:
      self.assertEqual(future.result(timeout=60).status.error_code, 0)


if __name__ == '__main__':
  absltest.main()
