"""Tests for assets: vocabulary files copied into the bundle, and where from."""

import hashlib
import os
import re

from absl.testing import absltest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from python.merge import assets
from python.merge import errors
from python.merge import graph_merge
from python.merge.testdata import graphs

_WHERE = 'spec m.toml, model #1 "words"'
_CONST = "vocab/vocabulary_file"


def _scoped_graph(info, scope: str) -> tf.compat.v1.GraphDef:
  graph_def = tf.compat.v1.GraphDef()
  with open(info["path"], "rb") as f:
    graph_def.ParseFromString(f.read())
  graph_merge.scope_graph(graph_def, scope)
  return graph_def


def _const(graph_def, scope: str):
  return next(n for n in graph_def.node if n.name == f"{scope}/{_CONST}")


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


class AssetCollectorTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.allowed = os.path.join(self.root, "specs")
    self.info = graphs.write_vocabulary_table(
        os.path.join(self.allowed, "words.pb"),
        os.path.join(self.allowed, "vocab", "fruit.txt"))

  def test_collect_rewrites_the_const_and_write_copies_the_file(self):
    collector = assets.AssetCollector([self.allowed])
    graph_def = _scoped_graph(self.info, "words")
    collector.collect(graph_def, "words", _WHERE)
    source = self.info["vocabulary_path"]
    self.assertEqual(collector.assets, [assets.Asset(
        tensor=f"words/{_CONST}:0", source=source, filename="fruit.txt",
        size=os.path.getsize(source), sha256=_sha256(source))])
    self.assertEqual(collector.const_names, {f"words/{_CONST}"})
    # The machine-specific path never ships: loaders feed assets/fruit.txt.
    self.assertEqual(
        _const(graph_def, "words").attr["value"].tensor.string_val,
        [b"fruit.txt"])
    export_dir = os.path.join(self.root, "bundle")
    collector.write(export_dir)
    with open(os.path.join(export_dir, "assets", "fruit.txt")) as f:
      self.assertEqual(f.read().split(), self.info["vocabulary"])
    self.assertEqual(collector.files(),
                     {"assets/fruit.txt": os.path.getsize(source)})
    meta = meta_graph_pb2.MetaGraphDef()
    collector.add_to(meta)
    self.assertEqual(meta.asset_file_def[0].filename, "fruit.txt")
    self.assertEqual(meta.asset_file_def[0].tensor_info.name,
                     f"words/{_CONST}:0")

  def test_one_file_is_copied_once_and_colliding_names_are_made_unique(self):
    other = graphs.write_vocabulary_table(
        os.path.join(self.allowed, "other.pb"),
        os.path.join(self.allowed, "elsewhere", "fruit.txt"))
    collector = assets.AssetCollector([self.allowed])
    collector.collect(_scoped_graph(self.info, "a"), "a", _WHERE)
    collector.collect(_scoped_graph(self.info, "b"), "b", _WHERE)
    collector.collect(_scoped_graph(other, "c"), "c", _WHERE)
    self.assertEqual([a.filename for a in collector.assets],
                     ["fruit.txt", "fruit.txt", "c_fruit.txt"])
    self.assertEqual(sorted(collector.files()),
                     ["assets/c_fruit.txt", "assets/fruit.txt"])

  def test_files_outside_the_allowed_directories_are_refused(self):
    collector = assets.AssetCollector([os.path.join(self.root, "elsewhere")])
    with self.assertRaisesRegex(
        errors.GraphError,
        r'^spec m\.toml, model #1 "words": table initializer '
        r"vocab/table_init reads vocabulary file .*fruit\.txt, which is "
        r"outside the directories assets may come from: .*elsewhere\. .*"
        r"add its directory to allowed_asset_dirs"):
      collector.collect(_scoped_graph(self.info, "words"), "words", _WHERE)
    self.assertEqual(collector.assets, [])

  def test_a_symlink_out_of_an_allowed_directory_is_refused(self):
    secret = os.path.join(self.root, "secret.txt")
    with open(secret, "w") as f:
      f.write("password\n")
    link = os.path.join(self.allowed, "vocab", "link.txt")
    os.symlink(secret, link)
    graph_def = _scoped_graph(self.info, "words")
    _const(graph_def, "words").attr["value"].tensor.string_val[0] = (
        link.encode())
    with self.assertRaisesRegex(
        errors.GraphError,
        r"reads vocabulary file .*link\.txt \(resolved to "
        + re.escape(os.path.realpath(secret)) + r"\), which is outside"):
      assets.AssetCollector([self.allowed]).collect(graph_def, "words",
                                                    _WHERE)

  def test_relative_missing_and_special_files(self):
    fifo = os.path.join(self.allowed, "vocab", "fifo.txt")
    os.mkfifo(fifo)
    for path, regex in (
        ("vocab/fruit.txt", r"by a relative path, which depends on the "
         r"directory the graph was frozen in; re-freeze"),
        (os.path.join(self.allowed, "nope.txt"),
         r"nope\.txt, which cannot be read \(.*does not exist\)"),
        (fifo, r"fifo\.txt, which cannot be read \(.*FIFO")):
      graph_def = _scoped_graph(self.info, "words")
      _const(graph_def, "words").attr["value"].tensor.string_val[0] = (
          path.encode())
      with self.assertRaisesRegex(errors.GraphError, regex):
        assets.AssetCollector([self.allowed]).collect(graph_def, "words",
                                                      _WHERE)

  def test_file_name_that_is_not_a_constant(self):
    graph_def = _scoped_graph(self.info, "words")
    const = _const(graph_def, "words")
    const.op = "Placeholder"
    const.ClearField("attr")
    const.attr["dtype"].type = tf.string.as_datatype_enum
    with self.assertRaisesRegex(
        errors.GraphError,
        r"table initializer vocab/table_init reads its vocabulary file name "
        rf"from {_CONST}, which is not a constant"):
      assets.AssetCollector([self.allowed]).collect(graph_def, "words",
                                                    _WHERE)

  def test_a_file_changed_after_collecting_is_not_copied(self):
    collector = assets.AssetCollector([self.allowed])
    collector.collect(_scoped_graph(self.info, "words"), "words", _WHERE)
    with open(self.info["vocabulary_path"], "a") as f:
      f.write("quince\n")
    export_dir = os.path.join(self.root, "bundle")
    with self.assertRaisesRegex(errors.GraphError,
                                r"fruit\.txt changed while the merge ran"):
      collector.write(export_dir)
    self.assertFalse(os.path.exists(os.path.join(export_dir, "assets",
                                                 "fruit.txt")))


if __name__ == "__main__":
  absltest.main()
