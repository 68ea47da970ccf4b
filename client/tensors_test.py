"""Tests for tensors: input coercion, samples and tf.Examples, no server."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from client import serving_types
from client import tensors

_SIGNATURE = serving_types.Signature(
    "sig", serving_types.PREDICT, inputs={}, outputs={})


def _spec(dtype, shape):
  return serving_types.TensorSpec("t:0", dtype, shape)


class CoerceInputTest(parameterized.TestCase):

  def test_same_kind_cast_to_the_signature_dtype(self):
    array = tensors.coerce_input(_SIGNATURE, "x", _spec(tf.float32, (-1, 2)),
                                 np.ones((3, 2), np.float64))
    self.assertEqual(array.dtype, np.float32)
    self.assertEqual(array.shape, (3, 2))

  def test_safe_widening_from_a_list(self):
    array = tensors.coerce_input(_SIGNATURE, "x", _spec(tf.int64, (2,)),
                                 [1, 2])
    self.assertEqual(array.dtype, np.int64)
    np.testing.assert_array_equal(array, [1, 2])

  def test_strings_become_bytes(self):
    array = tensors.coerce_input(_SIGNATURE, "s", _spec(tf.string, (-1,)),
                                 ["a", b"b"])
    self.assertEqual(array.dtype, object)
    self.assertEqual(list(array), [b"a", b"b"])

  def test_unknown_rank_takes_any_shape(self):
    array = tensors.coerce_input(_SIGNATURE, "x", _spec(tf.float32, None),
                                 np.ones((2, 3, 4)))
    self.assertEqual(array.shape, (2, 3, 4))

  @parameterized.named_parameters(
      ("lossy", tf.int32, (-1,), np.array([1.5]),
       r"input 'x' of signature 'sig' wants int32; got float64, which does "
       r"not convert without losing values. Save the input as int32."),
      ("strings_to_number", tf.float32, (-1,), np.array(["a"]),
       r"wants float32; got <U1 \(strings\)"),
      ("number_to_string", tf.string, (-1,), np.array([1.0]),
       r"wants strings \(DT_STRING\); got float64"),
      ("rank", tf.float32, (-1, 2), np.ones(2),
       r"wants rank 2 \(float32\[-1,2\]\); got shape \[2\]"),
      ("dimension", tf.float32, (-1, 2), np.ones((1, 3)),
       r"wants float32\[-1,2\]; got shape \[1, 3\] \(dimension 1 must be "
       r"2\)"))
  def test_refused(self, dtype, shape, value, pattern):
    with self.assertRaisesRegex(serving_types.InputError, pattern):
      tensors.coerce_input(_SIGNATURE, "x", _spec(dtype, shape), value)


class SampleArrayTest(parameterized.TestCase):

  def test_unknown_dimensions_take_the_batch_size(self):
    array = tensors.sample_array(_spec(tf.float32, (-1, 4)), batch_size=5)
    self.assertEqual(array.shape, (5, 4))
    self.assertEqual(array.dtype, np.float32)

  def test_seeded_by_default(self):
    spec = _spec(tf.float64, (3,))
    np.testing.assert_array_equal(tensors.sample_array(spec),
                                  tensors.sample_array(spec))

  def test_values_by_dtype(self):
    ints = tensors.sample_array(_spec(tf.int32, (100,)))
    self.assertTrue(((ints >= 0) & (ints < 10)).all())
    strings = tensors.sample_array(_spec(tf.string, (2,)))
    self.assertEqual(list(strings), [b"sample", b"sample"])
    self.assertEqual(tensors.sample_array(_spec(tf.complex64, (1,))).dtype,
                     np.complex64)

  @parameterized.named_parameters(
      ("unknown_rank", _spec(tf.float32, None), r"'t:0' has unknown rank"),
      ("no_sample", _spec(tf.resource, (1,)),
       r"has dtype resource, for which the client makes no sample"))
  def test_refused(self, spec, pattern):
    with self.assertRaisesRegex(serving_types.InputError, pattern):
      tensors.sample_array(spec)


class ExamplesFromFeaturesTest(absltest.TestCase):

  def test_booleans_and_bytes(self):
    examples = tensors.examples_from_features({
        "b": np.array([[True, False]]),
        "s": np.array([b"x"], dtype=object),
    })
    feature = examples[0].features.feature
    self.assertEqual(list(feature["b"].int64_list.value), [1, 0])
    self.assertEqual(list(feature["s"].bytes_list.value), [b"x"])

  def test_unsupported_dtype(self):
    with self.assertRaisesRegex(serving_types.InputError,
                                r"feature 'c' has dtype complex128"):
      tensors.examples_from_features({"c": np.array([1j])})


if __name__ == "__main__":
  absltest.main()
