"""Tests of json_tensor against TF Serving's documented JSON contract."""

import base64
import json
import math

from absl.testing import absltest
from absl.testing import parameterized
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from python.serve import json_tensor
from python.serve import serving_error

FLOAT = types_pb2.DT_FLOAT


def _infos(**dtypes):
  return {name: meta_graph_pb2.TensorInfo(name=f'{name}:0', dtype=dtype)
          for name, dtype in dtypes.items()}


def _predict(body, **dtypes):
  request = predict_pb2.PredictRequest()
  seen = []

  def infos(signature_name):
    seen.append(signature_name)
    return _infos(**dtypes)

  fmt = json_tensor.fill_predict_request(
      json.dumps(body).encode() if not isinstance(body, bytes) else body,
      infos, request)
  arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
  return fmt, arrays, request, seen


class PredictRequestTest(parameterized.TestCase):

  def test_row_format_single_input_batches_instances(self):
    fmt, arrays, _, _ = _predict({'instances': [[1.0, 2.0], [3.0, 4.0]]},
                                 x=FLOAT)
    self.assertEqual(fmt, json_tensor.PredictFormat.ROW)
    np.testing.assert_array_equal(arrays['x'], [[1, 2], [3, 4]])
    self.assertEqual(arrays['x'].dtype, np.float32)

  def test_row_format_named_inputs_and_b64(self):
    raw = b'\x00\xffbin'
    fmt, arrays, _, _ = _predict(
        {'signature_name': 'sig',
         'instances': [{'a': 1, 'b': {'b64': base64.b64encode(raw).decode()}},
                       {'a': 2, 'b': 'text'}]},
        a=types_pb2.DT_INT64, b=types_pb2.DT_STRING)
    self.assertEqual(fmt, json_tensor.PredictFormat.ROW)
    np.testing.assert_array_equal(arrays['a'], [1, 2])
    self.assertEqual(list(arrays['b']), [raw, b'text'])

  def test_columnar_format_and_signature_name(self):
    fmt, arrays, request, seen = _predict(
        {'signature_name': 'sig', 'inputs': {'a': [[1, 2]], 'b': True}},
        a=types_pb2.DT_INT32, b=types_pb2.DT_BOOL)
    self.assertEqual(fmt, json_tensor.PredictFormat.COLUMNAR)
    self.assertEqual(seen, ['sig'])
    self.assertEqual(request.model_spec.signature_name, 'sig')
    np.testing.assert_array_equal(arrays['a'], [[1, 2]])
    self.assertEqual(arrays['b'].shape, ())

  def test_nan_and_infinity_parse(self):
    _, arrays, _, _ = _predict(b'{"instances": [NaN, Infinity, -Infinity]}',
                               x=FLOAT)
    self.assertTrue(math.isnan(arrays['x'][0]))
    self.assertEqual(list(arrays['x'][1:]), [np.inf, -np.inf])

  @parameterized.named_parameters(
      ('empty', b'', 'JSON Parse error: The document is empty'),
      ('invalid', b'{"instances": [1,', 'JSON Parse error: '),
      ('not_object', b'[1]', 'Is not object'),
      ('no_key', b'{"foo": 1}', "Missing 'inputs' or 'instances' key"),
      ('both', b'{"inputs": [1.0], "instances": [1.0]}',
       "expecting only one of 'inputs' or 'instances'"),
      ('empty_instances', b'{"instances": []}', "No values in 'instances'"),
      ('instances_not_list', b'{"instances": 1}',
       "Excepting 'instances' to be an list/array"),
      ('signature_not_string', b'{"signature_name": 1, "inputs": 1}',
       "'signature_name' key must be a string value"),
      ('type', b'{"instances": ["a"]}',
       'Failed to process element: 0 of \'instances\' list. Error: '
       'INVALID_ARGUMENT: JSON Value: "a" Type: String is not of expected '
       'type: float'),
      ('lossy', b'{"inputs": [16777217]}',
       'Cannot convert JSON value: 16777217 to float without loss of '
       'precision.'),
      ('ragged', b'{"inputs": [[1.0], [2.0, 3.0]]}',
       'Encountered list at unexpected size: 2 at level: 1 expected size: 1'),
      ('deep', b'{"inputs": [[1.0], 2.0]}', 'found at incorrect level: 2'),
      ('shape_mismatch', b'{"instances": [[1.0], [1.0, 2.0]]}',
       'Expecting tensor size: 1 but got: 2'),
      ('bad_b64', b'{"inputs": {"b64": "!!"}}', 'not of expected type'),
  )
  def test_errors_are_invalid_argument_with_tf_serving_wording(
      self, body, message):
    with self.assertRaises(serving_error.ServingError) as cm:
      _predict(body, x=FLOAT)
    self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn(message, cm.exception.message)

  def test_bulk_and_elementwise_paths_agree(self):
    data = np.random.default_rng(0).standard_normal((3, 4, 5))
    _, arrays, _, _ = _predict({'instances': data.tolist()}, x=FLOAT)
    np.testing.assert_array_equal(arrays['x'], data.astype(np.float32))
    # One integer among the decimals takes the element-wise path.
    mixed = data.tolist()
    mixed[1][2][3] = 7
    expected = data.astype(np.float32)
    expected[1, 2, 3] = 7
    _, arrays, _, _ = _predict({'inputs': mixed}, x=FLOAT)
    np.testing.assert_array_equal(arrays['x'], expected)
    _, arrays, _, _ = _predict({'inputs': [[2**40, -3]]},
                               x=types_pb2.DT_INT64)
    np.testing.assert_array_equal(arrays['x'], [[2**40, -3]])
    self.assertEqual(arrays['x'].dtype, np.int64)
    _, arrays, _, _ = _predict({'instances': [[0.5, 1e300]]},
                               x=types_pb2.DT_DOUBLE)
    np.testing.assert_array_equal(arrays['x'], [[0.5, 1e300]])
    for body, dtype, message in (
        ({'inputs': [[1.0, 1e39]]}, FLOAT, 'to float without loss'),
        ({'inputs': [[1, 2**31]]}, types_pb2.DT_INT32,
         'is not of expected type: int32'),
        ({'inputs': [[1, 2**63]]}, types_pb2.DT_INT64,
         'is not of expected type: int64'),
        ({'inputs': [[1.0, True]]}, FLOAT, 'Type: True is not of expected'),
        ({'inputs': [[1.0, None]]}, FLOAT, 'Type: Null is not of expected')):
      with self.assertRaisesRegex(serving_error.ServingError, message):
        _predict(body, x=dtype)

  def test_named_inputs_errors(self):
    with self.assertRaisesRegex(serving_error.ServingError,
                                'instances is a plain list, but expecting'):
      _predict({'instances': [1.0]}, a=FLOAT, b=FLOAT)
    with self.assertRaisesRegex(serving_error.ServingError,
                                'must only have keys: a,b'):
      _predict({'instances': [{'a': 1.0}]}, a=FLOAT, b=FLOAT)
    with self.assertRaisesRegex(serving_error.ServingError,
                                "Missing named input: b in 'inputs' object"):
      _predict({'inputs': {'a': 1.0}}, a=FLOAT, b=FLOAT)
    with self.assertRaisesRegex(serving_error.ServingError,
                                'does not have named input: c'):
      _predict({'instances': [{'a': 1.0, 'c': 1.0}]}, a=FLOAT)

  def test_b64_decode_error(self):
    with self.assertRaisesRegex(serving_error.ServingError,
                                'Unable to base64 decode'):
      _predict({'inputs': {'b64': 'a'}}, x=types_pb2.DT_STRING)

  def test_unsupported_dtype_is_unimplemented(self):
    with self.assertRaises(serving_error.ServingError) as cm:
      _predict({'inputs': [1.0]}, x=types_pb2.DT_COMPLEX64)
    self.assertEqual(cm.exception.code, grpc.StatusCode.UNIMPLEMENTED)
    self.assertIn('to type: complex64', cm.exception.message)


class ExamplesRequestTest(absltest.TestCase):

  def test_examples_with_context(self):
    request = classification_pb2.ClassificationRequest()
    json_tensor.fill_examples_request(json.dumps({
        'signature_name': 's', 'context': {'c': 'ctx'},
        'examples': [{'x': 2.0, 'n': [1, 2], 'b': {'b64': 'AAE='},
                      't': True}]}).encode(), request)
    self.assertEqual(request.model_spec.signature_name, 's')
    with_context = request.input.example_list_with_context
    self.assertEqual(with_context.context.features.feature['c']
                     .bytes_list.value, [b'ctx'])
    feature = with_context.examples[0].features.feature
    self.assertEqual(feature['x'].float_list.value, [2.0])
    self.assertEqual(feature['n'].int64_list.value, [1, 2])
    self.assertEqual(feature['b'].bytes_list.value, [b'\x00\x01'])
    self.assertEqual(feature['t'].int64_list.value, [1])

  def test_examples_without_context_and_errors(self):
    request = regression_pb2.RegressionRequest()
    json_tensor.fill_examples_request(b'{"examples": [{"x": 1}]}', request)
    self.assertLen(request.input.example_list.examples, 1)
    for body, message in (
        (b'{}', "key 'examples' is expected and was not found"),
        (b'{"examples": []}', "'examples' value is an empty array"),
        (b'{"examples": [1]}', 'Example must be JSON object but got JSON '
         'Number'),
        (b'{"examples": [{"x": [1, 2.5]}]}',
         'Unexpected element type in feature: x expecting type: int64'),
        (b'{"examples": [{"x": null}]}', 'unexpected JSON type: Null')):
      with self.assertRaisesRegex(serving_error.ServingError, message):
        json_tensor.fill_examples_request(
            body, regression_pb2.RegressionRequest())


def _tensor(values, dtype=None):
  return tf.make_tensor_proto(np.asarray(values, dtype=dtype))


class ResponseTest(absltest.TestCase):

  def test_single_output_row_and_columnar_without_name(self):
    outputs = {'y': _tensor([[3.0], [3.5]], np.float32)}
    row = json.loads(json_tensor.predict_response_json(
        outputs, json_tensor.PredictFormat.ROW))
    self.assertEqual(row, {'predictions': [[3.0], [3.5]]})
    columnar = json.loads(json_tensor.predict_response_json(
        outputs, json_tensor.PredictFormat.COLUMNAR))
    self.assertEqual(columnar, {'outputs': [[3.0], [3.5]]})

  def test_several_outputs_and_bytes_alias(self):
    outputs = {'score': _tensor([0.5, 1.5], np.float32),
               'img_bytes': _tensor([b'\x00\xff', b'a'], object),
               'label': _tensor([b'x', b'y'], object)}
    row = json.loads(json_tensor.predict_response_json(
        outputs, json_tensor.PredictFormat.ROW))
    self.assertEqual(row['predictions'][0],
                     {'score': 0.5, 'img_bytes': {'b64': 'AP8='},
                      'label': 'x'})
    columnar = json.loads(json_tensor.predict_response_json(
        outputs, json_tensor.PredictFormat.COLUMNAR))
    self.assertEqual(columnar['outputs']['label'], ['x', 'y'])
    self.assertEqual(columnar['outputs']['img_bytes'][1], {'b64': 'YQ=='})

  def test_row_format_needs_a_consistent_batch(self):
    with self.assertRaisesRegex(serving_error.ServingError,
                                'has no shape information'):
      json_tensor.predict_response_json({'y': _tensor(1.0, np.float32)},
                                        json_tensor.PredictFormat.ROW)
    with self.assertRaisesRegex(serving_error.ServingError,
                                'inconsistent batch size: 3 expecting: 2'):
      json_tensor.predict_response_json(
          {'a': _tensor([1, 2]), 'b': _tensor([1, 2, 3])},
          json_tensor.PredictFormat.ROW)

  def test_decimals_round_trip_and_spell_nan(self):
    text = json_tensor.predict_response_json(
        {'y': _tensor([0.2, 3.0, np.nan, -np.inf, 1e-5, 9000000.0],
                      np.float32)}, json_tensor.PredictFormat.COLUMNAR)
    self.assertIn('[0.2, 3.0, NaN, -Infinity, 1e-05, 9e+06]', text)
    self.assertEqual(json_tensor.format_decimal(0.1, False), '0.1')
    # absl's "%.17g" when the 6-digit form does not round-trip.
    self.assertEqual(json_tensor.format_decimal(1 / 3, False),
                     '0.33333333333333331')
    self.assertEqual(
        json_tensor.format_decimal(float(np.float32(1 / 3)), True),
        '0.333333343')

  def test_bulk_decimals_match_format_decimal(self):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(500) * 10.0**rng.integers(
        -12, 12, 500), [0.0, -0.0, 0.2, 3.0, 9e6, np.nan, np.inf, -np.inf]])
    for dtype, is_float32 in ((np.float32, True), (np.float64, False)):
      array = values.astype(dtype)
      text = json_tensor.predict_response_json(
          {'y': _tensor(array)}, json_tensor.PredictFormat.COLUMNAR)
      expected = ', '.join(json_tensor.format_decimal(float(v), is_float32)
                           for v in array)
      self.assertIn(f'[{expected}]', text)

  def test_classification_regression_and_error(self):
    result = classification_pb2.ClassificationResult()
    cls = result.classifications.add().classes.add()
    cls.label, cls.score = '', 3.0
    self.assertEqual(json.loads(json_tensor.classification_json(result)),
                     {'results': [[['', 3.0]]]})
    regression = regression_pb2.RegressionResult()
    regression.regressions.add().value = 3.0
    self.assertEqual(json.loads(json_tensor.regression_json(regression)),
                     {'results': [3.0]})
    self.assertEqual(json.loads(json_tensor.error_json('a "b"\n')),
                     {'error': 'a "b"\n'})

  def test_status_json_keeps_proto_field_names_and_defaults(self):
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = 123
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    status.status.SetInParent()
    self.assertEqual(json.loads(json_tensor.status_json(response)), {
        'model_version_status': [{
            'version': '123', 'state': 'AVAILABLE',
            'status': {'error_code': 'OK', 'error_message': ''}}]})


if __name__ == '__main__':
  absltest.main()
