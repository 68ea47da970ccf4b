"""Tests of the input-synthesis policy: every parse op kind accepts its input.

  bazel test //python/common:synthesis_test
"""

import numpy as np
import tensorflow as tf

from absl.testing import absltest
from absl.testing import parameterized

from python.common import synthesis

_v1 = tf.compat.v1


def _run(graph, fetches, feeds):
  with _v1.Session(graph=graph) as sess:
    return sess.run(fetches, feed_dict=feeds)


class ParseOpsTest(parameterized.TestCase):

  def _example(self, graph, tensor="serialized:0"):
    return synthesis.GraphSynthesizer(graph.as_graph_def()).example_for(tensor)

  def test_v1_parse_example_keys_from_consts_through_identities(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      hop = tf.identity(tf.identity(serialized))
      parsed = tf.raw_ops.ParseExample(
          serialized=hop, names=tf.constant([], tf.string),
          sparse_keys=[tf.identity(tf.constant("ids"))],
          dense_keys=[tf.constant("x"), tf.constant("word")],
          dense_defaults=[tf.constant([], tf.float32),
                          tf.constant([], tf.string)],
          sparse_types=[tf.int64], dense_shapes=[[2, 3], [1]])
    data = self._example(graph)
    example = tf.train.Example.FromString(data)
    features = example.features.feature
    self.assertEqual(sorted(features), ["ids", "word", "x"])
    self.assertEqual(list(features["x"].float_list.value), [0.5] * 6)
    self.assertEqual(list(features["word"].bytes_list.value), [b"a"])
    self.assertEqual(list(features["ids"].int64_list.value), [1])
    # Map entries in bytewise key order, as C++ serializes deterministically.
    keys = [e for e in (b"\n\x03ids", b"\n\x04word", b"\n\x01x")]
    positions = [data.index(k) for k in keys]
    self.assertEqual(positions, sorted(positions))
    self.assertEqual(tf.train.Example.FromString(data), example)
    values = _run(graph, parsed.dense_values, {serialized: [data]})
    self.assertEqual(values[0].shape, (1, 2, 3))

  def test_parse_example_v2_inside_a_function_body(self):
    spec = {"x": tf.io.FixedLenFeature([1], tf.float32),
            "tags": tf.io.VarLenFeature(tf.string),
            "r": tf.io.RaggedFeature(tf.int64)}

    @tf.function
    def parse(serialized):
      return tf.io.parse_example(serialized, spec)["x"]

    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      x = parse(tf.identity(serialized))
    graph_def = graph.as_graph_def()
    self.assertTrue(any(n.op in ("PartitionedCall", "StatefulPartitionedCall")
                        for n in graph_def.node))
    data = self._example(graph)
    features = tf.train.Example.FromString(data).features.feature
    self.assertEqual(sorted(features), ["r", "tags", "x"])
    self.assertEqual(_run(graph, x, {serialized: [data]}).tolist(), [[0.5]])

  def test_parse_single_example_keys_in_attrs(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [], name="serialized")
      parsed = tf.raw_ops.ParseSingleExample(
          serialized=serialized, dense_defaults=[tf.constant([], tf.int64)],
          num_sparse=1, sparse_keys=["s"], dense_keys=["k"],
          sparse_types=[tf.float32], dense_shapes=[[4]])
    data = self._example(graph)
    features = tf.train.Example.FromString(data).features.feature
    self.assertEqual(list(features["k"].int64_list.value), [1] * 4)
    self.assertEqual(list(features["s"].float_list.value), [0.5])
    self.assertEqual(
        _run(graph, parsed.dense_values[0], {serialized: data}).tolist(),
        [1] * 4)

  def test_parse_sequence_example_v1_keys_in_attrs(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      parsed = tf.raw_ops.ParseSequenceExample(
          serialized=serialized, debug_name=tf.constant([], tf.string),
          context_dense_defaults=[tf.constant([], tf.float32)],
          feature_list_dense_missing_assumed_empty=[],
          context_sparse_keys=["cs"], context_dense_keys=["cd"],
          feature_list_sparse_keys=["fs"], feature_list_dense_keys=["fd"],
          Ncontext_sparse=1, Ncontext_dense=1, Nfeature_list_sparse=1,
          Nfeature_list_dense=1, context_sparse_types=[tf.string],
          feature_list_dense_types=[tf.int64], context_dense_shapes=[[2]],
          feature_list_sparse_types=[tf.float32],
          feature_list_dense_shapes=[[3]])
    data = self._example(graph)
    sequence = tf.train.SequenceExample.FromString(data)
    self.assertEqual(sorted(sequence.context.feature), ["cd", "cs"])
    self.assertLen(sequence.context.feature["cd"].float_list.value, 2)
    lists = sequence.feature_lists.feature_list
    self.assertEqual(sorted(lists), ["fd", "fs"])
    self.assertLen(lists["fd"].feature, 1)
    self.assertEqual(list(lists["fd"].feature[0].int64_list.value), [1] * 3)
    fd = _run(graph, parsed.feature_list_dense_values[0], {serialized: [data]})
    self.assertEqual(fd.shape, (1, 1, 3))

  def test_parse_sequence_example_v2_keys_from_consts(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      context, lists, _ = tf.io.parse_sequence_example(
          serialized,
          context_features={"c": tf.io.FixedLenFeature([], tf.int64)},
          sequence_features={
              "f": tf.io.FixedLenSequenceFeature([2], tf.float32),
              "r": tf.io.RaggedFeature(tf.string)})
    self.assertIn("ParseSequenceExampleV2",
                  [n.op for n in graph.as_graph_def().node])
    data = self._example(graph)
    sequence = tf.train.SequenceExample.FromString(data)
    self.assertEqual(list(sequence.context.feature), ["c"])
    self.assertEqual(sorted(sequence.feature_lists.feature_list), ["f", "r"])
    f = _run(graph, lists["f"], {serialized: [data]})
    self.assertEqual(f.tolist(), [[[0.5, 0.5]]])
    self.assertEqual(_run(graph, context["c"], {serialized: [data]}).tolist(),
                     [1])

  def test_keys_that_are_not_constants_contribute_nothing(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      key = _v1.placeholder(tf.string, [], name="key")
      tf.raw_ops.ParseExample(
          serialized=serialized, names=tf.constant([], tf.string),
          sparse_keys=[], dense_keys=[key],
          dense_defaults=[tf.constant([], tf.float32)], sparse_types=[],
          dense_shapes=[[1]])
    with self.assertLogs(level="WARNING") as logs:
      self.assertEqual(self._example(graph), b"")
    self.assertIn("not a constant", "\n".join(logs.output))

  def test_no_parse_op_gives_empty_bytes(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      tf.strings.length(serialized)
    self.assertEqual(self._example(graph), b"")


class ShapesAndValuesTest(parameterized.TestCase):

  def test_known_shape_fills_batch_then_ones(self):
    self.assertEqual(synthesis.known_shape([-1, 3, -1], batch_size=4),
                     (4, 3, 1))
    self.assertEqual(synthesis.known_shape([]), ())

  def test_unknown_rank_candidates_in_order(self):
    self.assertEqual(synthesis.unknown_rank_candidates(), [(), (1,)])
    self.assertEqual(synthesis.unknown_rank_candidates((2, 2), batch_size=3),
                     [(2, 2), (), (1,), (3,)])
    self.assertEqual(synthesis.unknown_rank_candidates(()), [(), (1,)])

  def test_shape_derived_from_assignment_to_scalar_variable(self):
    graph = tf.Graph()
    with graph.as_default():
      counter = _v1.Variable(0.0, name="counter", use_resource=False)
      delta = _v1.placeholder(tf.float32, shape=None, name="delta")
      counter.assign_add(tf.identity(delta))
      table = _v1.Variable(tf.zeros([2, 3]), name="table", use_resource=True)
      value = _v1.placeholder(tf.float32, shape=None, name="value")
      table.assign(value)
      free = _v1.placeholder(tf.float32, shape=None, name="free")
      tf.abs(free)
    synth = synthesis.GraphSynthesizer(graph.as_graph_def())
    self.assertEqual(synth.derived_shape("delta:0"), ())
    self.assertEqual(synth.candidate_shapes("delta:0", None), [(), (1,)])
    self.assertEqual(synth.derived_shape("value:0"), (2, 3))
    self.assertEqual(synth.candidate_shapes("value:0", None)[0], (2, 3))
    self.assertIsNone(synth.derived_shape("free:0"))
    self.assertEqual(synth.candidate_shapes("free:0", [-1, 2]), [(1, 2)])

  @parameterized.parameters(tf.float32, tf.float16, tf.bfloat16, tf.float64,
                            tf.complex64)
  def test_floats_are_small_positive_and_exact(self, dtype):
    value = synthesis.dense_values(dtype, (2, 5))
    self.assertEqual(value.shape, (2, 5))
    expected = [0.25 + (i % 7) / 8 for i in range(10)]
    np.testing.assert_array_equal(
        np.real(value.astype(np.complex128)).reshape(-1), expected)

  @parameterized.parameters(tf.int32, tf.int64, tf.uint8, tf.bool)
  def test_integers_and_bools_are_zero(self, dtype):
    value = synthesis.dense_values(dtype, (3,))
    self.assertFalse(value.any())
    self.assertEqual(value.dtype, dtype.as_numpy_dtype)

  def test_string_input_value_repeats_the_example(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = _v1.placeholder(tf.string, [None], name="serialized")
      tf.raw_ops.ParseSingleExample(
          serialized=serialized[0], dense_defaults=[tf.constant([], tf.int64)],
          num_sparse=0, sparse_keys=[], dense_keys=["k"], sparse_types=[],
          dense_shapes=[[]])
    synth = synthesis.GraphSynthesizer(graph.as_graph_def())
    value = synth.input_candidates("serialized:0", tf.string, [-1],
                                   batch_size=2)
    self.assertLen(value, 1)
    self.assertEqual(value[0].shape, (2,))
    self.assertEqual(value[0][0], synth.example_for("serialized:0"))
    self.assertNotEqual(value[0][0], b"")


if __name__ == "__main__":
  absltest.main()
