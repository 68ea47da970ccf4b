"""Vocabulary files of lookup tables, copied into the bundle's `assets/`.

A frozen graph whose table is initialized from a text file holds the file's
path in a string Const read by `InitializeTableFromTextFile(V2)`. That path
is valid on the machine that froze the graph, not on the server. As
`SavedModelBuilder` does for its assets, the merge copies each such file into
`<export_dir>/assets/`, records an `AssetFileDef` naming the Const's tensor,
and rewrites the Const to the file's name inside `assets/`. Loaders (C++
`LoadSavedModel` as in TF Serving, `tf.compat.v1.saved_model.load`) feed the
tensor with the asset's full path when they run the table initializers.

  collector = assets.AssetCollector(allowed_dirs=["/data/specs"])
  collector.collect(scoped_graph_def, where)    # for each input graph
  collector.write(export_dir)                    # copies the files
  collector.add_to(meta_graph_def)               # the AssetFileDefs

A graph names its vocabulary files itself, so a hostile graph could name
`/etc/shadow` and have it published inside the bundle. Files are therefore
read only from under the allowed directories (the spec file's directory and
the spec's `allowed_asset_dirs`; symlinks are resolved first), only when they
are regular files, and at most `max_bytes` of them.
"""

import dataclasses
import hashlib
import os
import posixpath
from typing import Iterable, Optional

import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from python.common import bounded_read
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
    sha256: Hex SHA-256 of its contents (part of the bundle's fingerprint).
  """
  tensor: str
  source: str
  filename: str
  size: int
  sha256: str = ""


def _normalize_dir(path: str) -> str:
  if bounded_read.is_uri(path) and not path.startswith("file://"):
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}".rstrip("/")
  if path.startswith("file://"):
    path = path[len("file://"):]
  return os.path.realpath(path)


def _is_under(path: str, directory: str) -> bool:
  return path == directory or path.startswith(directory.rstrip("/") + "/")


class AssetCollector:
  """Finds the vocabulary files of table initializers and copies them."""

  def __init__(self, allowed_dirs: Iterable[str] = (),
               max_bytes: int = bounded_read.DEFAULT_MAX_INPUT_BYTES):
    """Creates a collector.

    Args:
      allowed_dirs: Directories (local paths or URIs) vocabulary files may be
        read from, subdirectories included; nothing else is read.
      max_bytes: Larger vocabulary files are refused.
    """
    self.assets: list[Asset] = []
    self._by_source: dict[str, str] = {}
    self._taken: set[str] = set()
    self._allowed = [d for d in dict.fromkeys(allowed_dirs) if d]
    self._allowed_normalized = [_normalize_dir(d) for d in self._allowed]
    self._max_bytes = max_bytes

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
        size, digest = self._read_allowed(source, initializer, where)
        filename = self._unique_name(source, scope)
        self._by_source[source] = filename
      else:
        earlier = next(a for a in self.assets if a.filename == filename)
        size, digest = earlier.size, earlier.sha256
      self.assets.append(Asset(tensor=f"{const.name}:0", source=source,
                               filename=filename, size=size, sha256=digest))
      # Loaders feed the full path; the stale absolute path never ships.
      tensor.string_val[0] = filename.encode()

  def _check_allowed(self, source: str, initializer: str,
                     where: str) -> str:
    """Returns the path to read `source` from, if it is in an allowed dir."""
    shown = bounded_read.excerpt(source, 1000)
    if not source or "\x00" in source:
      raise errors.GraphError(
          f"{where}: table initializer {initializer} names the vocabulary "
          f"file {shown!r}, which is not a file name.")
    uri = bounded_read.is_uri(source) and not source.startswith("file://")
    if not uri and not os.path.isabs(source.removeprefix("file://")):
      raise errors.GraphError(
          f"{where}: table initializer {initializer} names the vocabulary "
          f"file {shown!r} by a relative path, which depends on the "
          "directory the graph was frozen in; re-freeze the graph with the "
          "file's absolute path.")
    resolved = _normalize_dir(source)
    if not any(_is_under(resolved, d) for d in self._allowed_normalized):
      allowed = ", ".join(self._allowed) or "(none)"
      raise errors.GraphError(
          f"{where}: table initializer {initializer} reads vocabulary file "
          f"{shown}" + (f" (resolved to {resolved})" if resolved != source
                        else "") +
          f", which is outside the directories assets may come from: "
          f"{allowed}. The merge copies vocabulary files into the published "
          "bundle, so it only reads them from under the spec's directory or "
          "from directories the spec lists in `allowed_asset_dirs`; move "
          "the file there, or add its directory to allowed_asset_dirs.")
    return source if uri else resolved

  def _read_allowed(self, source: str, initializer: str,
                    where: str) -> tuple[int, str]:
    """Size and SHA-256 of an allowed, regular vocabulary file."""
    path = self._check_allowed(source, initializer, where)
    try:
      data = bounded_read.read_regular_file(path, self._max_bytes)
    except bounded_read.InputFileError as e:
      raise errors.GraphError(
          f"{where}: table initializer {initializer} reads vocabulary file "
          f"{bounded_read.excerpt(source, 1000)}, which cannot be read ({e}); "
          "the merge copies it into the bundle's assets/, so put the file "
          "at that path (or re-freeze the graph with its current "
          "path).") from e
    return len(data), hashlib.sha256(data).hexdigest()

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
      asset = next(a for a in self.assets if a.filename == filename)
      try:
        data = bounded_read.read_regular_file(
            self._check_allowed(source, filename, "vocabulary"),
            self._max_bytes)
      except bounded_read.InputFileError as e:
        raise errors.GraphError(
            f"cannot copy vocabulary file {source}: {e}.") from e
      if hashlib.sha256(data).hexdigest() != asset.sha256:
        raise errors.GraphError(
            f"vocabulary file {source} changed while the merge ran; run the "
            "merge again once it is stable.")
      try:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(destination, "wb") as f:
          f.write(data)
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
