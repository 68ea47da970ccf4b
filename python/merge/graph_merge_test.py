"""Unit tests of the GraphDef rewriting rules on small hand-built protos."""

import os
import threading
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import types_pb2

from python.merge import externalize
from python.merge import graph_io
from python.merge import graph_merge


def _graph(text):
  return text_format.Parse(text, tf.compat.v1.GraphDef())


def _library(text):
  return text_format.Parse(text, function_pb2.FunctionDefLibrary())


def _const(name, values, dtype=np.float32, control=()):
  node = tf.compat.v1.NodeDef(name=name, op="Const", input=list(control))
  tensor = tf.make_tensor_proto(np.asarray(values, dtype=dtype))
  node.attr["dtype"].type = tensor.dtype
  node.attr["value"].tensor.CopyFrom(tensor)
  return node


class ScopeGraphTest(absltest.TestCase):

  def test_rewrites_names_inputs_colocation_frames_and_shared_names(self):
    graph_def = _graph("""
      node { name: "x" op: "Placeholder" }
      node { name: "split" op: "Split" input: "dim" input: "x"
             input: "^init" }
      node { name: "y" op: "Identity" input: "split:1"
             attr { key: "_class" value { list { s: "loc:@x" s: "other" } } } }
      node { name: "enter" op: "Enter" input: "x"
             attr { key: "frame_name" value { s: "while/ctx" } } }
      node { name: "table" op: "HashTableV2"
             attr { key: "shared_name" value { s: "vocab" } } }
      node { name: "private" op: "HashTableV2"
             attr { key: "shared_name" value { s: "" } } }
    """)
    graph_merge.scope_graph(graph_def, "m1")
    nodes = {n.name: n for n in graph_def.node}
    self.assertEqual(sorted(nodes), ["m1/enter", "m1/private", "m1/split",
                                     "m1/table", "m1/x", "m1/y"])
    self.assertEqual(list(nodes["m1/split"].input),
                     ["m1/dim", "m1/x", "^m1/init"])
    self.assertEqual(list(nodes["m1/y"].input), ["m1/split:1"])
    self.assertEqual(list(nodes["m1/y"].attr["_class"].list.s),
                     [b"loc:@m1/x", b"other"])
    self.assertEqual(nodes["m1/enter"].attr["frame_name"].s, b"m1/while/ctx")
    self.assertEqual(nodes["m1/table"].attr["shared_name"].s, b"m1/vocab")
    self.assertEqual(nodes["m1/private"].attr["shared_name"].s, b"")


class FunctionLibraryMergerTest(parameterized.TestCase):

  _FIRST = """
    function { signature { name: "f" } node_def { name: "a" op: "Mul" } }
    function { signature { name: "same" } node_def { name: "a" op: "Add" } }
    function { signature { name: "g" } node_def { name: "c" op: "f" } }
    function { signature { name: "f_grad" } node_def { name: "a" op: "Mul" } }
    gradient { function_name: "f" gradient_func: "f_grad" }
  """
  _SECOND = """
    function { signature { name: "f" } node_def { name: "a" op: "Sub" } }
    function { signature { name: "same" } node_def { name: "a" op: "Add" } }
    function { signature { name: "g" } node_def { name: "c" op: "f" } }
    function {
      signature { name: "h" }
      node_def { name: "call" op: "PartitionedCall"
                 attr { key: "f" value { func { name: "g" } } } }
      node_def { name: "case" op: "Case"
                 attr { key: "branches" value { list {
                   func { name: "f" } func { name: "same" } } } } }
    }
    function { signature { name: "f_grad" } node_def { name: "a" op: "Div" } }
    gradient { function_name: "f" gradient_func: "f_grad" }
  """

  def test_identical_kept_once_different_renamed_with_callers(self):
    merger = graph_merge.FunctionLibraryMerger()
    self.assertEqual(merger.add(_library(self._FIRST), "m1"), {})
    second = _library(self._SECOND)
    renames = merger.add(second, "m-2")
    # g is textually identical but calls a different f: renamed too.
    self.assertEqual(renames, {"f": "f_m_2", "g": "g_m_2",
                               "f_grad": "f_grad_m_2"})
    graph_def = _graph("""
      node { name: "direct" op: "f" }
      node { name: "call" op: "StatefulPartitionedCall"
             attr { key: "f" value { func { name: "g" attr {
               key: "inner" value { func { name: "f" } } } } } } }
      node { name: "keep" op: "same" }
    """)
    graph_merge.rename_function_references(graph_def.node, renames)
    self.assertEqual([n.op for n in graph_def.node],
                     ["f_m_2", "StatefulPartitionedCall", "same"])
    call = graph_def.node[1].attr["f"].func
    self.assertEqual(call.name, "g_m_2")
    self.assertEqual(call.attr["inner"].func.name, "f_m_2")

    library = function_pb2.FunctionDefLibrary()
    merger.write_to(library)
    functions = {f.signature.name: f for f in library.function}
    self.assertEqual(sorted(functions),
                     ["f", "f_grad", "f_grad_m_2", "f_m_2", "g", "g_m_2", "h",
                      "same"])
    self.assertEqual(functions["g_m_2"].node_def[0].op, "f_m_2")
    self.assertEqual(functions["g"].node_def[0].op, "f")
    h = functions["h"]
    self.assertEqual(h.node_def[0].attr["f"].func.name, "g_m_2")
    self.assertEqual([f.name for f in h.node_def[1].attr["branches"].list.func],
                     ["f_m_2", "same"])
    self.assertEqual({g.function_name: g.gradient_func
                      for g in library.gradient},
                     {"f": "f_grad", "f_m_2": "f_grad_m_2"})

  def test_same_library_twice_adds_nothing(self):
    merger = graph_merge.FunctionLibraryMerger()
    merger.add(_library(self._FIRST), "a")
    self.assertEqual(merger.add(_library(self._FIRST), "b"), {})
    self.assertLen(merger, 4)

  def test_different_gradient_renames_function(self):
    merger = graph_merge.FunctionLibraryMerger()
    merger.add(_library(self._FIRST), "a")
    other = _library(self._FIRST.replace('gradient_func: "f_grad"',
                                         'gradient_func: "same"'))
    self.assertEqual(merger.add(other, "b"), {"f": "f_b", "g": "g_b"})

  def test_recursive_functions(self):
    text = """
      function { signature { name: "r" } node_def { name: "a" op: "%s" }
                 node_def { name: "b" op: "r" } }
    """
    merger = graph_merge.FunctionLibraryMerger()
    merger.add(_library(text % "Mul"), "a")
    renames = merger.add(_library(text % "Add"), "b")
    self.assertEqual(renames, {"r": "r_b"})
    library = function_pb2.FunctionDefLibrary()
    merger.write_to(library)
    recursive = next(f for f in library.function if f.signature.name == "r_b")
    self.assertEqual([n.op for n in recursive.node_def], ["Add", "r_b"])


class DefaultAttrStripperTest(absltest.TestCase):

  def test_strips_only_default_values_of_registered_ops(self):
    graph_def = _graph("""
      node { name: "a" op: "MatMul"
             attr { key: "transpose_a" value { b: false } }
             attr { key: "transpose_b" value { b: true } }
             attr { key: "T" value { type: DT_FLOAT } } }
      node { name: "b" op: "my_function"
             attr { key: "transpose_a" value { b: false } } }
    """)
    stripper = graph_merge.DefaultAttrStripper()
    self.assertEqual(stripper.strip(graph_def.node), 1)
    self.assertEqual(sorted(graph_def.node[0].attr), ["T", "transpose_b"])
    self.assertEqual(sorted(graph_def.node[1].attr), ["transpose_a"])


class GraphMergerTest(absltest.TestCase):

  def test_producer_is_oldest_input(self):
    merger = graph_merge.GraphMerger()
    for scope, producer in (("a", 1205), ("b", 27)):
      graph_def = _graph('node { name: "x" op: "NoOp" }')
      graph_def.versions.producer = producer
      merger.scope_and_rename(graph_def, scope)
      merger.append(graph_def)
      self.assertEmpty(graph_def.node)
    merged = merger.finish()
    self.assertEqual(merged.versions.producer, 27)
    self.assertEqual([n.name for n in merged.node], ["a/x", "b/x"])


class ExternalizerTest(absltest.TestCase):

  def test_plan_mode_rewrites_large_consts_only(self):
    big = np.arange(1000, dtype=np.float32).reshape(10, 100)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.extend([
        _const("m/big", big),
        _const("m/small", [1.0, 2.0]),
        _const("m/in_loop", big, control=["^m/while/Identity"]),
    ])
    graph_def.node[0].attr["_class"].list.s.append(b"loc:@m/other")
    graph_def.node[0].device = "/device:CPU:0"
    ext = externalize.Externalizer(threshold_bytes=1000, export_dir=None)
    ext.process(graph_def)
    nodes = {n.name: n for n in graph_def.node}
    self.assertEqual(nodes["m/small"].op, "Const")
    big_node = nodes["m/big"]
    self.assertEqual(big_node.op, "ReadVariableOp")
    self.assertEqual(list(big_node.input), ["merge_internal/variables/m/big"])
    self.assertEqual(big_node.device, "/device:CPU:0")
    self.assertEqual(list(big_node.attr["_class"].list.s), [b"loc:@m/other"])
    self.assertEqual(big_node.attr["dtype"].type, types_pb2.DT_FLOAT)
    # A const inside a while frame reads through a handle in that frame.
    self.assertEqual(list(nodes["m/in_loop"].input),
                     ["merge_internal/read_handles/m/in_loop"])
    self.assertEqual(ext.count, 2)
    self.assertEqual(ext.externalized_bytes, 2 * big.nbytes)

    added, saver_def = ext.finish()
    added = {n.name: n for n in added}
    handle = added["merge_internal/variables/m/big"]
    self.assertEqual(handle.op, "VarHandleOp")
    self.assertEqual(handle.attr["shared_name"].s, b"m/big")
    self.assertEqual([d.size for d in handle.attr["shape"].shape.dim],
                     [10, 100])
    read_handle = added["merge_internal/read_handles/m/in_loop"]
    self.assertEqual(list(read_handle.input), ["^m/while/Identity"])
    self.assertEqual(read_handle.attr["shared_name"].s, b"m/in_loop")
    self.assertEqual(
        list(added["merge_internal/restore_0/RestoreV2"].attr["dtypes"].list
             .type), [types_pb2.DT_FLOAT] * 2)
    self.assertEqual(saver_def.restore_op_name, "merge_internal/restore_all")
    self.assertEqual(list(added["merge_internal/restore_all"].input),
                     ["^merge_internal/restore_0"])
    for tensor in (saver_def.filename_tensor_name,
                   saver_def.save_tensor_name):
      self.assertIn(tensor.split(":")[0], added)

  def test_writes_exact_values_to_checkpoint(self):
    export_dir = self.create_tempdir().full_path
    values = {
        "a/w": np.random.RandomState(0).standard_normal((64, 64)).astype(
            np.float32),
        "a/ids": np.arange(5000, dtype=np.int64),
        "b/words": np.array([b"x" * 300] * 10, dtype=object),
    }
    ext = externalize.Externalizer(threshold_bytes=100, export_dir=export_dir)
    for scope in ("a", "b"):
      graph_def = tf.compat.v1.GraphDef()
      graph_def.node.extend(
          _const(name, value, dtype=value.dtype)
          for name, value in values.items() if name.startswith(scope))
      ext.process(graph_def)
    ext.finish()
    self.assertEqual(sorted(os.listdir(os.path.join(export_dir, "variables"))),
                     ["variables.data-00000-of-00002",
                      "variables.data-00001-of-00002", "variables.index"])
    reader = tf.train.load_checkpoint(
        os.path.join(export_dir, "variables", "variables"))
    for name, value in values.items():
      np.testing.assert_array_equal(reader.get_tensor(name), value)

  def test_each_input_graph_is_a_restore_group(self):
    export_dir = self.create_tempdir().full_path
    values = {"a/w": np.full((64, 64), 2.0, np.float32),
              "b/w": np.full((64, 64), 3.0, np.float32)}
    ext = externalize.Externalizer(threshold_bytes=100, export_dir=export_dir)
    merged = tf.compat.v1.GraphDef()
    for name, value in values.items():
      graph_def = tf.compat.v1.GraphDef()
      graph_def.node.extend([_const(name, value)])
      ext.process(graph_def)
      merged.node.extend(graph_def.node)
    added, saver_def = ext.finish()
    merged.node.extend(added)
    nodes = {n.name: n for n in merged.node}
    self.assertEqual(list(nodes[saver_def.restore_op_name].input),
                     ["^merge_internal/restore_0", "^merge_internal/restore_1"])
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.import_graph_def(merged, name="")
    feed = {saver_def.filename_tensor_name:
                os.path.join(export_dir, "variables", "variables")}
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run("merge_internal/restore_1", feed)
      np.testing.assert_array_equal(sess.run("b/w:0"), values["b/w"])
      with self.assertRaises(tf.errors.FailedPreconditionError):
        sess.run("a/w:0")  # Group 0 was not restored.
      sess.run(saver_def.restore_op_name, feed)
      np.testing.assert_array_equal(sess.run("a/w:0"), values["a/w"])

  def test_large_shard_is_written_before_the_next_input_is_read(self):
    finished = []
    release = threading.Event()

    def slow_save(prefix, names, values):
      release.wait(10)
      finished.append(list(names))

    export_dir = self.create_tempdir().full_path
    with mock.patch.object(externalize, "_SHARD_BYTES", 1024), \
        mock.patch.object(externalize, "_save_shard", slow_save):
      ext = externalize.Externalizer(threshold_bytes=100,
                                     export_dir=export_dir)
      graph_def = tf.compat.v1.GraphDef()
      graph_def.node.extend([_const("a/w", np.ones((64, 64), np.float32))])
      ext.process(graph_def)
      self.assertEqual(finished, [])  # Written in the background...
      threading.Timer(0.2, release.set).start()
      ext.wait_for_large_write()  # ...but large: waited for.
      self.assertEqual(finished, [["a/w"]])
      ext.close()

  def test_splat_constant_is_not_externalized(self):
    # tf.zeros([1000, 1000]) freezes to one repeated value plus a shape.
    splat = tf.compat.v1.NodeDef(name="zeros", op="Const")
    splat.attr["dtype"].type = types_pb2.DT_FLOAT
    tensor = splat.attr["value"].tensor
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=1000)
    tensor.tensor_shape.dim.add(size=1000)
    tensor.float_val.append(0.0)
    packed = _const("packed", np.zeros(1000, np.float32))
    self.assertEqual(graph_io.tensor_nbytes(tensor), 4)
    self.assertEqual(graph_io.tensor_nbytes(packed.attr["value"].tensor),
                     4000)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.extend([splat, packed])
    ext = externalize.Externalizer(threshold_bytes=100, export_dir=None)
    ext.process(graph_def)
    self.assertEqual([n.op for n in graph_def.node],
                     ["Const", "ReadVariableOp"])

  def test_reports_constants_used_as_matmul_or_conv_weights(self):
    graph_def = tf.compat.v1.GraphDef()
    big = np.zeros((10, 100), np.float32)
    graph_def.node.extend([
        _const("m/w", big), _const("m/b", np.zeros(1000, np.float32)),
        _const("m/kernel", big), _const("m/small_w", [[1.0]]),
        _const("m/other", big)])
    text_format.Parse("""
      node { name: "m/x" op: "Placeholder" }
      node { name: "m/w/read" op: "Identity" input: "m/w" }
      node { name: "m/mm" op: "MatMul" input: "m/x" input: "m/w/read" }
      node { name: "m/y" op: "BiasAdd" input: "m/mm" input: "m/b" }
      node { name: "m/conv" op: "Conv2D" input: "m/x" input: "m/kernel" }
      node { name: "m/mm2" op: "MatMul" input: "m/x" input: "m/small_w" }
      node { name: "m/mm3" op: "MatMul" input: "m/other" input: "m/x" }
    """, graph_def)
    ext = externalize.Externalizer(threshold_bytes=100, export_dir=None)
    ext.process(graph_def)
    # Biases, left operands and constants kept as Const are not weights.
    self.assertEqual(ext.weights, ["m/w", "m/kernel"])
    self.assertEqual(ext.count, 4)

  def test_negative_threshold_disables(self):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.extend([_const("big", np.zeros(10000, np.float32))])
    ext = externalize.Externalizer(threshold_bytes=-1, export_dir=None)
    ext.process(graph_def)
    self.assertEqual(graph_def.node[0].op, "Const")
    self.assertEqual(ext.finish(), ([], None))


if __name__ == "__main__":
  absltest.main()
