"""Request execution like TF Serving's C++ runtime, without a server.

Runs on bundles shaped like TF Serving's testdata (tests/testdata), which this
project's merge never wrote: a TF1 half_plus_two whose `x` placeholder is
[None, 1] and whose parse op is the v1 ParseExample, and the stateful counter
whose `delta` has unknown rank.
"""

import tempfile

from absl.testing import absltest
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from python.serve import flags as serve_flags
from python.serve import inference
from python.serve import servable as servable_lib
from python.serve import serving_error
from python.serve import tensor_codec
from tests.testdata import tf_serving_models

_TMP = tempfile.mkdtemp()


def _load(path, **options):
  return servable_lib.load('m', 123, path, ['serve'],
                           options=servable_lib.RuntimeOptions(**options))


def _predict_x(value=2.0, dims=(1,), dtype=types_pb2.DT_FLOAT,
               signature='serving_default', output_filter=('y',)):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'm'
  request.model_spec.signature_name = signature
  tensor = request.inputs['x']
  tensor.dtype = dtype
  if dtype == types_pb2.DT_FLOAT:
    tensor.float_val.append(value)
  else:
    tensor.int_val.append(int(value))
  for size in dims:
    tensor.tensor_shape.dim.add().size = size
  request.output_filter.extend(output_filter)
  return request


def _examples(request, **features):
  example = request.input.example_list.examples.add()
  for key, value in features.items():
    example.features.feature[key].float_list.value.extend(value)
  return request


class TensorCodecTest(absltest.TestCase):

  def test_short_value_list_repeats_the_last_value_like_cpp(self):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 4
    proto.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(tensor_codec.to_ndarray(proto),
                                  [1.0, 2.0, 2.0, 2.0])

  def test_empty_value_list_is_zeros_and_too_many_values_fail(self):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    proto.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(tensor_codec.to_ndarray(proto), [0, 0, 0])
    proto.int64_val.extend([1, 2, 3, 4])
    with self.assertRaisesRegex(tensor_codec.TensorParseError, '4 values'):
      tensor_codec.to_ndarray(proto)

  def test_bad_tensor_content_and_shapes_fail(self):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                   tensor_content=b'\0' * 7)
    proto.tensor_shape.dim.add().size = 2
    with self.assertRaisesRegex(tensor_codec.TensorParseError, '7 bytes'):
      tensor_codec.to_ndarray(proto)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = -1
    with self.assertRaisesRegex(tensor_codec.TensorParseError, 'negative'):
      tensor_codec.to_ndarray(proto)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for _ in range(3):
      proto.tensor_shape.dim.add().size = 1 << 20
    with self.assertRaisesRegex(tensor_codec.TensorParseError, 'more than'):
      tensor_codec.to_ndarray(proto)
    with self.assertRaisesRegex(tensor_codec.TensorParseError, 'DT_VARIANT'):
      tensor_codec.to_ndarray(tensor_pb2.TensorProto(
          dtype=types_pb2.DT_VARIANT))

  def test_outputs_use_typed_fields_unless_tensor_content_is_asked(self):
    value = np.array([[1.5, 2.5]], np.float32)
    proto = tensor_codec.from_ndarray(value)
    self.assertEqual(list(proto.float_val), [1.5, 2.5])
    self.assertEqual(proto.tensor_content, b'')
    self.assertEqual([d.size for d in proto.tensor_shape.dim], [1, 2])
    content = tensor_codec.from_ndarray(value, as_tensor_content=True)
    self.assertEqual(content.tensor_content, value.tobytes())
    self.assertEqual(list(content.float_val), [])

  def test_round_trip_of_every_dtype(self):
    for value in (np.array([1, -2], np.int8), np.array([3], np.uint16),
                  np.array([[True, False]]), np.array([1.25], np.float16),
                  np.array([1 + 2j], np.complex64),
                  np.array([2**40], np.int64), np.array([b'a', b'\xff'],
                                                        dtype=object),
                  np.float64(7.0)):
      back = tensor_codec.to_ndarray(tensor_codec.from_ndarray(value))
      np.testing.assert_array_equal(back, value)
      self.assertEqual(back.dtype, np.asarray(value).dtype)

  def test_cpp_dtype_names(self):
    self.assertEqual(tensor_codec.cpp_dtype_name(types_pb2.DT_FLOAT), 'float')
    self.assertEqual(tensor_codec.cpp_dtype_name(types_pb2.DT_INT32), 'int32')
    self.assertEqual(tensor_codec.cpp_dtype_name(types_pb2.DT_STRING),
                     'string')


class HalfPlusTwoTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    base = f'{_TMP}/half_plus_two'
    cls.servable = _load(tf_serving_models.write_half_plus_two(base))
    cls.checked = _load(f'{base}/00000123',
                        enable_signature_method_name_check=True,
                        serialize_as_tensor_content=True,
                        remove_unused_fields_from_bundle_metagraph=False)

  def test_canonical_predict_feeds_shape_1_into_none_by_1(self):
    # TF Serving's suite and tutorials: x float [1] into [None, 1].
    response = inference.predict(self.servable, _predict_x())
    self.assertEqual(response.outputs['y'].dtype, types_pb2.DT_FLOAT)
    self.assertEqual(list(response.outputs['y'].float_val), [3.0])
    self.assertEqual(response.model_spec.signature_name, 'serving_default')
    self.assertEqual(response.model_spec.version.value, 123)
    batch = inference.predict(self.servable, _predict_x(dims=(1, 1)),)
    self.assertEqual(list(batch.outputs['y'].float_val), [3.0])

  def test_no_output_filter_fetches_every_output(self):
    response = inference.predict(self.servable, _predict_x(output_filter=()))
    self.assertEqual(sorted(response.outputs), ['y'])

  def test_tensor_content_option(self):
    response = inference.predict(self.checked, _predict_x())
    self.assertEqual(list(response.outputs['y'].float_val), [])
    self.assertEqual(tensor_codec.to_ndarray(response.outputs['y']).tolist(),
                     [3.0])

  def test_wrong_dtype_gets_the_runtime_message(self):
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.predict(self.servable, _predict_x(dtype=types_pb2.DT_INT32))
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Expects arg[0] to be float but int32 is provided',
                  ctx.exception.message)

  def test_wrong_alias_gets_tf_servings_message(self):
    request = _predict_x()
    request.inputs['images'].CopyFrom(request.inputs['x'])
    del request.inputs['x']
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.predict(self.servable, request)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Signature input alias: x(feed name: x:0) not found in '
                  'request', ctx.exception.message)

  def test_extra_input_and_bad_filter(self):
    request = _predict_x()
    request.inputs['z'].CopyFrom(request.inputs['x'])
    with self.assertRaisesRegex(serving_error.ServingError,
                                'input size does not match signature: 2!=1'):
      inference.predict(self.servable, request)
    with self.assertRaisesRegex(serving_error.ServingError,
                                'output tensor alias not found in signature'):
      inference.predict(self.servable, _predict_x(output_filter=('nope',)))
    with self.assertRaisesRegex(serving_error.ServingError,
                                'duplicate output tensor alias: y'):
      inference.predict(self.servable, _predict_x(output_filter=('y', 'y')))

  def test_unknown_signature_is_failed_precondition(self):
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.predict(self.servable, _predict_x(signature='nope'))
    self.assertEqual(ctx.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
    self.assertIn('Serving signature key "nope" not found',
                  ctx.exception.message)

  def test_garbage_examples_get_tensorflows_parse_error(self):
    # A classify signature answers Predict; garbage examples get
    # TensorFlow's parse error, not a Python UTF-8 error.
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = 'classify_x_to_y'
    request.inputs['inputs'].CopyFrom(tensor_codec.from_ndarray(
        np.array([b'\xff\xfe not an example'], dtype=object)))
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.predict(self.servable, request)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Could not parse example input', ctx.exception.message)

  def test_classify_and_regress(self):
    classify = _examples(classification_pb2.ClassificationRequest(), x=[2.0])
    classify.model_spec.signature_name = 'classify_x_to_y'
    result = inference.classify(self.servable, classify)
    self.assertEqual(result.result.classifications[0].classes[0].score, 3.0)
    regress = _examples(regression_pb2.RegressionRequest(), x=[2.0])
    regress.model_spec.signature_name = 'regress_x_to_y2'
    self.assertEqual(
        inference.regress(self.servable, regress).result.regressions[0].value,
        4.0)

  def test_classify_missing_feature_names_it(self):
    classify = _examples(classification_pb2.ClassificationRequest(), y=[2.0])
    classify.model_spec.signature_name = 'classify_x_to_y'
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.classify(self.servable, classify)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Feature: x (data type: float) is required',
                  ctx.exception.message)

  def test_multi_inference_over_tasks_with_different_inputs(self):
    request = _examples(inference_pb2.MultiInferenceRequest(), x=[2.0])
    for signature, method in (('regress_x_to_y', inference.REGRESS_METHOD),
                              ('classify_x_to_y', inference.CLASSIFY_METHOD),
                              ('regress_x_to_y2', inference.REGRESS_METHOD)):
      task = request.tasks.add()
      task.model_spec.name = 'm'
      task.model_spec.signature_name = signature
      task.method_name = method
    response = inference.multi_inference(self.servable, request)
    self.assertEqual(
        response.results[0].regression_result.regressions[0].value, 3.0)
    self.assertEqual(response.results[1].classification_result
                     .classifications[0].classes[0].score, 3.0)
    self.assertEqual(
        response.results[2].regression_result.regressions[0].value, 4.0)

  def test_metadata_packs_every_signature_of_the_version(self):
    # GetModelMetadata in process, as both APIs answer it: the resolved
    # version and the whole SignatureDefMap, packed under 'signature_def'.
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = 'm'
    request.metadata_field.append(inference.SIGNATURE_DEF_FIELD)
    inference.validate_metadata_request(request)
    response = inference.get_model_metadata(self.servable, request)
    self.assertEqual(response.model_spec.name, 'm')
    self.assertEqual(response.model_spec.version.value, 123)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    self.assertTrue(
        response.metadata[inference.SIGNATURE_DEF_FIELD].Unpack(signature_map))
    self.assertEqual(set(signature_map.signature_def),
                     set(self.servable.signatures))
    self.assertIn('serving_default', signature_map.signature_def)
    self.assertEqual(signature_map.signature_def['serving_default'],
                     self.servable.signatures['serving_default'])

  def test_metadata_request_without_or_with_unknown_field_fails(self):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = 'm'
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.validate_metadata_request(request)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('must specify at least one metadata_field',
                  ctx.exception.message)
    request.metadata_field.append('nope')
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.validate_metadata_request(request)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Metadata field nope is not supported',
                  ctx.exception.message)

  def test_unused_metagraph_fields_are_dropped_by_default(self):
    self.assertFalse(self.servable.meta_graph_def.HasField('graph_def'))
    self.assertTrue(self.checked.meta_graph_def.HasField('graph_def'))
    self.assertEqual(sorted(self.servable.signatures),
                     list(tf_serving_models.HALF_PLUS_TWO_SIGNATURES))

  def test_callables_are_cached_per_deadline_bucket(self):
    self.assertEqual(servable_lib._timeout_bucket_ms(None), 0)
    self.assertEqual(servable_lib._timeout_bucket_ms(0.0001), 1)
    self.assertEqual(servable_lib._timeout_bucket_ms(0.3), 512)
    self.assertEqual(servable_lib._timeout_bucket_ms(0.512), 512)
    fresh = _load(f'{_TMP}/half_plus_two/00000123')
    for _ in range(3):
      inference.predict(fresh, _predict_x(), timeout_s=5.0)
    inference.predict(fresh, _predict_x())
    self.assertLen(fresh._callables, 2)


class MethodNameCheckTest(absltest.TestCase):

  def test_unknown_method_name_runs_unless_the_check_is_on(self):
    export_dir = f'{_TMP}/custom_method/1'
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name='x')
      y = tf.identity(x * 2.0, name='y')
      signature = tf.compat.v1.saved_model.build_signature_def(
          {'x': tf.compat.v1.saved_model.build_tensor_info(x)},
          {'y': tf.compat.v1.saved_model.build_tensor_info(y)},
          'custom/method')
      with tf.compat.v1.Session(graph=graph) as sess:
        builder = tf.compat.v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            sess, ['serve'], signature_def_map={'serving_default': signature})
        builder.save()
    request = _predict_x(output_filter=())
    answer = inference.predict(_load(export_dir), request)
    self.assertEqual(list(answer.outputs['y'].float_val), [4.0])
    with self.assertRaises(serving_error.ServingError) as ctx:
      inference.predict(
          _load(export_dir, enable_signature_method_name_check=True), request)
    self.assertEqual(ctx.exception.code, grpc.StatusCode.INTERNAL)
    self.assertIn('Expected prediction signature method_name to be one of',
                  ctx.exception.message)


class CounterTest(absltest.TestCase):

  def test_stateful_signatures_with_an_unknown_rank_input(self):
    servable = _load(tf_serving_models.write_counter(f'{_TMP}/counter'))

    def call(signature, delta=None):
      request = predict_pb2.PredictRequest()
      request.model_spec.signature_name = signature
      if delta is not None:
        request.inputs['delta'].CopyFrom(tensor_codec.from_ndarray(
            np.float32(delta)))
      return tensor_codec.to_ndarray(
          inference.predict(servable, request).outputs['output']).tolist()

    self.assertEqual(call('incr_counter'), 1.0)
    self.assertEqual(call('incr_counter_by', 3.0), 4.0)
    self.assertEqual(call('get_counter'), 4.0)
    self.assertEqual(call('reset_counter'), 0.0)


class FlagsTest(absltest.TestCase):

  def test_channel_arguments_parse_like_tf_serving(self):
    self.assertEqual(
        serve_flags.parse_channel_arguments(
            'grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb'),
        [('grpc.max_connection_age_ms', 2000),
         ('grpc.lb_policy_name', 'grpclb')])
    self.assertEqual(serve_flags.parse_channel_arguments(''), [])
    with self.assertRaisesRegex(ValueError, 'not key=value'):
      serve_flags.parse_channel_arguments('grpc.x')

  def test_every_main_cc_flag_is_defined(self):
    # The flags of tensorflow_serving/model_servers/main.cc.
    main_cc = (
        'port grpc_socket_path rest_api_port rest_api_num_threads '
        'rest_api_timeout_in_ms rest_api_enable_cors_support enable_batching '
        'allow_version_labels_for_unavailable_models batching_parameters_file '
        'enable_per_model_batching_parameters model_config_file '
        'model_config_file_poll_wait_seconds model_name model_base_path '
        'num_load_threads num_unload_threads max_num_load_retries '
        'load_retry_interval_micros file_system_poll_wait_seconds '
        'flush_filesystem_caches tensorflow_session_parallelism '
        'tensorflow_session_config_file tensorflow_intra_op_parallelism '
        'tensorflow_inter_op_parallelism use_alts_credentials '
        'ssl_config_file platform_config_file '
        'per_process_gpu_memory_fraction saved_model_tags '
        'grpc_channel_arguments grpc_max_threads enable_model_warmup '
        'num_request_iterations_for_warmup version monitoring_config_file '
        'remove_unused_fields_from_bundle_metagraph prefer_tflite_model '
        'num_tflite_pools num_tflite_interpreters_per_pool '
        'enable_signature_method_name_check xla_cpu_compilation_enabled '
        'xla_gpu_compilation_enabled enable_profiler '
        'thread_pool_factory_config_file mixed_precision skip_initialize_tpu '
        'enable_grpc_healthcheck_service '
        'enable_serialization_as_tensor_content').split()
    defined = {name for name in serve_flags.flags.FLAGS}
    self.assertEmpty(set(main_cc) - defined)


if __name__ == '__main__':
  absltest.main()
