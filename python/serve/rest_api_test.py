"""Tests of rest_api's routing and status map over real HTTP (fake backend)."""

import json
import socket
import urllib.error
import urllib.request

from absl.testing import absltest
from absl.testing import parameterized
import grpc
from tensorflow_serving.apis import get_model_status_pb2

from python.serve import metrics
from python.serve import rest_api
from python.serve import serving_error


class _Backend:
  """Records what the handler asks for; fails with a chosen code."""

  def __init__(self):
    self.code = None
    self.calls = []

  def _maybe_fail(self):
    if self.code is not None:
      raise serving_error.ServingError(self.code, f'failed with {self.code}')

  def run(self, api, request, timeout_s, entrypoint, fill=None):
    self.calls.append((api, request.model_spec, timeout_s, entrypoint))
    self._maybe_fail()
    raise serving_error.unimplemented('the fake backend does not run models')

  def metadata(self, request):
    self.calls.append(('metadata', request.model_spec))
    self._maybe_fail()
    raise serving_error.not_found('no metadata here')

  def status(self, request):
    self.calls.append(('status', request.model_spec))
    self._maybe_fail()
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add().version = 7
    return response


def _http(url, body=None, method=None):
  request = urllib.request.Request(url, data=body, method=method)
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, dict(response.headers), response.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), e.read().decode()


class RestServerTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.backend = _Backend()
    self.unready = []
    self.metrics = metrics.Metrics()
    self.server = rest_api.RestServer(
        rest_api.RestApiHandler(self.backend, timeout_s=2.5),
        host='127.0.0.1', port=0, num_threads=2, enable_cors=False,
        metrics=self.metrics,
        prometheus=metrics.PrometheusOptions(True, '/custom/metrics'),
        unready_models=lambda: list(self.unready), drain_timeout_s=1.0)
    port = self.server.start()
    self.addCleanup(self._stop)
    self.base = f'http://127.0.0.1:{port}'

  def _stop(self):
    self.server.begin_stop()
    self.assertTrue(self.server.wait_stopped(10))

  @parameterized.parameters(
      (grpc.StatusCode.CANCELLED, 499),
      (grpc.StatusCode.UNKNOWN, 500),
      (grpc.StatusCode.INVALID_ARGUMENT, 400),
      (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
      (grpc.StatusCode.NOT_FOUND, 404),
      (grpc.StatusCode.ALREADY_EXISTS, 409),
      (grpc.StatusCode.PERMISSION_DENIED, 403),
      (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
      (grpc.StatusCode.FAILED_PRECONDITION, 400),
      (grpc.StatusCode.ABORTED, 409),
      (grpc.StatusCode.OUT_OF_RANGE, 400),
      (grpc.StatusCode.UNIMPLEMENTED, 501),
      (grpc.StatusCode.INTERNAL, 500),
      (grpc.StatusCode.UNAVAILABLE, 503),
      (grpc.StatusCode.DATA_LOSS, 500),
      (grpc.StatusCode.UNAUTHENTICATED, 401),
  )
  def test_grpc_code_maps_to_tf_serving_http_status(self, code, http_status):
    self.backend.code = code
    status, headers, text = _http(self.base + '/v1/models/m/versions/3')
    self.assertEqual(status, http_status)
    self.assertEqual(headers['Content-Type'].split(';')[0],
                     'application/json')
    self.assertEqual(json.loads(text), {'error': f'failed with {code}'})

  def test_routes_fill_the_model_spec(self):
    _http(self.base + '/v1/models/m%2Fx/labels/can%20ary:PREDICT', b'{}')
    api, spec, timeout_s, entrypoint = self.backend.calls[-1]
    self.assertEqual((api, spec.name, spec.version_label, timeout_s,
                      entrypoint), ('Predict', 'm/x', 'can ary', 2.5, 'REST'))
    _http(self.base + '/V1/Models/m/Versions/12:classify', b'{}')
    api, spec, _, _ = self.backend.calls[-1]
    self.assertEqual((api, spec.name, spec.version.value), ('Classify', 'm',
                                                            12))
    _http(self.base + '/v1/models/m/versions/5/metadata')
    self.assertEqual(self.backend.calls[-1][0], 'metadata')
    self.assertEqual(self.backend.calls[-1][1].version.value, 5)
    status, _, text = _http(self.base + '/v1/models/m')
    self.assertEqual(status, 200)
    self.assertEqual(json.loads(text)['model_version_status'][0]['version'],
                     '7')

  def test_prometheus_path_readiness_and_unknown_paths(self):
    status, headers, text = _http(self.base + '/custom/metrics')
    self.assertEqual(status, 200)
    self.assertTrue(headers['Content-Type'].startswith('text/plain'))
    self.assertIn('# TYPE :tensorflow:serving:request_count counter', text)
    self.assertEqual(_http(self.base + metrics.DEFAULT_PATH)[0], 404)
    self.assertEqual(_http(self.base + '/readyz')[0], 200)
    self.unready.append('b')
    status, _, text = _http(self.base + '/readyz')
    self.assertEqual(status, 503)
    self.assertIn("['b']", json.loads(text)['reason'])
    self.assertNotIn('Access-Control-Allow-Origin',
                     _http(self.base + '/v1/models/m')[1])

  def test_port_in_use_is_a_clear_error(self):
    with socket.socket() as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen()
      port = taken.getsockname()[1]
      server = rest_api.RestServer(
          rest_api.RestApiHandler(self.backend, None), host='127.0.0.1',
          port=port, num_threads=1, enable_cors=False)
      with self.assertRaisesRegex(rest_api.RestServerError,
                                  f'Cannot listen on 127.0.0.1:{port} for '
                                  'the REST API.*--rest_api_port'):
        server.start()


if __name__ == '__main__':
  absltest.main()
