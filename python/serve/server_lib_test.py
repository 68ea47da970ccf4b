"""Tests for server_lib: the in-process server's lifecycle, over real gRPC.

One ModelServer on the TF1 test model of python/serve/testdata per test that
needs a model; `serve_until_signal` runs on a stand-in server with real
signals sent to this process (the `serve` binary's end-to-end behaviour is in
tests/serve_e2e_test).
"""

import os
import signal
import socket
import threading
import time

from absl.testing import absltest
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.serve import metrics as metrics_lib
from python.serve import model_manager
from python.serve import server_config
from python.serve import server_lib
from python.serve import signal_waiter
from python.serve.testdata import models

_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
_BOUND_S = 30.0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _options(base: str, **overrides) -> server_config.ServerOptions:
  fields = dict(port=_free_port(), model_name='m', model_base_path=base,
                enable_grpc_healthcheck_service=True,
                drain_timeout_seconds=2.0,
                manager=model_manager.ManagerOptions(
                    file_system_poll_wait_seconds=0.2))
  fields.update(overrides)
  return server_config.ServerOptions(**fields)


class ModelServerTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = os.path.join(absltest.get_default_test_tmpdir(), 'm')
    models.write_tf1_model(os.path.join(cls.base, '2'), scale=2.0,
                           warmup=False)

  def _channel(self, port: int) -> grpc.Channel:
    channel = grpc.insecure_channel(f'127.0.0.1:{port}')
    self.addCleanup(channel.close)
    return channel

  def test_serves_once_started_and_closes_the_port_on_stop(self):
    options = _options(self.base)
    server = server_lib.ModelServer(options)
    port = server.start()
    self.addCleanup(server.stop)
    self.assertEqual(port, options.port)
    self.assertEqual(server.port, port)
    channel = self._channel(port)
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(
            model_spec={'name': 'm'}), timeout=_BOUND_S)
    self.assertEqual([(s.version, s.state)
                      for s in status.model_version_status],
                     [(2, _AVAILABLE)])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'm'
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.array([[1, 2, 3]], np.float32)))
    response = prediction_service_pb2_grpc.PredictionServiceStub(
        channel).Predict(request, timeout=_BOUND_S)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs['y']),
                                  [[2, 4, 6]])
    health = health_pb2_grpc.HealthStub(channel)
    for service in ('', 'tensorflow.serving.PredictionService', 'm'):
      self.assertEqual(
          health.Check(health_pb2.HealthCheckRequest(service=service),
                       timeout=_BOUND_S).status,
          health_pb2.HealthCheckResponse.SERVING, service)

    self.assertTrue(server.stop())
    self.assertTrue(server.stop_requested)
    self.assertTrue(server.stop())  # A second call waits for the first.
    with self.assertRaises(grpc.RpcError) as raised:
      prediction_service_pb2_grpc.PredictionServiceStub(
          self._channel(port)).Predict(request, timeout=5)
    self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

  def _predicts_recorded(self, **overrides) -> int:
    """Serves one Predict; returns the requests the metrics counted."""
    server = server_lib.ModelServer(_options(self.base, **overrides))
    port = server.start()
    self.addCleanup(server.stop)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'm'
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.array([[1, 2, 3]], np.float32)))
    prediction_service_pb2_grpc.PredictionServiceStub(
        self._channel(port)).Predict(request, timeout=_BOUND_S)
    (family,) = [f for f in server.metrics.snapshot()
                 if f.name == metrics_lib.REQUEST_COUNT]
    return sum(family.values.values())

  def test_requests_record_metrics_only_for_a_prometheus_page(self):
    config = self.create_tempfile(
        'monitoring.config',
        'prometheus_config { enable: true path: "/monitoring/prometheus/'
        'metrics" }\n').full_path
    self.assertEqual(self._predicts_recorded(monitoring_config_file=config), 1)
    self.assertEqual(self._predicts_recorded(), 0)

  def test_stop_before_start_means_the_port_never_opens(self):
    server = server_lib.ModelServer(_options(self.base))
    self.assertTrue(server.stop())
    with self.assertRaisesRegex(server_lib.StartCancelledError,
                                'before the port opened'):
      server.start()
    self.assertIsNone(server.port)

  def test_no_model_is_tf_servings_error(self):
    server = server_lib.ModelServer(_options(''))
    with self.assertRaisesRegex(
        server_config.ServerError,
        r'Both server_options\.model_base_path and '
        r'server_options\.model_config_file are empty! Pass '
        r'--model_base_path=/abs/path'):
      server.start()

  def test_a_model_that_cannot_load_fails_start(self):
    base = self.create_tempdir().full_path
    os.makedirs(os.path.join(base, '1'))
    with open(os.path.join(base, '1', 'saved_model.pb'), 'wb') as f:
      f.write(b'garbage')
    server = server_lib.ModelServer(_options(
        base, manager=model_manager.ManagerOptions(
            file_system_poll_wait_seconds=0.2, max_num_load_retries=0)))
    with self.assertRaisesRegex(server_config.ServerError,
                                r'\{name: m version: 1\}'):
      server.start()
    self.assertIsNone(server.port)

  def test_a_port_in_use_is_refused_after_loading(self):
    with socket.socket() as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen(1)
      port = taken.getsockname()[1]
      server = server_lib.ModelServer(_options(self.base, port=port))
      # grpcio raises (older releases returned 0, which has its own
      # message); either way the error names the address.
      with self.assertRaisesRegex(
          server_config.ServerError,
          rf'^Cannot listen on 127\.0\.0\.1:{port}: .*(bind|in use)'):
        server.start()
    self.assertIsNone(server.port)


class _StandInServer:
  """What serve_until_signal uses of a ModelServer, with controllable phases."""

  shutdown_timeout_s = 5.0

  def __init__(self, start_error=None, stop_blocks=False):
    self.started = threading.Event()
    self.stopped = threading.Event()
    self._start_error = start_error
    self._stop_blocks = stop_blocks
    self._release = threading.Event()

  def start(self):
    self.started.set()
    if self._start_error is not None:
      raise self._start_error
    return 1

  def stop(self):
    self.stopped.set()
    if self._stop_blocks:
      self._release.wait(_BOUND_S)
    return True

  def release(self):
    self._release.set()


class ServeUntilSignalTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.signals = signal_waiter.SignalWaiter().install()
    self.addCleanup(self.signals.uninstall)

  def _signal_after(self, event: threading.Event, signum: int,
                    count: int = 1) -> None:
    def send():
      event.wait(_BOUND_S)
      time.sleep(0.05)
      for _ in range(count):
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    self.addCleanup(thread.join, _BOUND_S)

  def test_a_signal_while_serving_stops_the_server_and_exits_zero(self):
    server = _StandInServer()
    self._signal_after(server.started, signal.SIGTERM)
    self.assertEqual(server_lib.serve_until_signal(server, self.signals), 0)
    self.assertTrue(server.stopped.is_set())
    self.assertEqual(self.signals.received, [signal.SIGTERM])

  def test_a_second_signal_during_shutdown_exits_at_once(self):
    server = _StandInServer(stop_blocks=True)
    self.addCleanup(server.release)
    self._signal_after(server.started, signal.SIGINT, count=2)
    start = time.monotonic()
    self.assertEqual(server_lib.serve_until_signal(server, self.signals),
                     server_lib.EXIT_FORCED)
    self.assertLess(time.monotonic() - start, server.shutdown_timeout_s)
    self.assertEqual(self.signals.received, [signal.SIGINT, signal.SIGINT])

  def test_a_failed_start_raises_without_a_signal(self):
    server = _StandInServer(
        start_error=server_config.ServerError('cannot load'))
    with self.assertRaisesRegex(server_config.ServerError, 'cannot load'):
      server_lib.serve_until_signal(server, self.signals)
    self.assertFalse(server.stopped.is_set())


if __name__ == '__main__':
  absltest.main()
