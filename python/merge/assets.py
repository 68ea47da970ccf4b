"""Vocabulary files of lookup tables, copied into the bundle's `assets/`.

A frozen graph whose table is initialized from a text file holds the file's
path in a string Const read by `InitializeTableFromTextFile(V2)`. That path
is valid on the machine that froze the graph, not on the server. As
`SavedModelBuilder` does for its assets, the merge copies each such file into
`<export_dir>/assets/`, records an `AssetFileDef` naming the Const's tensor,
and rewrites the Const to the file's name inside `assets/`. Loaders (C++
`LoadSavedModel` as in TF Serving, `tf.compat.v1.saved_model.load`) feed the
tensor with the asset's full path when they run the table initializers.

  collector = assets.AssetCollector()
  collector.collect(scoped_graph_def, where)    # for each input graph
  collector.write(export_dir)                    # copies the files
  collector.add_to(meta_graph_def)               # the AssetFileDefs
"""

import dataclasses
import os
from typing import Optional

import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from python.merge import errors

ASSETS_DIR = "assets"
_TEXT_FILE_INITIALIZERS = frozenset(
    ("InitializeTableFromTextFile", "InitializeTableFromTextFileV2"))


@dataclasses.dataclass
class Asset:
  """One vocabulary file the bundle needs.

  Attributes:
    tensor: The (scoped) string Const tensor holding the file name.
    source: Path of the file read while merging.
    filename: Its name inside `assets/`.
    size: Its size in bytes.
  """
  tensor: str
  source: str
  filename: str
  size: int


class AssetCollector:
  """Finds the vocabulary files of table initializers and copies them."""

  def __init__(self):
    self.assets: list[Asset] = []
    self._by_source: dict[str, str] = {}
    self._taken: set[str] = set()

  @property
  def const_names(self) -> set[str]:
    """Names of the Const nodes that hold asset file names."""
    return {a.tensor.rsplit(":", 1)[0] for a in self.assets}

  def collect(self, graph_def: tf.compat.v1.GraphDef, scope: str,
              where: str) -> None:
    """Records the vocabulary files of a scoped graph; rewrites their Consts.

    Args:
      graph_def: A graph already scoped under `scope/`, changed in place.
      scope: Its scope (makes colliding file names unique).
      where: Spec context for messages (file, model).

    Raises:
      GraphError: a file name is not a constant, or the file is missing.
    """
    nodes = None  # Name -> node, built only if the graph has tables.
    for node in graph_def.node:
      if node.op not in _TEXT_FILE_INITIALIZERS or len(node.input) < 2:
        continue
      if nodes is None:
        nodes = {n.name: n for n in graph_def.node}
      const = _source_const(node.input[1], nodes)
      initializer = node.name[len(scope) + 1:]
      if const is None:
        raise errors.GraphError(
            f"{where}: table initializer {initializer} reads its vocabulary "
            f"file name from {node.input[1][len(scope) + 1:]}, which is not "
            "a constant, so "
            "the file cannot be copied into assets/; freeze the graph with "
            "the vocabulary file name as a constant.")
      tensor = const.attr["value"].tensor
      if tensor.dtype != types_pb2.DT_STRING or len(tensor.string_val) != 1:
        raise errors.GraphError(
            f"{where}: the vocabulary file name "
            f"{const.name[len(scope) + 1:]} of table initializer "
            f"{initializer} is not one string.")
      source = tensor.string_val[0].decode("utf-8", "replace")
      filename = self._by_source.get(source)
      if filename is None:
        size = _size(source, initializer, where)
        filename = self._unique_name(source, scope)
        self._by_source[source] = filename
      else:
        size = next(a.size for a in self.assets if a.filename == filename)
      self.assets.append(Asset(tensor=f"{const.name}:0", source=source,
                               filename=filename, size=size))
      # Loaders feed the full path; the stale absolute path never ships.
      tensor.string_val[0] = filename.encode()

  def _unique_name(self, source: str, scope: str) -> str:
    base = os.path.basename(source.rstrip("/")) or "vocabulary"
    name, index = base, 1
    while name in self._taken:
      name = f"{scope}_{base}" if index == 1 else f"{scope}_{index}_{base}"
      index += 1
    self._taken.add(name)
    return name

  def files(self) -> dict[str, int]:
    """`assets/<name>` -> size of every file `write` copies."""
    return {f"{ASSETS_DIR}/{a.filename}": a.size for a in self.assets}

  def write(self, export_dir: str) -> None:
    """Copies every vocabulary file into `<export_dir>/assets/`.

    Raises:
      GraphError: a file cannot be read or written.
    """
    directory = export_dir.rstrip("/") + "/" + ASSETS_DIR
    for source, filename in self._by_source.items():
      destination = f"{directory}/{filename}"
      try:
        tf.io.gfile.makedirs(directory)
        tf.io.gfile.copy(source, destination, overwrite=True)
      except tf.errors.OpError as e:
        raise errors.GraphError(
            f"cannot copy vocabulary file {source} to {destination}: "
            f"{e.message}") from e

  def add_to(self, meta: meta_graph_pb2.MetaGraphDef) -> None:
    """Adds one AssetFileDef per vocabulary file name tensor."""
    for asset in self.assets:
      asset_def = meta.asset_file_def.add(filename=asset.filename)
      asset_def.tensor_info.name = asset.tensor
      asset_def.tensor_info.dtype = types_pb2.DT_STRING
      asset_def.tensor_info.tensor_shape.SetInParent()


def _source_const(tensor: str,
                  nodes: dict) -> Optional[node_def_pb2.NodeDef]:
  """The Const behind `tensor`, through Identity nodes; None otherwise."""
  seen = set()
  while True:
    name, _, port = tensor.lstrip("^").partition(":")
    node = nodes.get(name)
    if node is None or port not in ("", "0") or name in seen:
      return None
    if node.op == "Const":
      return node
    if node.op != "Identity" or not node.input:
      return None
    seen.add(name)
    tensor = node.input[0]


def _size(path: str, initializer: str, where: str) -> int:
  try:
    return tf.io.gfile.stat(path).length
  except tf.errors.OpError as e:
    raise errors.GraphError(
        f"{where}: table initializer {initializer} reads vocabulary file "
        f"{path}, which cannot be read ({e.message}); the merge copies it "
        "into the bundle's assets/, so put the file at that path (or "
        "re-freeze the graph with its current path).") from e
