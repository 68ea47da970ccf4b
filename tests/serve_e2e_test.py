"""End-to-end tests of the model server over real gRPC on a free port.

Each test class starts one server process through `python.serve.launcher`
(the real tensorflow_model_server when one is on PATH, else //python/serve)
and talks to it with the tensorflow-serving-api stubs: TF1 and TF2 models,
version policies and labels, two models with a config reload, every error
case with its status code, warmup, graceful shutdown, startup failures, and a
hot swap of versions published by python/merge under client load.

  bazel test //tests:serve_e2e_test
"""

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable, Dict, List, Sequence

from absl.testing import absltest
from absl.testing import parameterized
from google.protobuf import text_format
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from python.merge import merge_lib
from python.merge.testdata import graphs
from python.serve import launcher
from python.serve.testdata import models

State = get_model_status_pb2.ModelVersionStatus.State
_DEADLINE_S = 120.0
_FAST_POLL = ('--file_system_poll_wait_seconds=1',
              '--max_num_load_retries=1',
              '--load_retry_interval_micros=200000')


def _tmpdir(name: str) -> str:
  path = os.path.join(absltest.get_default_test_tmpdir(), name)
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  return path


def _tensor(value, dtype=np.float32) -> tensor_pb2.TensorProto:
  return tf.make_tensor_proto(np.asarray(value, dtype=dtype))


def _predict_request(model: str, inputs: Dict[str, object] = None,
                     signature: str = '', version: int = None,
                     label: str = None, output_filter: Sequence[str] = ()
                    ) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  for alias, proto in (inputs or {}).items():
    request.inputs[alias].CopyFrom(proto)
  request.output_filter.extend(output_filter)
  return request


def _example(x: Sequence[float], bias: float = None):
  example = tf.train.Example()
  example.features.feature['x'].float_list.value.extend(x)
  if bias is not None:
    example.features.feature['bias'].float_list.value.append(bias)
  return example


def _examples_input(model_input, examples, context=None) -> None:
  if context is None:
    model_input.example_list.examples.extend(examples)
  else:
    model_input.example_list_with_context.examples.extend(examples)
    model_input.example_list_with_context.context.CopyFrom(context)


class _ServerTestCase(parameterized.TestCase):
  """Starts one server per class; gives stubs to the tests."""

  server: launcher.ServerProcess

  @classmethod
  def start_server(cls, **kwargs) -> None:
    cls.server = launcher.ServerProcess(**kwargs)
    cls.server.start()
    cls.addClassCleanup(cls.server.stop)
    cls.channel = grpc.insecure_channel(cls.server.address)
    cls.addClassCleanup(cls.channel.close)
    cls.predict = prediction_service_pb2_grpc.PredictionServiceStub(
        cls.channel)
    cls.model_service = model_service_pb2_grpc.ModelServiceStub(cls.channel)

  def model_status(self, name: str) -> Dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = self.model_service.GetModelStatus(request, timeout=10)
    return {s.version: s.state for s in response.model_version_status}

  def wait_for_states(self, name: str, expected: Dict[int, int]) -> None:
    """Waits until each listed version of `name` is in the given state."""
    deadline = time.monotonic() + _DEADLINE_S
    states = {}
    while time.monotonic() < deadline:
      self.assertIsNone(self.server.process.poll(),
                        f'server died:\n{self.server.log_tail()}')
      try:
        states = self.model_status(name)
      except grpc.RpcError as e:
        states = {'error': e.details()}
      if all(states.get(v) == s for v, s in expected.items()):
        return
      time.sleep(0.2)
    self.fail(f'{name}: wanted states {expected}, last seen {states}\n'
              f'{self.server.log_tail()}')

  def assert_rpc_error(self, call: Callable[[], object],
                       code: grpc.StatusCode, message_regex: str) -> None:
    with self.assertRaises(grpc.RpcError) as raised:
      call()
    self.assertEqual(raised.exception.code(), code,
                     raised.exception.details())
    self.assertRegex(raised.exception.details(), message_regex)


class TwoModelServerTest(_ServerTestCase):
  """TF1 + TF2 models from a model config file with policies and labels."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('two_models')
    tf1 = os.path.join(root, 'tf1')
    tf2 = os.path.join(root, 'tf2')
    models.write_versions(tf1, 'tf1', [1, 2, 3])
    models.write_versions(tf2, 'tf2', [1, 2, 3])
    # A staging directory (non-numeric) holding a valid model: ignored.
    models.write_tf2_model(os.path.join(tf2, '.staging-4'), 40.0)
    config = os.path.join(root, 'models.config')
    with open(config, 'w') as f:
      f.write(f"""
model_config_list {{
  config {{
    name: "tf1"
    base_path: "{tf1}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 3 }}
  }}
  config {{
    name: "tf2"
    base_path: "{tf2}"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
}}
""")
    cls.start_server(model_config_file=config,
                     extra_flags=['--enable_grpc_healthcheck_service'])

  def setUp(self):
    super().setUp()
    self.wait_for_states('tf1', {3: State.AVAILABLE, 1: State.AVAILABLE})
    self.wait_for_states('tf2', {3: State.AVAILABLE, 2: State.AVAILABLE})

  def _predict_tf1(self, **kwargs) -> predict_pb2.PredictResponse:
    request = _predict_request(
        'tf1', {'x': _tensor([[1, 2, 3], [4, 5, 6]])}, **kwargs)
    return self.predict.Predict(request, timeout=30)

  @parameterized.named_parameters(
      ('latest', {}, 3, 3.0),
      ('version_1', {'version': 1}, 1, 1.0),
      ('label_stable', {'label': 'stable'}, 1, 1.0),
      ('label_canary', {'label': 'canary'}, 3, 3.0),
  )
  def test_tf1_predict_resolves_version(self, spec, version, scale):
    response = self._predict_tf1(**spec)
    self.assertEqual(response.model_spec.name, 'tf1')
    self.assertEqual(response.model_spec.version.value, version)
    self.assertEqual(response.model_spec.signature_name, 'serving_default')
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs['y']),
        scale * np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['total']),
                               [6 * scale, 15 * scale])

  def test_placeholder_shape_is_not_enforced_as_in_tf_serving(self):
    # TF Serving's C++ session feeds a [1, 4] value into the [None, 3]
    # placeholder x and runs the graph (Python's Session.run would refuse).
    response = self.predict.Predict(
        _predict_request('tf1', {'x': _tensor([[1, 2, 3, 4]])},
                         output_filter=['total']), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['total']),
                               [30.0])
    self.assertEqual(list(response.outputs['total'].float_val), [30.0])

  def test_output_filter_returns_only_requested_outputs(self):
    response = self._predict_tf1(output_filter=['total'])
    self.assertEqual(list(response.outputs), ['total'])

  def test_signature_without_inputs_and_warmup_replay(self):
    # `count` has no inputs; it reads the counter that the version's warmup
    # file bumped WARMUP_RECORDS times at load.
    response = self.predict.Predict(
        _predict_request('tf1', signature='count'), timeout=30)
    self.assertEqual(response.model_spec.signature_name, 'count')
    self.assertEqual(int(tf.make_ndarray(response.outputs['count'])),
                     models.WARMUP_RECORDS)

  @parameterized.named_parameters(
      ('latest', None, 3), ('previous', 2, 2))
  def test_tf2_predict(self, version, scale):
    response = self.predict.Predict(_predict_request(
        'tf2', {'x': _tensor([1.0, -2.0])}, version=version), timeout=30)
    self.assertEqual(response.model_spec.version.value, scale)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['y']),
                               [scale + 1.0, -2.0 * scale + 1.0])

  def test_tf2_int_signature(self):
    response = self.predict.Predict(_predict_request(
        'tf2', {'k': _tensor([3, 4], np.int32)}, signature='echo_int'),
                                    timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs['k2']),
                                  [6, 8])
    self.assertEqual(response.model_spec.signature_name, 'echo_int')

  def test_classify_example_list(self):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.signature_name = 'classify'
    _examples_input(request.input, [_example([1, 2, 3]),
                                    _example([0, 0, 1], bias=2)])
    response = self.predict.Classify(request, timeout=30)
    self.assertEqual(response.model_spec.version.value, 3)
    self.assertEqual(response.model_spec.signature_name, 'classify')
    got = [[(c.label, c.score) for c in cl.classes]
           for cl in response.result.classifications]
    self.assertEqual(got, [[('pos', 18.0), ('neg', -18.0)],
                           [('pos', 9.0), ('neg', -9.0)]])

  def test_classify_example_list_with_context(self):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.signature_name = 'classify'
    request.model_spec.version.value = 1
    _examples_input(request.input, [_example([1, 2, 3]),
                                    _example([1, 1, 1], bias=1)],
                    context=_example([], bias=10))
    response = self.predict.Classify(request, timeout=30)
    scores = [[c.score for c in cl.classes]
              for cl in response.result.classifications]
    # The context's bias applies unless the example sets its own.
    self.assertEqual(scores, [[16.0, -16.0], [4.0, -4.0]])

  def test_regress(self):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.signature_name = 'regress'
    _examples_input(request.input, [_example([1, 1, 1]), _example([2, 2, 2])])
    response = self.predict.Regress(request, timeout=30)
    self.assertEqual(response.model_spec.signature_name, 'regress')
    self.assertEqual([r.value for r in response.result.regressions],
                     [9.0, 18.0])

  def test_multi_inference(self):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (('classify', 'tensorflow/serving/classify'),
                              ('regress', 'tensorflow/serving/regress')):
      task = request.tasks.add()
      task.model_spec.name = 'tf1'
      task.model_spec.signature_name = signature
      task.method_name = method
    _examples_input(request.input, [_example([1, 2, 3])])
    response = self.predict.MultiInference(request, timeout=30)
    self.assertLen(response.results, 2)
    classify, regress = response.results
    self.assertEqual(classify.model_spec.signature_name, 'classify')
    self.assertEqual(classify.model_spec.version.value, 3)
    self.assertEqual(
        [c.score for c in classify.classification_result.classifications[0]
         .classes], [18.0, -18.0])
    self.assertEqual(regress.model_spec.signature_name, 'regress')
    self.assertEqual(
        [r.value for r in regress.regression_result.regressions], [18.0])

  @parameterized.named_parameters(('tf1', 'tf1', 3), ('tf2', 'tf2', 3))
  def test_get_model_metadata(self, model, version):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append('signature_def')
    response = self.predict.GetModelMetadata(request, timeout=30)
    self.assertEqual(response.model_spec.name, model)
    self.assertEqual(response.model_spec.version.value, version)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    self.assertTrue(response.metadata['signature_def'].Unpack(signature_map))
    default = signature_map.signature_def['serving_default']
    self.assertIn('x', default.inputs)
    self.assertIn('y', default.outputs)
    if model == 'tf1':
      self.assertContainsSubset(
          {'classify', 'regress', 'count', 'slow', 'serving_default'},
          set(signature_map.signature_def))
      self.assertEqual(signature_map.signature_def['classify'].method_name,
                       'tensorflow/serving/classify')

  def test_get_model_status_lists_policy_versions_only(self):
    self.assertEqual(self.model_status('tf1'),
                     {3: State.AVAILABLE, 1: State.AVAILABLE})
    # latest{2}: versions 3 and 2; the .staging-4 directory is ignored.
    self.assertEqual(self.model_status('tf2'),
                     {3: State.AVAILABLE, 2: State.AVAILABLE})
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.version.value = 3
    response = self.model_service.GetModelStatus(request, timeout=10)
    self.assertLen(response.model_version_status, 1)
    self.assertEqual(response.model_version_status[0].version, 3)
    self.assertTrue(response.model_version_status[0].HasField('status'))
    self.assertEqual(response.model_version_status[0].status.error_code, 0)

  def test_health_service_reports_serving(self):
    stub = health_pb2_grpc.HealthStub(self.channel)
    for service in ('', 'tensorflow.serving.PredictionService', 'tf1',
                    'tf2'):
      response = stub.Check(health_pb2.HealthCheckRequest(service=service),
                            timeout=10)
      self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING)

  def test_concurrent_predicts(self):
    results = []
    errors = []

    def worker(i):
      try:
        response = self.predict.Predict(_predict_request(
            'tf1', {'x': _tensor([[i, 0, 0]])}), timeout=60)
        total = tf.make_ndarray(response.outputs['total'])[0]
        results.append((i, float(total)))
      except grpc.RpcError as e:  # Collected and asserted below.
        errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(errors, [])
    self.assertCountEqual(results, [(i, 3.0 * i) for i in range(16)])

  # --- error cases: code and message as TF Serving ---------------------------

  def _classify(self, signature='classify', examples=()):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.signature_name = signature
    _examples_input(request.input, list(examples))
    return lambda: self.predict.Classify(request, timeout=30)

  def _regress(self, signature):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'tf1'
    request.model_spec.signature_name = signature
    _examples_input(request.input, [_example([1, 2, 3])])
    return lambda: self.predict.Regress(request, timeout=30)

  def _metadata(self, fields, model='tf1', with_spec=True):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    if with_spec:
      request.model_spec.name = model
    request.metadata_field.extend(fields)
    return lambda: self.predict.GetModelMetadata(request, timeout=30)

  def _predict(self, request):
    return lambda: self.predict.Predict(request, timeout=30)

  def _multi(self, tasks):
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
      task = request.tasks.add()
      task.model_spec.name = model
      task.model_spec.signature_name = signature
      task.method_name = method
    _examples_input(request.input, [_example([1, 2, 3])])
    return lambda: self.predict.MultiInference(request, timeout=30)

  def _status(self, model, version=None, with_spec=True):
    request = get_model_status_pb2.GetModelStatusRequest()
    if with_spec:
      request.model_spec.name = model
    if version is not None:
      request.model_spec.version.value = version
    return lambda: self.model_service.GetModelStatus(request, timeout=10)

  @parameterized.named_parameters(
      ('predict_missing_model_spec',
       lambda t: t._predict(predict_pb2.PredictRequest()),
       grpc.StatusCode.INVALID_ARGUMENT, 'Missing ModelSpec'),
      ('predict_unknown_model',
       lambda t: t._predict(_predict_request('nope')),
       grpc.StatusCode.NOT_FOUND,
       r"Servable not found for request: Latest\(nope\)\. Known models: "
       r"\['tf1', 'tf2'\]"),
      ('predict_version_not_in_policy',
       lambda t: t._predict(_predict_request(
           'tf1', {'x': _tensor([[1, 2, 3]])}, version=2)),
       grpc.StatusCode.NOT_FOUND,
       r'Servable not found for request: Specific\(tf1, 2\).*\[1, 3\]'),
      ('predict_unknown_label',
       lambda t: t._predict(_predict_request('tf1', label='beta')),
       grpc.StatusCode.INVALID_ARGUMENT,
       r"Unrecognized servable version label: beta.*'canary', 'stable'"),
      ('predict_unknown_signature',
       lambda t: t._predict(_predict_request('tf1', signature='nope')),
       grpc.StatusCode.FAILED_PRECONDITION,
       r'Serving signature key "nope" not found.*classify,count'),
      ('predict_missing_input',
       lambda t: t._predict(_predict_request('tf1')),
       grpc.StatusCode.INVALID_ARGUMENT,
       r'input size does not match signature: 0!=1 .*Sent extra: \{\}\. '
       r'Missing but required: \{x\}\.'),
      ('predict_extra_input',
       lambda t: t._predict(_predict_request(
           'tf1', {'x': _tensor([[1, 2, 3]]), 'z': _tensor([1])})),
       grpc.StatusCode.INVALID_ARGUMENT,
       r'Sent extra: \{z\}\. Missing but required: \{\}\.'),
      ('predict_wrong_alias',
       lambda t: t._predict(_predict_request('tf1', {'z': _tensor([1])})),
       grpc.StatusCode.INVALID_ARGUMENT,
       r'Signature input alias: x\(feed name: x:0\) not found in request and '
       r'no default value provided\. Inputs expected to be in the request '
       r'\{z\}'),
      ('predict_unknown_output_filter',
       lambda t: t._predict(_predict_request(
           'tf1', {'x': _tensor([[1, 2, 3]])}, output_filter=['nope'])),
       grpc.StatusCode.INVALID_ARGUMENT,
       r'output tensor alias not found in signature: nope Outputs expected '
       r'to be in the set \{total,y\}\.'),
      ('predict_dtype_mismatch',
       lambda t: t._predict(_predict_request(
           'tf1', {'x': _tensor([[1, 2, 3]], np.int32)})),
       grpc.StatusCode.INVALID_ARGUMENT,
       r'Expects arg\[0\] to be float but int32 is provided'),
      ('classify_empty_input', lambda t: t._classify(),
       grpc.StatusCode.INVALID_ARGUMENT, 'Input is empty'),
      ('classify_on_predict_signature',
       lambda t: t._classify('serving_default', [_example([1, 2, 3])]),
       grpc.StatusCode.INVALID_ARGUMENT,
       'Expected classification signature method_name to be '
       'tensorflow/serving/classify. Was: tensorflow/serving/predict'),
      ('regress_unknown_signature', lambda t: t._regress('nope'),
       grpc.StatusCode.INVALID_ARGUMENT,
       'No signature was found with the name: nope'),
      ('metadata_missing_field', lambda t: t._metadata([]),
       grpc.StatusCode.INVALID_ARGUMENT,
       'GetModelMetadataRequest must specify at least one metadata_field'),
      ('metadata_unsupported_field', lambda t: t._metadata(['graph']),
       grpc.StatusCode.INVALID_ARGUMENT,
       'Metadata field graph is not supported.*signature_def'),
      ('metadata_missing_model_spec',
       lambda t: t._metadata(['signature_def'], with_spec=False),
       grpc.StatusCode.INVALID_ARGUMENT, 'Missing ModelSpec'),
      ('metadata_unknown_model',
       lambda t: t._metadata(['signature_def'], model='nope'),
       grpc.StatusCode.NOT_FOUND, r'Servable not found.*Latest\(nope\)'),
      ('multi_inference_two_models',
       lambda t: t._multi([('tf1', 'classify', 'tensorflow/serving/classify'),
                           ('tf2', 'regress', 'tensorflow/serving/regress')]),
       grpc.StatusCode.INVALID_ARGUMENT,
       'All ModelSpecs in a MultiInferenceRequest must access the same model '
       'name'),
      ('multi_inference_predict_method',
       lambda t: t._multi([('tf1', 'classify', 'tensorflow/serving/predict')]),
       grpc.StatusCode.UNIMPLEMENTED,
       'Unsupported signature method_name: tensorflow/serving/predict'),
      ('status_unknown_model', lambda t: t._status('nope'),
       grpc.StatusCode.NOT_FOUND, 'Could not find any versions of model nope'),
      ('status_unknown_version', lambda t: t._status('tf1', 2),
       grpc.StatusCode.NOT_FOUND, 'Could not find version 2 of model tf1'),
      ('status_missing_model_spec',
       lambda t: t._status('tf1', with_spec=False),
       grpc.StatusCode.INVALID_ARGUMENT, 'Missing ModelSpec'),
  )
  def test_error(self, make_call, code, message_regex):
    self.assert_rpc_error(make_call(self), code, message_regex)


class ReloadConfigTest(_ServerTestCase):
  """HandleReloadConfigRequest: swap models, reject bad configs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('reload')
    cls.tf1 = os.path.join(root, 'tf1')
    cls.tf2 = os.path.join(root, 'tf2')
    models.write_versions(cls.tf1, 'tf1', [1])
    models.write_versions(cls.tf2, 'tf2', [1, 2])
    config = os.path.join(root, 'models.config')
    with open(config, 'w') as f:
      f.write(f'model_config_list {{ config {{ name: "tf1" '
              f'base_path: "{cls.tf1}" }} }}')
    cls.start_server(model_config_file=config, extra_flags=_FAST_POLL)

  def _reload(self, text: str) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config.model_config_list)
    return self.model_service.HandleReloadConfigRequest(request, timeout=120)

  @parameterized.named_parameters(
      ('relative_path', 'config { name: "bad" base_path: "relative/path" }',
       grpc.StatusCode.INVALID_ARGUMENT,
       r'Expected model bad to have an absolute path or URI; got '
       r'base_path\(\)=relative/path'),
      ('duplicate_name', 'config { name: "a" base_path: "/a" } '
       'config { name: "a" base_path: "/b" }',
       grpc.StatusCode.INVALID_ARGUMENT,
       'Illegal to list model a multiple times in config list'),
  )
  def test_invalid_config_is_rejected_and_nothing_changes(
      self, text, code, message_regex):
    self.assert_rpc_error(lambda: self._reload(text), code, message_regex)
    response = self.predict.Predict(
        _predict_request('tf1', {'x': _tensor([[1, 1, 1]])}), timeout=30)
    self.assertEqual(response.model_spec.version.value, 1)

  def test_reload_adds_and_removes_models_and_labels(self):
    # Add tf2 (versions 1 and 2 under policy all) with a label, drop tf1.
    response = self._reload(
        f'config {{ name: "tf2" base_path: "{self.tf2}" '
        f'model_version_policy {{ all {{}} }} }}')
    self.assertEqual(response.status.error_code, 0)
    self.wait_for_states('tf2', {1: State.AVAILABLE, 2: State.AVAILABLE})
    response = self.predict.Predict(
        _predict_request('tf2', {'x': _tensor([1.0])}), timeout=30)
    self.assertEqual(response.model_spec.version.value, 2)
    self.wait_for_states('tf1', {1: State.END})
    self.assert_rpc_error(
        lambda: self.predict.Predict(_predict_request('tf1'), timeout=30),
        grpc.StatusCode.NOT_FOUND, r'Latest\(tf1\)')

    # A label on a version that is not available is refused...
    self.assert_rpc_error(
        lambda: self._reload(
            f'config {{ name: "tf2" base_path: "{self.tf2}" '
            f'model_version_policy {{ all {{}} }} '
            f'version_labels {{ key: "stable" value: 7 }} }}'),
        grpc.StatusCode.FAILED_PRECONDITION,
        'label "stable" to version 7 of model tf2, which is not currently '
        'available')
    # ... one on an available version works.
    self._reload(f'config {{ name: "tf2" base_path: "{self.tf2}" '
                 f'model_version_policy {{ all {{}} }} '
                 f'version_labels {{ key: "stable" value: 1 }} }}')
    response = self.predict.Predict(
        _predict_request('tf2', {'x': _tensor([1.0])}, label='stable'),
        timeout=30)
    self.assertEqual(response.model_spec.version.value, 1)


class ConfigFilePollTest(_ServerTestCase):
  """--model_config_file_poll_wait_seconds picks up an edited config file."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('config_poll')
    cls.tf1 = os.path.join(root, 'tf1')
    cls.tf2 = os.path.join(root, 'tf2')
    models.write_versions(cls.tf1, 'tf1', [1])
    models.write_versions(cls.tf2, 'tf2', [5])
    cls.config = os.path.join(root, 'models.config')
    cls._write_config([('tf1', cls.tf1)])
    cls.start_server(
        model_config_file=cls.config,
        extra_flags=['--model_config_file_poll_wait_seconds=1'])

  @classmethod
  def _write_config(cls, entries) -> None:
    text = 'model_config_list {\n' + ''.join(
        f'  config {{ name: "{name}" base_path: "{path}" }}\n'
        for name, path in entries) + '}\n'
    with open(cls.config + '.tmp', 'w') as f:
      f.write(text)
    os.replace(cls.config + '.tmp', cls.config)

  def test_edited_config_file_is_applied(self):
    self._write_config([('tf1', self.tf1), ('tf2', self.tf2)])
    self.wait_for_states('tf2', {5: State.AVAILABLE})
    response = self.predict.Predict(
        _predict_request('tf2', {'x': _tensor([1.0])}), timeout=30)
    self.assertEqual(response.model_spec.version.value, 5)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['y']), [6.0])
    self.assertEqual(self.model_status('tf1'), {1: State.AVAILABLE})


class VersionLifecycleTest(_ServerTestCase):
  """--model_base_path discovery: new, failing and removed versions."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = os.path.join(_tmpdir('lifecycle'), 'm')
    models.write_versions(cls.base, 'tf1', [1, 2])
    cls.start_server(model_name='m', model_base_path=cls.base,
                     extra_flags=_FAST_POLL)

  def _served_version(self) -> int:
    response = self.predict.Predict(
        _predict_request('m', {'x': _tensor([[1, 0, 0]])}), timeout=30)
    scale = float(tf.make_ndarray(response.outputs['total'])[0])
    self.assertEqual(scale, response.model_spec.version.value)
    return response.model_spec.version.value

  def _publish(self, version: int, broken: bool = False) -> None:
    staging = os.path.join(self.base, f'.staging-{version}')
    if broken:
      os.makedirs(staging)
      with open(os.path.join(staging, 'saved_model.pb'), 'wb') as f:
        f.write(b'this is not a SavedModel')
    else:
      models.write_tf1_model(staging, float(version))
    os.rename(staging, os.path.join(self.base, str(version)))

  def test_failed_load_keeps_previous_then_removal_unloads(self):
    self.wait_for_states('m', {2: State.AVAILABLE})
    self.assertEqual(self._served_version(), 2)

    self._publish(3, broken=True)
    self.wait_for_states('m', {3: State.END, 2: State.AVAILABLE})
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'm'
    request.model_spec.version.value = 3
    status = self.model_service.GetModelStatus(request, timeout=10)
    self.assertNotEqual(status.model_version_status[0].status.error_code, 0)
    self.assertRegex(status.model_version_status[0].status.error_message,
                     r'version: 3')
    self.assertEqual(self._served_version(), 2)

    self._publish(4)
    self.wait_for_states('m', {4: State.AVAILABLE, 2: State.END})
    self.assertEqual(self._served_version(), 4)

    # Removing the newest version brings back the next one (2; 3 is broken
    # and therefore removed too), and unloads 4 once 2 is available.
    shutil.rmtree(os.path.join(self.base, '4'))
    shutil.rmtree(os.path.join(self.base, '3'))
    self.wait_for_states('m', {2: State.AVAILABLE, 4: State.END})
    self.assertEqual(self._served_version(), 2)


class GracefulShutdownTest(parameterized.TestCase):
  """SIGTERM/SIGINT: drain then exit 0; a second one exits at once.

  Also: a request outliving --drain_timeout_seconds is given up on, and a
  signal during start-up abandons the loading.
  """

  # Iterations of the `slow` signature that no test waits for (hours).
  _FOREVER = 10**12

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = _tmpdir('shutdown')
    cls.base = os.path.join(root, 'm')
    models.write_versions(cls.base, 'tf1', [1])
    # A version whose warmup never ends: start-up stays in TensorFlow.
    cls.stuck_base = os.path.join(root, 'stuck')
    version = models.write_tf1_model(os.path.join(cls.stuck_base, '1'),
                                     warmup=False)
    models.write_warmup_file(version, [_predict_request(
        'stuck', {'n': _tensor(cls._FOREVER, np.int64)}, signature='slow')])

  def _start_and_wait_until_running_slow(self, n: int, extra_flags=(),
                                         use_real_server=None):
    server = launcher.ServerProcess(model_name='m', model_base_path=self.base,
                                    extra_flags=extra_flags,
                                    use_real_server=use_real_server)
    server.start()
    self.addCleanup(server.stop)
    channel = grpc.insecure_channel(server.address)
    self.addCleanup(channel.close)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    future = stub.Predict.future(
        _predict_request('m', {'n': _tensor(n, np.int64)}, signature='slow'),
        timeout=600)
    self.addCleanup(future.cancel)
    # Wait until the server is running the request (it bumps `started`).
    deadline = time.monotonic() + _DEADLINE_S
    while True:
      started = stub.Predict(_predict_request('m', signature='started'),
                             timeout=30)
      if int(tf.make_ndarray(started.outputs['started'])) >= 1:
        break
      self.assertLess(time.monotonic(), deadline, 'slow request never ran')
      time.sleep(0.01)
    return server, future

  def _wait_for_exit(self, process: subprocess.Popen, log_tail: Callable,
                     what: str) -> int:
    try:
      return process.wait(60)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      self.fail(f'the server did not exit within 60 s of {what}; its log '
                f'ends:\n{log_tail()}')

  def _wait_for_log(self, process: subprocess.Popen, log_tail: Callable,
                    text: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while text not in log_tail(1 << 20):
      self.assertIsNone(process.poll(), f'server died before logging '
                        f'{text!r}:\n{log_tail()}')
      self.assertLess(time.monotonic(), deadline,
                      f'server never logged {text!r}:\n{log_tail()}')
      time.sleep(0.05)

  @parameterized.named_parameters(('sigterm', signal.SIGTERM),
                                  ('sigint', signal.SIGINT))
  def test_signal_drains_in_flight_request_and_exits_zero(self, signum):
    n = 200000
    server, future = self._start_and_wait_until_running_slow(n)
    server.process.send_signal(signum)
    response = future.result()
    self.assertEqual(int(tf.make_ndarray(response.outputs['total'])),
                     n * (n - 1) // 2)
    code = self._wait_for_exit(server.process, server.log_tail, signum.name)
    self.assertEqual(code, 0, server.log_tail())

  def test_second_signal_during_drain_exits_at_once_with_status_1(self):
    # The project server's own behaviour (TF Serving does not drain at all).
    # The drain would last 10 minutes: only the second signal ends it.
    server, future = self._start_and_wait_until_running_slow(
        self._FOREVER, extra_flags=['--drain_timeout_seconds=600'],
        use_real_server=False)
    server.process.send_signal(signal.SIGINT)
    # Signals of one kind do not queue: the first must be taken first.
    self._wait_for_log(server.process, server.log_tail, 'Received SIGINT')
    server.process.send_signal(signal.SIGINT)
    code = self._wait_for_exit(server.process, server.log_tail,
                               'the second SIGINT')
    log = server.log_tail()
    self.assertEqual(code, 1, log)
    self.assertIn('Received SIGINT during shutdown: exiting now', log)
    with self.assertRaises(grpc.RpcError) as raised:
      future.result()
    self.assertIn(raised.exception.code(),
                  (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED),
                  raised.exception.details())

  def test_request_outliving_drain_timeout_is_cancelled_and_exit_is_zero(
      self):
    # TensorFlow cannot stop the request's Session.run: the server must
    # give up on it rather than wait for the version it holds.
    server, future = self._start_and_wait_until_running_slow(
        self._FOREVER, extra_flags=['--drain_timeout_seconds=1'],
        use_real_server=False)
    server.process.send_signal(signal.SIGTERM)
    code = self._wait_for_exit(server.process, server.log_tail,
                               'SIGTERM with a 1 s drain timeout')
    log = server.log_tail()
    self.assertEqual(code, 0, log)
    self.assertIn('Version 1 of model m is still used by 1 request(s)', log)
    with self.assertRaises(grpc.RpcError) as raised:
      future.result()
    self.assertIn(raised.exception.code(),
                  (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED),
                  raised.exception.details())

  def test_signal_during_start_up_abandons_loading_and_exits_zero(self):
    # The project server's own behaviour: TF Serving dies of the signal.
    log_path = os.path.join(_tmpdir('shutdown_start_up'), 'server.log')
    command = launcher.server_command([
        f'--port={launcher.free_port()}', '--model_name=stuck',
        f'--model_base_path={self.stuck_base}'])
    with open(log_path, 'wb') as log_file:
      process = subprocess.Popen(  # pylint: disable=consider-using-with
          command, stdout=log_file, stderr=subprocess.STDOUT,
          env=launcher.project_server_env())
    self.addCleanup(process.wait)
    self.addCleanup(process.kill)

    def log_tail(max_chars: int = 6000) -> str:
      with open(log_path, encoding='utf-8', errors='replace') as f:
        return f.read()[-max_chars:]

    self._wait_for_log(process, log_tail, 'Starting to read warmup data')
    process.send_signal(signal.SIGINT)
    code = self._wait_for_exit(process, log_tail, 'SIGINT during warmup')
    log = log_tail(1 << 20)
    self.assertEqual(code, 0, log[-6000:])
    self.assertIn('Stopping before the port opened', log)
    self.assertNotIn('Running gRPC ModelServer', log)


class StartupFailureTest(parameterized.TestCase):
  """The server exits with TF Serving's message when it cannot start."""

  def test_model_that_cannot_load_fails_startup(self):
    base = os.path.join(_tmpdir('broken'), 'm')
    os.makedirs(os.path.join(base, '1'))
    with open(os.path.join(base, '1', 'saved_model.pb'), 'wb') as f:
      f.write(b'garbage')
    server = launcher.ServerProcess(
        model_name='broken', model_base_path=base, use_real_server=False,
        extra_flags=['--max_num_load_retries=1',
                     '--load_retry_interval_micros=100000'])
    with self.assertRaisesRegex(
        launcher.LauncherError,
        r'(?s)exited with status 255.*Failed to start server\. Error: Some '
        r'servables were not available: \{name: broken version: 1\}'):
      server.start()

  @parameterized.named_parameters(
      ('relative_base_path', ['--model_base_path=models/m'], 2,
       r'Expected model default to have an absolute path or URI; got '
       r'base_path\(\)=models/m'),
      ('missing_base_path', ['--model_base_path=/nonexistent/base'], 255,
       'Could not find base path /nonexistent/base for servable default'),
      ('no_model', [], 2,
       'Both --model_base_path and --model_config_file are empty'),
      ('unreadable_ssl_config',
       ['--model_base_path=/nonexistent/base',
        '--ssl_config_file=/nonexistent/ssl.config'], 255,
       r'Failed to start server\. Error: Cannot read '
       r'--ssl_config_file=/nonexistent/ssl\.config'),
  )
  def test_bad_command_line(self, flags, exit_code, message_regex):
    # Always the project server: these exit codes and messages are its own.
    command = launcher.server_command(
        [f'--port={launcher.free_port()}'] + flags)
    result = subprocess.run(command, capture_output=True, text=True,
                            env=launcher.project_server_env(), timeout=120,
                            check=False)
    self.assertEqual(result.returncode, exit_code, result.stderr[-3000:])
    self.assertRegex(result.stderr, message_regex)


class HotSwapTest(_ServerTestCase):
  """Versions published by python/merge swap in under continuous load."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = _tmpdir('hot_swap')
    cls.output_base = os.path.join(cls.root, 'merged')
    cls._publish(1)
    cls.start_server(model_name='merged', model_base_path=cls.output_base)

  @classmethod
  def _publish(cls, version: int) -> None:
    frozen = os.path.join(cls.root, 'frozen', f'hyaudio_{version}.pb')
    info = graphs.write_hyaudio(frozen, seed=version)
    spec = graphs.write_spec(
        os.path.join(cls.root, f'merge_{version}.toml'),
        [graphs.model_entry('hyaudio', info, frozen=frozen)],
        serving_default='hyaudio', message=f'version {version}')
    result = merge_lib.merge_and_publish(spec, cls.output_base,
                                             version=version)
    if result.version != version:
      raise AssertionError(f'merge published {result.version}, not {version}')
    cls.input_shape = [2] + [abs(d) for d in info['shapes'][
        info['inputs']['inputs']][1:]]

  def test_hot_swap_under_load_has_no_failures_and_monotonic_versions(self):
    stop = threading.Event()
    seen: List[List[int]] = [[] for _ in range(4)]
    failures: List[str] = []
    x = _tensor(np.ones(self.input_shape, np.float32))

    def client(index: int) -> None:
      channel = grpc.insecure_channel(self.server.address)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      try:
        while not stop.is_set():
          try:
            response = stub.Predict(_predict_request(
                'merged', {'inputs': x}, signature='hyaudio'), timeout=60)
            seen[index].append(response.model_spec.version.value)
          except grpc.RpcError as e:
            failures.append(f'{e.code()}: {e.details()}')
      finally:
        channel.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
      t.start()
    try:
      for version in (2, 3, 4):
        self._publish(version)
        self.wait_for_states('merged', {version: State.AVAILABLE,
                                        version - 1: State.END})
      # Let every client get answers from the final version.
      deadline = time.monotonic() + _DEADLINE_S
      while not all(s and s[-1] == 4 for s in seen):
        self.assertLess(time.monotonic(), deadline, 'clients stalled')
        time.sleep(0.1)
    finally:
      stop.set()
      for t in threads:
        t.join()

    self.assertEqual(failures, [])
    for versions in seen:
      self.assertEqual(versions, sorted(versions), 'a version went backwards')
      self.assertEqual(versions[-1], 4)
    self.assertGreater(len(set(sum(seen, []))), 1)


if __name__ == '__main__':
  absltest.main()
