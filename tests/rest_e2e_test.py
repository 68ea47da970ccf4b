"""End-to-end tests of the HTTP/REST API, Prometheus page and readiness.

A real server process (`python.serve.launcher`, the project's server) with
`--rest_api_port`, queried with a real HTTP client (urllib, and curl in one
test): every route (case-insensitive, versions/N, labels/L, status,
metadata), both predict formats, b64 in and out, NaN/Infinity, classify and
regress with a context, error statuses from real TensorFlow failures (400,
404, 429, 499, 500, 501, 504), CORS headers, the run timeout, Prometheus
counts per signature for gRPC and REST requests (parsed with
prometheus_client's parser), the REST cases of TF Serving's
tensorflow_model_server_test.py, and the /readyz and per-model gRPC health
extensions while a configured model has no version.

  bazel test //tests:rest_e2e_test
"""

import base64
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Dict, Optional, Tuple

from absl.testing import absltest
from absl.testing import parameterized
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from google.protobuf import json_format
import numpy as np
from prometheus_client import parser
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.serve import launcher
from tests.testdata import tf_serving_models

_v1 = tf.compat.v1
_TIMEOUT_MS = 1500
_MONITORING_PATH = '/monitoring/prometheus/metrics'

# tensorflow_model_server's main() returns -1 when it cannot start.
_EXIT_START_FAILED = 255


def _tmpdir(name: str) -> str:
  path = os.path.join(absltest.get_default_test_tmpdir(), name)
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  return path


def _signature(inputs, outputs):
  info = _v1.saved_model.utils.build_tensor_info
  return _v1.saved_model.signature_def_utils.build_signature_def(
      inputs={k: info(v) for k, v in inputs.items()},
      outputs={k: info(v) for k, v in outputs.items()},
      method_name=tf.saved_model.PREDICT_METHOD_NAME)


def write_special_model(base_path: str) -> None:
  """A TF1 bundle whose signatures exercise the JSON and error paths.

  * `echo`: `img_bytes` (string) and `x` (float) -> `out_bytes` and `label`
    (the strings, as bytes and as text) and `doubled` (2x).
  * `single`: `x` float -> `y` = x (one output).
  * `block`: dequeues from a queue nobody fills (only a timeout ends it).
  * `cancel`: enqueues into a closed queue (CANCELLED).
  * `oom`: fills a float tensor of `n` elements (RESOURCE_EXHAUSTED).
  * `complex`: a complex64 input, which JSON cannot carry (UNIMPLEMENTED).
  * `fail`: an Assert on `x > 0` (INVALID_ARGUMENT from the runtime).
  """
  graph = tf.Graph()
  with graph.as_default():
    img = _v1.placeholder(tf.string, [None], name='img_bytes')
    x = _v1.placeholder(tf.float32, [None], name='x')
    signatures = {
        'echo': _signature({'img_bytes': img, 'x': x},
                           {'out_bytes': tf.identity(img),
                            'label': tf.identity(img),
                            'doubled': x * 2.0}),
        'single': _signature({'x': x}, {'y': tf.identity(x)}),
    }
    empty = _v1.FIFOQueue(1, tf.float32, shapes=[[]], name='never_filled')
    signatures['block'] = _signature({'x': x}, {'y': x + empty.dequeue()})
    closed = _v1.FIFOQueue(1, tf.float32, shapes=[[]], name='closed')
    with tf.control_dependencies([closed.close()]):
      enqueue = closed.enqueue([1.0])
    with tf.control_dependencies([enqueue]):
      signatures['cancel'] = _signature({'x': x}, {'y': tf.identity(x)})
    n = _v1.placeholder(tf.int64, [], name='n')
    signatures['oom'] = _signature(
        {'n': n}, {'y': tf.reduce_sum(tf.fill(tf.reshape(n, [1]), 1.0))})
    z = _v1.placeholder(tf.complex64, [None], name='z')
    signatures['complex'] = _signature({'z': z}, {'y': tf.math.real(z)})
    check = tf.debugging.Assert(tf.reduce_all(x > 0), [x])
    with tf.control_dependencies([check]):
      signatures['fail'] = _signature({'x': x}, {'y': tf.identity(x)})
    with _v1.Session(graph=graph) as sess:
      builder = _v1.saved_model.Builder(os.path.join(base_path, '1'))
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.SERVING], signature_def_map=signatures)
      builder.save()


def _http(url: str, body=None, method: Optional[str] = None
         ) -> Tuple[int, Dict[str, str], str]:
  """One HTTP request; returns (status, headers, body text)."""
  data = None
  if body is not None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, method=method)
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return (response.status, dict(response.headers),
              response.read().decode())
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), e.read().decode()


def _families(page: str):
  return list(parser.text_string_to_metric_families(page))


def _sample(families, name: str, **labels) -> float:
  for family in families:
    for sample in family.samples:
      if sample.name == name and all(
          sample.labels.get(k) == v for k, v in labels.items()):
        return sample.value
  return 0.0


class RestApiTest(absltest.TestCase):
  """One server: TF Serving's half_plus_two, two labelled versions, `special`."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('rest')
    tf_serving_models.write_half_plus_two(os.path.join(root, 'default'))
    versioned = os.path.join(root, 'versioned')
    tf_serving_models.write_half_plus_two(versioned, version_dir='00000123')
    tf_serving_models.write_half_plus_two(versioned, b=3.0,
                                          version_dir='00000124')
    write_special_model(os.path.join(root, 'special'))
    config = os.path.join(root, 'models.config')
    with open(config, 'w', encoding='utf-8') as f:
      f.write(f'''model_config_list {{
  config {{ name: "default" base_path: "{root}/default"
           model_platform: "tensorflow" }}
  config {{ name: "versioned" base_path: "{versioned}"
           model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 123 }}
           version_labels {{ key: "canary" value: 124 }} }}
  config {{ name: "special" base_path: "{root}/special"
           model_platform: "tensorflow" }}
}}
''')
    monitoring = os.path.join(root, 'monitoring.config')
    with open(monitoring, 'w', encoding='utf-8') as f:
      f.write('prometheus_config { enable: true }\n')
    cls.rest_port = launcher.free_port()
    cls.server = launcher.ServerProcess(
        model_config_file=config, use_real_server=False,
        extra_flags=[f'--rest_api_port={cls.rest_port}',
                     f'--rest_api_timeout_in_ms={_TIMEOUT_MS}',
                     '--rest_api_enable_cors_support',
                     f'--monitoring_config_file={monitoring}'])
    cls.server.start()
    cls.base = f'http://127.0.0.1:{cls.rest_port}'

  @classmethod
  def tearDownClass(cls):
    cls.server.stop()
    super().tearDownClass()

  def call(self, path: str, body=None, method=None):
    return _http(self.base + path, body, method)

  def assertJson(self, path, body, expected, status=200):
    code, headers, text = self.call(path, body)
    self.assertEqual(code, status, text)
    self.assertEqual(headers['Content-Type'].split(';')[0],
                     'application/json')
    self.assertEqual(json.loads(text), expected)

  def assertError(self, path, body, status, message, method=None):
    code, _, text = self.call(path, body, method)
    self.assertEqual(code, status, text)
    error = json.loads(text)['error']
    self.assertIn(message, error)
    return error

  # --- predict -------------------------------------------------------------

  def test_predict_row_and_columnar_single_output_without_name(self):
    body = {'signature_name': 'single', 'instances': [1.0, 2.5]}
    self.assertJson('/v1/models/special:predict', body,
                    {'predictions': [1.0, 2.5]})
    body = {'signature_name': 'single', 'inputs': [1.0, 2.5]}
    self.assertJson('/v1/models/special:predict', body,
                    {'outputs': [1.0, 2.5]})

  def test_predict_nan_and_infinity_round_trip(self):
    code, _, text = self.call(
        '/v1/models/special:predict',
        b'{"signature_name": "single", "inputs": [NaN, Infinity, -1.5]}')
    self.assertEqual(code, 200, text)
    self.assertIn('[NaN, Infinity, -1.5]', text)

  def test_predict_named_inputs_b64_in_and_out(self):
    raw = b'\x00\x01\xfe\xff'
    encoded = base64.b64encode(raw).decode()
    body = {'signature_name': 'echo', 'instances': [
        {'img_bytes': {'b64': encoded}, 'x': 1.5},
        {'img_bytes': {'b64': base64.b64encode(b'ab').decode()}, 'x': 3.0}]}
    code, _, text = self.call('/v1/models/special:predict', body)
    self.assertEqual(code, 200, text)
    predictions = json.loads(text)['predictions']
    self.assertEqual(predictions[0]['out_bytes'], {'b64': encoded})
    self.assertEqual(predictions[1], {'out_bytes': {'b64': 'YWI='},
                                      'label': 'ab', 'doubled': 6.0})
    body = {'signature_name': 'echo',
            'inputs': {'img_bytes': [{'b64': encoded}], 'x': [2.0]}}
    self.assertJson('/v1/models/special:predict', body,
                    {'outputs': {'out_bytes': [{'b64': encoded}],
                                 'label': [raw.decode('utf-8', 'replace')],
                                 'doubled': [4.0]}})

  # --- routes --------------------------------------------------------------

  def test_versions_labels_and_case_insensitive_routes(self):
    body = {'signature_name': 'regress_x_to_y', 'examples': [{'x': 2.0}]}
    for path, value in (('/v1/models/versioned:regress', 4.0),
                        ('/v1/models/versioned/versions/123:regress', 3.0),
                        ('/V1/MODELS/versioned/VERSIONS/124:REGRESS', 4.0),
                        ('/v1/models/versioned/labels/stable:regress', 3.0),
                        ('/v1/Models/versioned/Labels/canary:Regress', 4.0)):
      self.assertJson(path, body, {'results': [value]})
    self.assertJson('/v1/models/versioned/labels/stable:predict',
                    {'instances': [[2.0]]}, {'predictions': [[3.0]]})

  def test_status_routes(self):
    code, _, text = self.call('/v1/models/versioned')
    self.assertEqual(code, 200, text)
    versions = [s['version'] for s in
                json.loads(text)['model_version_status']]
    self.assertEqual(sorted(versions), ['123', '124'])
    code, _, text = self.call('/v1/models/versioned/versions/123')
    self.assertEqual(code, 200, text)
    self.assertEqual(json.loads(text)['model_version_status'][0]['state'],
                     'AVAILABLE')
    self.assertError('/v1/models/versioned/versions/7', None, 404,
                     'Could not find version 7 of model versioned')
    self.assertError('/v1/models', None, 400,
                     'Missing model name in request.')

  def test_metadata_routes(self):
    for path, version in (('/v1/models/versioned/metadata', '124'),
                          ('/v1/models/versioned/versions/123/metadata',
                           '123'),
                          ('/v1/models/versioned/labels/stable/METADATA',
                           '123')):
      code, _, text = self.call(path)
      self.assertEqual(code, 200, text)
      metadata = json.loads(text)
      self.assertEqual(metadata['model_spec']['version'], version)
      self.assertEqual(
          sorted(metadata['metadata']['signature_def']['signature_def']),
          sorted(tf_serving_models.HALF_PLUS_TWO_SIGNATURES))

  def test_malformed_and_unknown_paths(self):
    self.assertError('/v1/models/default:explain', b'{}', 400,
                     'Malformed request: POST /v1/models/default:explain')
    self.assertError('/v1/models/default:predict', None, 400,
                     'Malformed request: GET /v1/models/default:predict')
    self.assertError('/v1/models/default', b'{}', 400,
                     'Malformed request: PUT /v1/models/default',
                     method='PUT')
    code, _, _ = self.call('/v2/models/default')
    self.assertEqual(code, 404)

  # --- classify / regress --------------------------------------------------

  def test_classify_and_regress_with_context(self):
    self.assertJson('/v1/models/default:classify',
                    {'signature_name': 'classify_x_to_y',
                     'context': {'x': 2.0}, 'examples': [{}, {'x': 4.0}]},
                    {'results': [[['', 3.0]], [['', 4.0]]]})
    # Features of the example win over the context's.
    self.assertJson('/v1/models/default:regress',
                    {'signature_name': 'regress_x_to_y2',
                     'context': {'x': 1.0, 'x2': 7.0},
                     'examples': [{'x': 4.0}, {}]},
                    {'results': [5.0, 3.5]})

  # --- errors --------------------------------------------------------------

  def test_error_statuses_from_real_failures(self):
    path = '/v1/models/special:predict'
    self.assertError('/v1/models/nope:predict', {'instances': [1.0]}, 404,
                     'Servable not found for request: Latest(nope)')
    self.assertError(path, b'{"instances": [1.0', 400, 'JSON Parse error')
    self.assertError(path, {'signature_name': 'nope', 'instances': [1.0]},
                     400, 'Serving signature name: "nope" not found')
    self.assertError(path, {'signature_name': 'single', 'instances': ['a']},
                     400, 'is not of expected type: float')
    self.assertError(path, {'signature_name': 'fail', 'inputs': [-1.0]}, 400,
                     'assertion failed')
    # 2**62 floats: refused at once (2**50 would retry for 10 s first).
    self.assertError(path, {'signature_name': 'oom', 'inputs': 2**62}, 429,
                     'OOM')
    self.assertError(path, {'signature_name': 'cancel', 'inputs': [1.0]},
                     499, 'closed')
    self.assertError(path, {'signature_name': 'complex', 'inputs': [1.0]},
                     501, 'to type: complex64')
    self.assertError('/v1/models/default:classify',
                     {'signature_name': 'serving_default',
                      'examples': [{'x': 1.0}]}, 400,
                     'Expected classification signature method_name')
    self.assertError('/v1/models/default/versions/99999999999999999999:'
                     'predict', {'instances': [1.0]}, 400,
                     'Failed to convert version')

  def test_timeout_answers_504(self):
    start = time.monotonic()
    self.assertError('/v1/models/special:predict',
                     {'signature_name': 'block', 'inputs': [1.0]}, 504,
                     'Timed out')
    elapsed = time.monotonic() - start
    self.assertGreaterEqual(elapsed, _TIMEOUT_MS / 1000 * 0.9)
    self.assertLess(elapsed, 30)

  def test_cors_headers_and_preflight(self):
    code, headers, _ = self.call('/v1/models/default')
    self.assertEqual(code, 200)
    self.assertEqual(headers['Access-Control-Allow-Origin'], '*')
    self.assertEqual(headers['Access-Control-Allow-Methods'], 'POST, GET')
    self.assertEqual(headers['Access-Control-Allow-Headers'], 'Content-Type')
    code, headers, _ = self.call('/v1/models/default:predict',
                                 method='OPTIONS')
    self.assertEqual(code, 200)
    self.assertEqual(headers['Access-Control-Allow-Origin'], '*')
    code, headers, _ = self.call('/v1/models/nope')
    self.assertEqual(code, 404)
    self.assertEqual(headers['Access-Control-Allow-Origin'], '*')

  def test_curl(self):
    curl = shutil.which('curl')
    if curl is None:
      self.fail('curl is not installed: apt-get install curl')
    out = subprocess.run(
        [curl, '-sS', '-d', '{"instances": [[1.0], [2.0], [5.0]]}',
         f'{self.base}/v1/models/default:predict'],
        check=True, capture_output=True, text=True, timeout=60).stdout
    self.assertEqual(json.loads(out), {'predictions': [[2.5], [3.0], [4.5]]})
    out = subprocess.run(
        [curl, '-sS', '-o', '/dev/null', '-w', '%{http_code}',
         f'{self.base}/v1/models/nope'],
        check=True, capture_output=True, text=True, timeout=60).stdout
    self.assertEqual(out, '404')

  # --- metrics -------------------------------------------------------------

  def test_prometheus_counts_per_signature_for_grpc_and_rest(self):
    families = _families(self.call(_MONITORING_PATH)[2])
    count = ':tensorflow:serving:request_count_total'
    latency = ':tensorflow:serving:request_latency_count'
    before = {
        (sig, status): _sample(families, count, model_name='special',
                               signature_name=sig, status=status)
        for sig in ('single', 'echo') for status in ('OK',
                                                     'INVALID_ARGUMENT')}
    before_latency = {
        (sig, entry): _sample(families, latency, model_name='special',
                              signature_name=sig, entrypoint=entry,
                              API='Predict')
        for sig in ('single', 'echo') for entry in ('REST', 'GRPC')}
    for _ in range(3):
      self.assertEqual(self.call('/v1/models/special:predict',
                                 {'signature_name': 'single',
                                  'inputs': [1.0]})[0], 200)
    self.assertEqual(self.call('/v1/models/special:predict',
                               {'signature_name': 'single',
                                'inputs': ['x']})[0], 400)
    channel = grpc.insecure_channel(self.server.address)
    self.addCleanup(channel.close)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'special'
    request.model_spec.signature_name = 'echo'
    request.inputs['img_bytes'].CopyFrom(tf.make_tensor_proto([b'a']))
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.asarray([1.0], np.float32)))
    for _ in range(2):
      stub.Predict(request, timeout=30)

    code, headers, page = self.call(_MONITORING_PATH)
    self.assertEqual(code, 200)
    self.assertTrue(headers['Content-Type'].startswith('text/plain'))
    self.assertIn('# TYPE :tensorflow:serving:request_count counter', page)
    families = _families(page)
    for (sig, status), delta in ((('single', 'OK'), 3),
                                 (('single', 'INVALID_ARGUMENT'), 1),
                                 (('echo', 'OK'), 2),
                                 (('echo', 'INVALID_ARGUMENT'), 0)):
      self.assertEqual(
          _sample(families, count, model_name='special', signature_name=sig,
                  status=status) - before[(sig, status)], delta,
          (sig, status))
    for (sig, entry), delta in ((('single', 'REST'), 3),
                                (('single', 'GRPC'), 0),
                                (('echo', 'GRPC'), 2),
                                (('echo', 'REST'), 0)):
      self.assertEqual(
          _sample(families, latency, model_name='special',
                  signature_name=sig, entrypoint=entry, API='Predict') -
          before_latency[(sig, entry)], delta, (sig, entry))
    self.assertGreater(_sample(
        families, ':tensorflow:serving:runtime_latency_count',
        model_name='special', API='Predict', runtime='TF1'), 0)
    loads = [s for f in families for s in f.samples
             if s.name.endswith('load_attempt_count_total')]
    self.assertLen(loads, 4)  # default, versioned x2, special.
    self.assertTrue(all(s.labels['status'] == 'success' for s in loads))

  def test_readiness_while_every_model_is_available(self):
    code, _, text = self.call('/readyz')
    self.assertEqual(code, 200, text)
    self.assertEqual(json.loads(text), {'ready': True})


class TFServingRestCasesTest(absltest.TestCase):
  """The REST cases of TF Serving's tensorflow_model_server_test.py."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('tfs_rest')
    tf_serving_models.write_half_plus_two(os.path.join(root, 'half_plus_two'))
    monitoring = os.path.join(root, 'monitoring.config')
    with open(monitoring, 'w', encoding='utf-8') as f:
      f.write('prometheus_config { enable: true path: '
              f'"{_MONITORING_PATH}" }}\n')
    cls.rest_port = launcher.free_port()
    cls.server = launcher.ServerProcess(
        'default', os.path.join(root, 'half_plus_two'),
        extra_flags=[f'--rest_api_port={cls.rest_port}',
                     f'--monitoring_config_file={monitoring}'])
    cls.server.start()
    cls.base = f'http://127.0.0.1:{cls.rest_port}'

  @classmethod
  def tearDownClass(cls):
    cls.server.stop()
    super().tearDownClass()

  def rest(self, path, body=None):
    code, _, text = _http(self.base + path, body)
    self.assertEqual(code, 200, text)
    return json.loads(text) if not path.startswith('/monitoring') else text

  def testClassifyREST(self):
    self.assertEqual(
        self.rest('/v1/models/default:classify',
                  {'signature_name': 'classify_x_to_y',
                   'examples': [{'x': 2.0}]}),
        {'results': [[['', 3.0]]]})

  def testRegressREST(self):
    self.assertEqual(
        self.rest('/v1/models/default:regress',
                  {'signature_name': 'regress_x_to_y',
                   'examples': [{'x': 2.0}]}),
        {'results': [3.0]})

  # TF Serving's own requests: a [3] tensor fed to `x`, whose signature
  # shape is [-1, 1]; TF Serving's C++ session does not check the fed shape,
  # and neither do python/serve's callables.
  def testPredictREST(self):
    self.assertEqual(
        self.rest('/v1/models/default:predict',
                  {'instances': [2.0, 3.0, 4.0]}),
        {'predictions': [3.0, 3.5, 4.0]})

  def testPredictColumnarREST(self):
    self.assertEqual(
        self.rest('/v1/models/default:predict',
                  {'inputs': [2.0, 3.0, 4.0]}),
        {'outputs': [3.0, 3.5, 4.0]})

  def testGetStatusREST(self):
    self.assertEqual(
        self.rest('/v1/models/default'),
        {'model_version_status': [{
            'version': '123', 'state': 'AVAILABLE',
            'status': {'error_code': 'OK', 'error_message': ''}}]})

  def testGetModelMetadataREST(self):
    metadata = self.rest('/v1/models/default/metadata')
    # TF Serving compares with a JSON file of the same bundle; here the
    # reference is the gRPC answer printed with TF Serving's JSON options.
    channel = grpc.insecure_channel(self.server.address)
    self.addCleanup(channel.close)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = 'default'
    request.metadata_field.append('signature_def')
    response = prediction_service_pb2_grpc.PredictionServiceStub(
        channel).GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signature_map)
    expected = {
        'model_spec': {'name': 'default', 'signature_name': '',
                       'version': '123'},
        'metadata': {'signature_def': json_format.MessageToDict(
            signature_map, preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True)}}
    self.assertEqual(metadata, expected)
    x = metadata['metadata']['signature_def']['signature_def'][
        'serving_default']['inputs']['x']
    self.assertEqual(x['dtype'], 'DT_FLOAT')

  def testPrometheusEndpoint(self):
    self.assertIn('# TYPE', self.rest(_MONITORING_PATH))


class ReadinessTest(absltest.TestCase):
  """/readyz and gRPC health per model while a configured model has no version."""

  def test_readiness_follows_model_availability(self):
    root = _tmpdir('ready')
    tf_serving_models.write_half_plus_two(os.path.join(root, 'a'))
    os.makedirs(os.path.join(root, 'b'))
    config = os.path.join(root, 'models.config')
    tf_serving_models.write_model_config(config, {'a': f'{root}/a'})
    rest_port = launcher.free_port()
    server = launcher.ServerProcess(
        model_config_file=config, use_real_server=False,
        extra_flags=[f'--rest_api_port={rest_port}',
                     '--enable_grpc_healthcheck_service',
                     '--model_config_file_poll_wait_seconds=1',
                     '--file_system_poll_wait_seconds=1'])
    server.start()
    self.addCleanup(server.stop)
    url = f'http://127.0.0.1:{rest_port}/readyz'
    channel = grpc.insecure_channel(server.address)
    self.addCleanup(channel.close)
    health = health_pb2_grpc.HealthStub(channel)

    def health_of(name):
      return health.Check(health_pb2.HealthCheckRequest(service=name),
                          timeout=10).status

    def wait_for(code, deadline_s=60.0):
      deadline = time.monotonic() + deadline_s
      while True:
        got, _, text = _http(url)
        if got == code:
          return text
        if time.monotonic() > deadline:
          self.fail(f'/readyz stayed {got} ({text}), expected {code}.\n'
                    f'{server.log_tail()}')
        time.sleep(0.2)

    wait_for(200)
    self.assertEqual(health_of('a'), health_pb2.HealthCheckResponse.SERVING)
    # A second model without any version: the server keeps serving `a`, but
    # is not ready.
    tf_serving_models.write_model_config(config, {'a': f'{root}/a',
                                                  'b': f'{root}/b'})
    text = wait_for(503)
    self.assertEqual(json.loads(text)['ready'], False)
    self.assertIn("['b']", json.loads(text)['reason'])
    self.assertEqual(health_of('b'),
                     health_pb2.HealthCheckResponse.NOT_SERVING)
    self.assertEqual(health_of('a'), health_pb2.HealthCheckResponse.SERVING)
    # TF Serving's status URL answers 200 whatever the state.
    self.assertEqual(_http(f'http://127.0.0.1:{rest_port}/v1/models/a')[0],
                     200)
    tf_serving_models.write_half_plus_two(os.path.join(root, 'b'))
    wait_for(200)
    self.assertEqual(health_of('b'), health_pb2.HealthCheckResponse.SERVING)


class RestShutdownTest(absltest.TestCase):
  """SIGTERM drains REST requests in flight, then the process exits 0."""

  def test_request_in_flight_finishes_before_exit(self):
    base = os.path.join(_tmpdir('rest_shutdown'), 'special')
    write_special_model(base)
    rest_port = launcher.free_port()
    server = launcher.ServerProcess(
        'special', base, use_real_server=False,
        extra_flags=[f'--rest_api_port={rest_port}',
                     '--rest_api_timeout_in_ms=3000',
                     '--drain_timeout_seconds=20'])
    server.start()
    self.addCleanup(server.stop)
    url = f'http://127.0.0.1:{rest_port}/v1/models/special:predict'
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      # `block` runs until its 3 s deadline, then answers 504.
      future = pool.submit(_http, url, {'signature_name': 'block',
                                        'inputs': [1.0]})
      time.sleep(1.0)
      server.process.send_signal(signal.SIGTERM)
      code, _, text = future.result(timeout=60)
    self.assertEqual(code, 504, text)
    self.assertEqual(server.process.wait(60), 0, server.log_tail())
    with self.assertRaises(OSError):
      urllib.request.urlopen(url, data=b'{}', timeout=5)


class RestStartupFailureTest(parameterized.TestCase):
  """Bad REST/monitoring flags: exit 2 (usage) or 255 (cannot start)."""

  @parameterized.named_parameters(
      ('same_port', lambda port: [f'--port={port}', f'--rest_api_port={port}'],
       2, r'--rest_api_port cannot be same as --port'),
      ('bad_rest_port', lambda port: [f'--port={port}',
                                      '--rest_api_port=70000'],
       2, r'--rest_api_port=70000 is not in \[0, 65535\]'),
      ('unreadable_monitoring_config',
       lambda port: [f'--port={port}', f'--rest_api_port={port + 1}',
                     '--monitoring_config_file=/nonexistent/m.config'],
       _EXIT_START_FAILED, r'Failed to start server\. Error: Cannot read '
       r'--monitoring_config_file=/nonexistent/m\.config'),
  )
  def test_bad_flags(self, flags, exit_code, message_regex):
    command = launcher.server_command(
        flags(launcher.free_port()) + ['--model_base_path=/nonexistent/m'])
    result = subprocess.run(command, capture_output=True, text=True,
                            env=launcher.project_server_env(), timeout=120,
                            check=False)
    self.assertEqual(result.returncode, exit_code, result.stderr[-3000:])
    self.assertRegex(result.stderr, message_regex)

  def test_invalid_monitoring_config_names_the_file(self):
    config = os.path.join(_tmpdir('bad_monitoring'), 'm.config')
    with open(config, 'w', encoding='utf-8') as f:
      f.write('prometheus_config { enabled: true }\n')
    command = launcher.server_command(
        [f'--port={launcher.free_port()}',
         f'--rest_api_port={launcher.free_port()}',
         f'--monitoring_config_file={config}',
         '--model_base_path=/nonexistent/m'])
    result = subprocess.run(command, capture_output=True, text=True,
                            env=launcher.project_server_env(), timeout=120,
                            check=False)
    self.assertEqual(result.returncode, _EXIT_START_FAILED,
                     result.stderr[-3000:])
    self.assertIn(f"Invalid protobuf file: '{config}'", result.stderr)
    self.assertIn('no field named "enabled"', result.stderr)

  def test_rest_port_in_use_fails_startup(self):
    base = os.path.join(_tmpdir('rest_port_in_use'), 'hp2')
    tf_serving_models.write_half_plus_two(base)
    with socket.socket() as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen()
      port = taken.getsockname()[1]
      server = launcher.ServerProcess(
          'default', base, use_real_server=False,
          extra_flags=[f'--rest_api_port={port}'])
      with self.assertRaisesRegex(
          launcher.LauncherError,
          r'(?s)exited with status 255.*Failed to start server\. Error: '
          rf'Cannot listen on 127\.0\.0\.1:{port} for the REST API'):
        server.start()


if __name__ == '__main__':
  absltest.main()
