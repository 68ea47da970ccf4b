"""Tests for client_lib against an in-process fake PredictionService.

The end-to-end tests against the project's server are in
tests/client_e2e_test.py.
"""

import socket
import time

from absl.testing import absltest
from absl.testing import parameterized
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from client import client_lib
from client import fake_server_testlib


def _unused_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class ServingClientTest(fake_server_testlib.ServerTestCase):

  def test_metadata_lists_every_signature_with_dtypes_and_shapes(self):
    metadata = self.make_client().metadata()
    self.assertEqual(metadata.model_name, "toy")
    self.assertEqual(metadata.version, 2)
    self.assertEqual(list(metadata.signatures), ["blob", "cls", "reg", "scale"])
    scale = metadata.signatures["scale"]
    self.assertEqual(scale.method, "predict")
    self.assertEqual(scale.inputs["x"].dtype, tf.float32)
    self.assertEqual(scale.inputs["x"].shape, (-1, 3))
    self.assertEqual(scale.inputs["x"].describe(), "float32[-1,3]")
    self.assertEqual(sorted(scale.outputs), ["n", "tag", "y"])
    self.assertIsNone(metadata.signatures["blob"].inputs["data"].shape)
    self.assertEqual(metadata.signatures["cls"].method, "classify")
    self.assertTrue(metadata.signatures["reg"].takes_examples)
    self.assertFalse(scale.takes_examples)

  @parameterized.parameters(1, 4)
  def test_sample_inputs_fill_unknown_dimensions_with_batch_size(self, batch):
    inputs = self.make_client().sample_inputs("scale", batch_size=batch)
    self.assertEqual(list(inputs), ["x"])
    self.assertEqual(inputs["x"].shape, (batch, 3))
    self.assertEqual(inputs["x"].dtype, np.float32)

  def test_sample_inputs_for_unknown_rank_asks_for_input(self):
    with self.assertRaisesRegex(
        client_lib.InputError,
        r"input 'data' \(blob/data:0\) of signature 'blob' has unknown rank"
        r".*--input=blob:data=FILE.npy"):
      self.make_client().sample_inputs("blob")

  def test_predict_returns_outputs_and_answering_version(self):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = self.make_client().predict("scale", {"x": x})
    self.assertEqual(result.model_version, 2)
    np.testing.assert_allclose(result.outputs["y"], 2 * x)
    np.testing.assert_array_equal(result.outputs["n"], [2, 2])
    self.assertEqual(list(result.outputs["tag"]), [b"v2", b"v2"])
    self.assertGreater(result.latency_s, 0)

  def test_predict_converts_lists_and_ints_to_the_signature_dtype(self):
    result = self.make_client().predict("scale", {"x": [[1, 2, 3]]})
    self.assertEqual(result.outputs["y"].dtype, np.float32)
    np.testing.assert_allclose(result.outputs["y"], [[2, 4, 6]])

  def test_predict_output_filter(self):
    result = self.make_client().predict("scale", {"x": [[1, 2, 3]]},
                                        output_filter=["n"])
    self.assertEqual(list(result.outputs), ["n"])

  @parameterized.named_parameters(
      ("model_version", {"model_version": 1}, 1),
      ("version_label", {"version_label": "stable"}, 1),
      ("latest", {}, 2))
  def test_pinned_version_answers(self, kwargs, version):
    client = self.make_client(**kwargs)
    result = client.predict("scale", {"x": [[1.0, 1.0, 1.0]]})
    self.assertEqual(result.model_version, version)
    np.testing.assert_allclose(result.outputs["y"], [[version] * 3])

  def test_predict_names_extra_and_missing_inputs(self):
    with self.assertRaisesRegex(
        client_lib.InputError,
        r"Sent extra: \['z'\]. Missing but required: \['x'\]"):
      self.make_client().predict("scale", {"z": [[1.0]]})

  def test_predict_refuses_lossy_conversion(self):
    with self.assertRaisesRegex(
        client_lib.InputError,
        r"input 'x' of signature 'scale' wants float32; got complex128"):
      self.make_client().predict("scale", {"x": np.ones((1, 3), complex)})

  def test_predict_shape_mismatch_names_dimension(self):
    with self.assertRaisesRegex(
        client_lib.InputError,
        r"wants float32\[-1,3\]; got shape \[1, 4\] \(dimension 1 must be 3\)"):
      self.make_client().predict("scale", {"x": np.ones((1, 4))})

  def test_classify_builds_examples_from_features(self):
    result = self.make_client().classify(
        "cls", {"f": np.array([[0.2, 0.4], [1.0, 1.0]], np.float32)})
    self.assertEqual(result.method, "classify")
    self.assertEqual(result.outputs["classes"].tolist(),
                     [[b"lo", b"hi"], [b"lo", b"hi"]])
    np.testing.assert_allclose(result.outputs["scores"],
                               [[0.7, 0.3], [0.0, 1.0]], atol=1e-6)

  def test_classify_accepts_serialized_examples(self):
    example = example_pb2.Example()
    example.features.feature["f"].float_list.value.extend([0.5])
    result = self.make_client().classify(
        "cls", {"inputs": np.array([example.SerializeToString()] * 3,
                                   dtype=object)})
    np.testing.assert_allclose(result.outputs["scores"], [[0.5, 0.5]] * 3)

  def test_regress_through_run_dispatches_on_method(self):
    client = self.make_client(model_version=1)
    result = client.run("reg", {"f": np.array([[1.0, 2.0], [3.0, 4.0]])})
    self.assertEqual(result.method, "regress")
    self.assertEqual(result.model_version, 1)
    np.testing.assert_allclose(result.outputs["outputs"], [3.0, 7.0])

  def test_regress_without_features_sends_batch_size_empty_examples(self):
    result = self.make_client().regress("reg", {}, batch_size=3)
    np.testing.assert_array_equal(result.outputs["outputs"], [0, 0, 0])

  def test_unknown_model_raises_not_found_with_server_message(self):
    with self.assertRaises(client_lib.RpcError) as cm:
      self.make_client(model_name="nope").metadata()
    self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
    self.assertIn("Servable not found for request: Latest(nope)",
                  str(cm.exception))

  def test_unknown_signature_lists_choices_and_closest(self):
    with self.assertRaisesRegex(
        client_lib.SignatureError,
        r"has no signature 'scal'; it has: blob, cls, reg, scale\. "
        r"Did you mean 'scale'\?"):
      self.make_client().signature("scal")

  def test_first_call_retries_while_unavailable(self):
    self.server.servicer.fail_next(grpc.StatusCode.UNAVAILABLE, 2)
    before = self.server.servicer.calls["GetModelMetadata"]
    metadata = self.make_client(wait_for_server_s=5.0).metadata()
    self.assertIn("scale", metadata.signatures)
    self.assertEqual(self.server.servicer.calls["GetModelMetadata"] - before, 3)

  def test_later_unavailable_is_not_retried(self):
    client = self.make_client()
    client.metadata()
    self.server.servicer.fail_next(grpc.StatusCode.UNAVAILABLE, 1)
    before = self.server.servicer.calls["Predict"]
    with self.assertRaises(client_lib.RpcError) as cm:
      client.predict("scale", {"x": [[1.0, 2.0, 3.0]]})
    self.assertEqual(cm.exception.code, grpc.StatusCode.UNAVAILABLE)
    self.assertEqual(self.server.servicer.calls["Predict"] - before, 1)

  def test_other_errors_are_not_retried_at_connect(self):
    self.server.servicer.fail_next(grpc.StatusCode.INTERNAL, 1)
    before = self.server.servicer.calls["GetModelMetadata"]
    with self.assertRaises(client_lib.RpcError) as cm:
      self.make_client().metadata()
    self.assertEqual(cm.exception.code, grpc.StatusCode.INTERNAL)
    self.assertNotIsInstance(cm.exception, client_lib.ConnectError)
    self.assertEqual(self.server.servicer.calls["GetModelMetadata"] - before, 1)

  def test_unreachable_server_fails_at_once(self):
    address = f"127.0.0.1:{_unused_port()}"
    client = client_lib.ServingClient(address, "toy", timeout_s=30.0)
    self.addCleanup(client.close)
    start = time.monotonic()
    with self.assertRaisesRegex(
        client_lib.ConnectError,
        rf"could not reach the server at {address} \(1 attempt; last error "
        r"UNAVAILABLE: .*--wait_for_server=SECONDS"):
      client.metadata()
    # Not the 30 s deadline: nothing listens, so one attempt says so.
    self.assertLess(time.monotonic() - start, 3)

  def test_wait_for_server_retries_for_that_long(self):
    address = f"127.0.0.1:{_unused_port()}"
    client = client_lib.ServingClient(address, "toy", timeout_s=30.0,
                                      wait_for_server_s=1.5)
    self.addCleanup(client.close)
    start = time.monotonic()
    with self.assertRaises(client_lib.ConnectError) as cm:
      client.metadata()
    elapsed = time.monotonic() - start
    self.assertGreater(cm.exception.attempts, 1)
    self.assertGreaterEqual(elapsed, 0.5)
    self.assertLess(elapsed, 5)

  @parameterized.named_parameters(
      ("both_versions", {"model_version": 1, "version_label": "a"},
       "not both"),
      ("cert_without_tls", {"root_cert": b"x"}, "enable tls"),
      ("half_mutual_tls", {"tls": True, "client_cert": b"x"},
       "give both or neither"),
      ("bad_timeout", {"timeout_s": 0}, "timeout_s must be > 0"))
  def test_bad_arguments(self, kwargs, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      client_lib.ServingClient("localhost:1", "toy", **kwargs)


class ExamplesFromFeaturesTest(parameterized.TestCase):

  def test_rows_become_examples_by_dtype(self):
    examples = client_lib.examples_from_features({
        "f": np.array([[1.5, 2.5], [3.5, 4.5]], np.float32),
        "i": np.array([7, 8]),
        "s": np.array(["a", "b"]),
    })
    self.assertLen(examples, 2)
    second = examples[1].features.feature
    self.assertEqual(list(second["f"].float_list.value), [3.5, 4.5])
    self.assertEqual(list(second["i"].int64_list.value), [8])
    self.assertEqual(list(second["s"].bytes_list.value), [b"b"])

  def test_no_features_gives_empty_examples(self):
    examples = client_lib.examples_from_features({}, batch_size=2)
    self.assertEqual(examples, [example_pb2.Example()] * 2)

  @parameterized.named_parameters(
      ("batch_mismatch", {"a": np.ones(2), "b": np.ones(3)},
       r"disagree on the batch size.*a=2, b=3"),
      ("scalar", {"a": np.float32(1)}, r"feature 'a' is a scalar"))
  def test_errors(self, features, pattern):
    with self.assertRaisesRegex(client_lib.InputError, pattern):
      client_lib.examples_from_features(features)


class SampleArrayTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("float", tf.float32, np.float32),
      ("int", tf.int64, np.int64),
      ("bool", tf.bool, np.bool_),
      ("string", tf.string, object))
  def test_dtype_and_shape(self, dtype, np_dtype):
    spec = client_lib.TensorSpec("t:0", dtype, (-1, 2, -1))
    array = client_lib.sample_array(spec, batch_size=3)
    self.assertEqual(array.shape, (3, 2, 3))
    self.assertEqual(array.dtype, np_dtype)


if __name__ == "__main__":
  absltest.main()
