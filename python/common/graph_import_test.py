"""Tests for graph_import: only named nodes get Python Operations."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from python.common import graph_import

_v1 = tf.compat.v1


def _graph_def() -> bytes:
  graph = tf.Graph()
  with graph.as_default():
    x = _v1.placeholder(tf.float32, [None, 3], name="x")
    with tf.device("/device:CPU:0"):
      w = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
    hidden = tf.matmul(x, w, name="hidden")
    tf.nn.relu(hidden, name="y")
  return graph.as_graph_def().SerializeToString()


class GraphImportTest(absltest.TestCase):

  def test_the_fast_path_is_available_with_the_pinned_tensorflow(self):
    # If this fails after a TensorFlow upgrade, the merge still works (on the
    # public import) but loses the speed; update graph_import for the new API.
    self.assertTrue(graph_import.fast_path_available())

  def test_wraps_only_the_named_nodes_with_shapes_and_devices(self):
    graph, ops = graph_import.import_graph_def(_graph_def(), ["x", "y", "w"])
    self.assertEqual(sorted(ops), ["w", "x", "y"])
    self.assertEqual(ops["y"].outputs[0].shape.as_list(), [None, 2])
    self.assertEqual(ops["y"].outputs[0].dtype, tf.float32)
    self.assertEqual(ops["w"].device, "/device:CPU:0")
    self.assertLen(graph.get_operations(), 3)
    with self.assertRaises(KeyError):
      graph.get_operation_by_name("hidden")

  def test_a_session_runs_nodes_that_have_no_python_operation(self):
    graph, ops = graph_import.import_graph_def(_graph_def(), ["x", "y"])
    with _v1.Session(graph=graph) as sess:
      value = sess.run(ops["y"].outputs[0],
                       {ops["x"].outputs[0]: [[1.0, -1.0, 1.0]]})
    # relu([1, -1, 1] @ [[0, 1], [2, 3], [4, 5]]) = relu([2, 3]).
    np.testing.assert_array_equal(value, [[2.0, 3.0]])

  def test_unknown_name_is_a_value_error_naming_it(self):
    with self.assertRaisesRegex(ValueError, "nope"):
      graph_import.import_graph_def(_graph_def(), ["y", "nope"])

  def test_invalid_graph_is_a_value_error(self):
    graph_def = _v1.GraphDef()
    graph_def.node.add(name="a", op="NoSuchOp")
    with self.assertRaisesRegex(ValueError, "NoSuchOp"):
      graph_import.import_graph_def(graph_def.SerializeToString(), ["a"])

  def test_public_fallback_gives_the_same_operations(self):
    graph, ops = graph_import._import_public(_graph_def(), ["x", "y"])
    self.assertEqual(sorted(ops), ["x", "y"])
    self.assertEqual(ops["y"].outputs[0].shape.as_list(), [None, 2])
    self.assertLen(graph.get_operations(), 4)


if __name__ == "__main__":
  absltest.main()
