"""Tests for graph_io: reading frozen graphs, and the size of constants."""

import os

from absl.testing import absltest
from absl.testing import parameterized
from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from python.merge import errors
from python.merge import graph_io

_WHERE = 'spec m.toml, model #1 "a", key "frozen"'


def _graph_def() -> tf.compat.v1.GraphDef:
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
    tf.add(x, tf.constant([1.0, 2.0], name="b"), name="y")
  return graph.as_graph_def()


class ReadGraphDefTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  def _write(self, name: str, data: bytes) -> str:
    path = os.path.join(self.dir, name)
    with open(path, "wb") as f:
      f.write(data)
    return path

  def test_binary_and_text_graphs_read_back_equal(self):
    graph_def = _graph_def()
    binary = self._write("g.pb", graph_def.SerializeToString())
    text = self._write("g.pbtxt",
                       text_format.MessageToString(graph_def).encode())
    self.assertEqual(graph_io.read_graph_def(binary, _WHERE), graph_def)
    self.assertEqual(graph_io.read_graph_def(text, _WHERE), graph_def)
    self.assertEqual(graph_io.file_size(binary, _WHERE),
                     len(graph_def.SerializeToString()))

  @parameterized.named_parameters(
      ("text_named_pb", "g.pb", "text",
       r"g\.pb holds a text-format GraphDef but does not end in \.pbtxt; "
       r"rename it to \.pbtxt"),
      ("binary_named_pbtxt", "g.pbtxt", "binary_bytes",
       r"g\.pbtxt ends in \.pbtxt but holds binary data .*rename it to \.pb"),
      ("bad_text", "g.pbtxt", "bad_text",
       r"g\.pbtxt is not a valid text GraphDef: "),
      ("truncated", "g.pb", "truncated",
       r"g\.pb is not a binary GraphDef \(corrupt or truncated, \d+ bytes\)"),
      ("empty", "g.pb", "empty",
       r"g\.pb parsed as a GraphDef with no nodes; the file is empty"),
      ("saved_model", "saved_model.pb", "saved_model",
       r"saved_model\.pb is a SavedModel \(saved_model\.pb\), not a frozen "
       r"GraphDef; freeze the model first"),
      ("node_without_op", "g.pb", "no_op",
       r"g\.pb is not a valid GraphDef \(a node has an empty name or op"),
  )
  def test_bad_contents_are_named(self, name, kind, regex):
    graph_def = _graph_def()
    if kind == "text":
      data = text_format.MessageToString(graph_def).encode()
    elif kind == "binary_bytes":
      data = b"\x0a\x80\xff\xfe" + graph_def.SerializeToString()
    elif kind == "bad_text":
      data = b"node { name: 'x' op: }"
    elif kind == "truncated":
      data = graph_def.SerializeToString()[:-3]
    elif kind == "empty":
      data = b""
    elif kind == "saved_model":
      saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
      meta_graph = saved_model.meta_graphs.add()
      meta_graph.graph_def.CopyFrom(graph_def)
      meta_graph.meta_info_def.tags.append("serve")
      data = saved_model.SerializeToString()
    else:
      broken = tf.compat.v1.GraphDef()
      broken.node.add(name="n")
      data = broken.SerializeToString()
    path = self._write(name, data)
    with self.assertRaisesRegex(errors.GraphError,
                                "^" + _WHERE + ": .*" + regex):
      graph_io.read_graph_def(path, _WHERE)

  def test_missing_file_and_directory(self):
    with self.assertRaisesRegex(
        errors.GraphError,
        r"frozen graph /nonexistent/g\.pb does not exist; fix the path "
        r"\(relative paths are resolved against the spec file's "
        r"directory\)"):
      graph_io.read_graph_def("/nonexistent/g.pb", _WHERE)
    with self.assertRaisesRegex(
        errors.GraphError,
        r"is a directory; name the \.pb or \.pbtxt GraphDef file \(a "
        r"SavedModel directory is not a frozen graph\)"):
      graph_io.read_graph_def(self.dir, _WHERE)

  def test_a_fifo_is_refused_before_opening(self):
    fifo = os.path.join(self.dir, "fifo.pb")
    os.mkfifo(fifo)
    with self.assertRaisesRegex(errors.GraphError,
                                r"is a FIFO \(named pipe\), not a regular "
                                r"file"):
      graph_io.read_graph_def(fifo, _WHERE)  # Would block if opened.
    with self.assertRaisesRegex(errors.GraphError, r"FIFO"):
      graph_io.check_exists(fifo, _WHERE)

  def test_size_limit(self):
    path = self._write("g.pb", _graph_def().SerializeToString())
    with self.assertRaisesRegex(errors.GraphError,
                                r"^spec m\.toml.*frozen graph .*g\.pb"):
      graph_io.read_bytes(path, _WHERE, max_bytes=10)
    self.assertLen(graph_io.read_bytes(path, _WHERE),
                   os.path.getsize(path))


class TensorNbytesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("packed_float", np.zeros((3, 4), np.float32), 48),
      ("packed_int64", np.arange(5, dtype=np.int64), 40),
      ("half", np.ones(7, np.float16), 14),
      ("bool", np.array([True, False]), 2),
  )
  def test_values_in_tensor_content(self, value, nbytes):
    proto = tf.make_tensor_proto(value)
    self.assertTrue(proto.tensor_content or proto.bool_val or
                    proto.half_val)
    self.assertEqual(graph_io.tensor_nbytes(proto), nbytes)

  def test_splat_constant_counts_its_stored_values_only(self):
    # tf.zeros([1000]) is stored as one float_val and a shape.
    proto = tf.make_tensor_proto(0.0, dtype=tf.float32, shape=[1000])
    self.assertLen(proto.float_val, 1)
    self.assertEqual(graph_io.tensor_nbytes(proto), 4)

  def test_shape_only_counts_every_element(self):
    proto = tf.make_tensor_proto(np.zeros((2, 3), np.float64))
    proto.ClearField("tensor_content")
    self.assertEqual(graph_io.tensor_nbytes(proto), 48)

  def test_strings_and_unknown_dtypes(self):
    self.assertEqual(
        graph_io.tensor_nbytes(tf.make_tensor_proto([b"abc", b"de"])), 5)
    resource = tf.make_tensor_proto(0.0)
    resource.dtype = tf.resource.as_datatype_enum
    self.assertEqual(graph_io.tensor_nbytes(resource), 0)


if __name__ == "__main__":
  absltest.main()
