"""Incremental deploys: a new version from a published one, changing a few models.

  base = "latest"              # in merge.toml: start from the newest version
  remove = ["old_model"]       # drop these signatures
  [[model]]                    # replace the signature of that name, or add one
  signature_name = "audio"
  ...

  bazel run //python/merge -- --spec=merge.toml --output_base=/models/merged

The new version keeps every signature of the base bundle (its nodes under
`<scope>/`, its variables, its vocabulary files, its warmup records) except
the removed ones and those a `[[model]]` replaces. Kept signatures' frozen
graphs are never read, and need not exist. The steps:

1. `prepare` resolves the base (`"latest"`, a version of the output base, or
   a version directory), reads its `saved_model.pb` and checkpoint index and
   checks everything the kept signatures need is there, so a missing or
   corrupt base is refused before anything is written; then it plans which
   signatures are added, replaced, removed and kept.
2. `write_bundle` merges the `[[model]]` graphs with `bundle_writer` into a
   scratch bundle next to the staging directory, then writes the new version:
   the kept nodes exactly as in the base plus the new nodes; the functions the
   kept nodes call (the new graphs' functions merged in, colliding names
   renamed on the new side only, so kept nodes are untouched); restore and
   save ops regenerated for the union of variables, whose values are copied
   tensor by tensor from the two checkpoints (at most 64 MiB held at a
   time); assets and warmup records of kept signatures carried over. So kept
   signatures answer bit-identically to the base version.
3. The merge's check and atomic publish run as for any merge.

Every version also gets a manifest, `assets.extra/merge_manifest.json` (TF
Serving ignores it), recording for each signature the fingerprint of its
source (SHA-256 of its frozen graph and of its spec entry), its method, and
whether it was added, replaced, kept or removed, and from which version.
`inspect --dir` shows it; `--dry_run` prints the plan.
"""

import atexit
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from typing import Any, Iterable, Optional, Sequence

from absl import logging
from google.protobuf import message as proto_message
import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import function_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import meta_graph as meta_graph_lib
from tensorflow_serving.apis import prediction_log_pb2

from python.common import object_store
from python.merge import bundle_writer
from python.merge import errors
from python.merge import externalize
from python.merge import graph_merge
from python.merge import publish
from python.merge import saved_model_io
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib

MANIFEST_FILE = "assets.extra/merge_manifest.json"
MANIFEST_FORMAT = 1
ADDED, REPLACED, KEPT, REMOVED = "added", "replaced", "kept", "removed"

_INTERNAL = spec_lib.RESERVED_SCOPE
_INIT_OP = f"{_INTERNAL}/init_all_tables"
_MAIN_OP_KEY = "saved_model_main_op"
_INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
_VARIABLES = "variables/variables"
_TMP_SHARDS = "variables/merge_tmp_shards"
_COPY_BATCH_BYTES = 64 << 20
_MAX_MANIFEST_BYTES = 64 << 20
_METHODS = {v: k for k, v in spec_lib.METHOD_NAMES.items()}


class BaseError(errors.MergeError):
  """The base version of an incremental deploy is missing, corrupt or unfit."""


@dataclasses.dataclass
class Base:
  """A published version read for an incremental deploy.

  Attributes:
    path: its version directory.
    version: its version number (None when the directory name is not one).
    meta_graph: its `serve` MetaGraphDef.
    signatures: its model signatures, in the order they were published
      (without a `serving_default` alias).
    serving_default: the signature its `serving_default` aliases, if any.
    scopes: signature -> the name scope of its nodes.
    manifest: its manifest, or None (versions published before manifests).
    local_path: where its files are read: `path`, or for an s3:// base a
      local copy downloaded once (`_local_copy`).
  """
  path: str
  version: Optional[int]
  meta_graph: meta_graph_pb2.MetaGraphDef
  signatures: tuple[str, ...]
  serving_default: Optional[str]
  scopes: dict
  manifest: Optional[dict]
  local_path: str = ""

  def __post_init__(self):
    if not self.local_path:
      self.local_path = self.path


@dataclasses.dataclass
class Plan:
  """What an incremental deploy does.

  Attributes:
    base: the base version.
    added, replaced, removed, kept: signature names, in the base's order
      (added in spec order).
    signatures: the new version's model signatures, in order: the base's
      (replaced in place, removed dropped), then the added ones.
    serving_default: the signature the new version serves as
      `serving_default`, if any.
    new_spec: the spec of the models merged from frozen graphs (added and
      replaced), or None when there are none.
    spec: the whole spec.
    kept_records: kept signature -> its warmup records in the base.
  """
  base: Base
  added: tuple[str, ...]
  replaced: tuple[str, ...]
  removed: tuple[str, ...]
  kept: tuple[str, ...]
  signatures: tuple[str, ...]
  serving_default: Optional[str]
  new_spec: Optional[spec_lib.MergeSpec]
  spec: spec_lib.MergeSpec
  kept_records: dict = dataclasses.field(default_factory=dict)

  def to_json_dict(self) -> dict[str, Any]:
    return {
        "base": self.base.path,
        "base_version": self.base.version,
        "added": list(self.added),
        "replaced": list(self.replaced),
        "removed": list(self.removed),
        "kept": list(self.kept),
    }

  def text_lines(self) -> list[str]:
    version = ("" if self.base.version is None else
               f"version {self.base.version} at ")
    lines = [f"  base: {version}{self.base.path}"]
    for word, names in (("added", self.added), ("replaced", self.replaced),
                        ("removed", self.removed), ("kept", self.kept)):
      lines.append(f"  {word}: {', '.join(names) or '(none)'}")
    return lines


# ---------------------------------------------------------------------------
# Step 1: resolve and read the base, plan the deploy.
# ---------------------------------------------------------------------------


def _join(base: str, name: str) -> str:
  return base.rstrip("/") + "/" + name


def resolve_base_dir(base: Any, output_base: str) -> tuple[str, Optional[int]]:
  """The version directory and number `base` names.

  Args:
    base: "latest", a version number, or the path / URI of a version dir.
    output_base: the output base "latest" and numbers refer to.

  Returns:
    (version directory, its number or None).

  Raises:
    BaseError: there is no such version, listing the versions there are.
  """
  if base == spec_lib.BASE_LATEST or isinstance(base, int):
    versions = publish.list_versions(output_base)
    if not versions:
      raise BaseError(
          f"spec key \"base\" = {base!r}: --output_base={output_base!r} has "
          "no published version to start from; publish a full merge first "
          "(a spec without `base`).")
    version = versions[-1] if base == spec_lib.BASE_LATEST else base
    if version not in versions:
      raise BaseError(
          f"spec key \"base\" = {base}: version {base} is not in "
          f"--output_base={output_base!r}; its versions are "
          f"{', '.join(map(str, versions))}. Use one of them or "
          f'base = "{spec_lib.BASE_LATEST}".')
    root = output_base.rstrip("/")
    if publish.is_local(root):
      root = os.path.abspath(root[len("file://"):] if
                             root.startswith("file://") else root)
    return _join(root, str(version)), version
  path = str(base).rstrip("/")
  name = path.rsplit("/", 1)[-1]
  return path, (int(name) if name.isdigit() else None)


def _read_saved_model(path: str) -> saved_model_pb2.SavedModel:
  try:
    return saved_model_io.read_saved_model(path, flag="base ")
  except saved_model_io.SavedModelReadError as e:
    raise BaseError(
        f"{e} Start from another version (base = \"{spec_lib.BASE_LATEST}\", "
        "a version number or a version directory) or publish a full merge."
    ) from e


def read_manifest(export_dir: str) -> Optional[dict]:
  """The manifest of a version directory (local, URI or s3://), or None.

  Raises:
    BaseError: the manifest exists but is not valid JSON.
  """
  path = _join(export_dir, MANIFEST_FILE)
  data, size = None, 0
  try:
    if object_store.is_s3(path):
      found = object_store.S3Store().read(*object_store.split(path))
      if found is not None:
        data, size = found[0], len(found[0])
    elif tf.io.gfile.exists(path):
      size = tf.io.gfile.stat(path).length
      if size <= _MAX_MANIFEST_BYTES:
        with tf.io.gfile.GFile(path, "rb") as f:
          data = f.read()
  except (tf.errors.OpError, object_store.ObjectStoreError) as e:
    raise BaseError(f"{path} is not a readable merge manifest: {e}") from e
  if size > _MAX_MANIFEST_BYTES:
    raise BaseError(f"{path} is larger than {_MAX_MANIFEST_BYTES} bytes; "
                    "it is not a merge manifest.")
  if data is None:
    return None
  try:
    manifest = json.loads(data.decode("utf-8"))
  except ValueError as e:
    raise BaseError(f"{path} is not a readable merge manifest: {e}") from e
  if not isinstance(manifest, dict):
    raise BaseError(f"{path} is not a merge manifest (not a JSON object).")
  return manifest


def _first_component(name: str) -> str:
  return name.lstrip("^").split("/", 1)[0]


def _signature_scope(name: str, signature, path: str) -> str:
  scopes = {_first_component(info.name)
            for infos in (signature.inputs, signature.outputs)
            for info in infos.values()}
  if len(scopes) != 1 or any("/" not in info.name for infos in (
      signature.inputs, signature.outputs) for info in infos.values()):
    raise BaseError(
        f"base {path} was not written by //python/merge: the tensors of "
        f'signature "{name}" are not under one name scope ({sorted(scopes)}); '
        "start from a version the merge published.")
  return scopes.pop()


def _model_signatures(meta: meta_graph_pb2.MetaGraphDef,
                      manifest: Optional[dict],
                      path: str) -> tuple[tuple[str, ...], Optional[str]]:
  """The base's model signatures in order, and its serving_default target."""
  defs = meta.signature_def
  names = [n for n in defs if n != _INIT_OP_SIGNATURE_KEY]
  default = None
  if manifest is not None and isinstance(manifest.get("signatures"), list):
    listed = [s for s in manifest["signatures"] if s in defs]
    default = manifest.get("serving_default")
    if (not isinstance(default, str) or default == spec_lib.SERVING_DEFAULT
        or default not in defs):
      default = None
    order = listed + sorted(n for n in names if n not in listed and
                            not (n == spec_lib.SERVING_DEFAULT and default))
    return tuple(order), default
  if spec_lib.SERVING_DEFAULT in defs:
    alias = defs[spec_lib.SERVING_DEFAULT].SerializeToString(
        deterministic=True)
    for name in sorted(names):
      if name != spec_lib.SERVING_DEFAULT and defs[name].SerializeToString(
          deterministic=True) == alias:
        default = name
        break
  del path
  return tuple(sorted(n for n in names if not (
      n == spec_lib.SERVING_DEFAULT and default))), default


def read_base(base: Any, output_base: str) -> Base:
  """Resolves and reads the base of an incremental deploy.

  Raises:
    BaseError: the base is missing, corrupt, or was not written by the merge.
  """
  path, version = resolve_base_dir(base, output_base)
  local = _local_copy(path)
  saved_model = _read_saved_model(local)
  metas = [m for m in saved_model.meta_graphs
           if set(m.meta_info_def.tags) == {bundle_writer.SERVE_TAG}]
  if not metas:
    raise BaseError(
        f"base {path} has no MetaGraph tagged only \"serve\"; its tag-sets "
        f"are {[sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]}"
        ".")
  meta = metas[0]
  manifest = read_manifest(local)
  names, default = _model_signatures(meta, manifest, path)
  if not names:
    raise BaseError(f"base {path} has no signatures.")
  scopes = {name: _signature_scope(name, meta.signature_def[name], path)
            for name in names}
  known = set(scopes.values()) | {_INTERNAL}
  for node in meta.graph_def.node:
    if _first_component(node.name) not in known:
      raise BaseError(
          f"base {path} was not written by //python/merge: node "
          f'"{node.name}" is outside every signature\'s name scope; start '
          "from a version the merge published, or publish a full merge.")
  return Base(path=path, version=version, meta_graph=meta, signatures=names,
              serving_default=default, scopes=scopes, manifest=manifest,
              local_path=local)


def _local_copy(path: str) -> str:
  """`path`, or for s3:// a local copy of the version (removed at exit).

  TensorFlow's file systems have no s3:// scheme, and the base's
  checkpoint is read tensor by tensor: the version is downloaded once
  (python/common/object_store, boto3), into a temporary directory.
  """
  if not object_store.is_s3(path):
    return path
  local = tempfile.mkdtemp(prefix="tfsm-s3-base-")
  atexit.register(shutil.rmtree, local, True)
  bucket, prefix = object_store.split(path)
  try:
    size = object_store.S3Store().download_tree(bucket, prefix, local)
  except object_store.ObjectStoreError as e:
    raise BaseError(f"base {path}: {e}") from e
  logging.info("Downloaded base %s (%d bytes) to %s", path, size, local)
  return local


def prepare(spec: spec_lib.MergeSpec, output_base: str) -> Plan:
  """Reads the base and plans an incremental deploy; writes nothing.

  Args:
    spec: a validated spec with `base` set.
    output_base: the output base the new version goes to.

  Returns:
    The Plan.

  Raises:
    BaseError: the base is missing, corrupt or lacks what kept signatures
      need.
    SpecError: `remove` names a signature the base lacks (the base's
      signatures are listed), serving_default points at a removed signature,
      or a new model's name scope is taken by a kept signature.
  """
  base = read_base(spec.base, output_base)
  where = f"spec {spec.source}" if spec.source else "spec"
  in_base = set(base.signatures)
  unknown = [name for name in spec.remove if name not in in_base]
  if unknown:
    hints = [h for name in unknown for h in spec_lib.closest(name, in_base, 1)]
    raise errors.SpecError(
        f'{where}, key "remove": {unknown} not in the base {base.path}, '
        f"whose signatures are {list(base.signatures)}" +
        (f"; did you mean {hints[0]!r}?" if hints else "."))
  new_names = [m.signature_name for m in spec.models]
  replaced = tuple(n for n in base.signatures if n in new_names)
  removed = tuple(n for n in base.signatures if n in spec.remove)
  kept = tuple(n for n in base.signatures
               if n not in replaced and n not in removed)
  added = tuple(n for n in new_names if n not in in_base)
  kept_scopes = {base.scopes[n]: n for n in kept}
  for name in new_names:
    if name in kept_scopes and kept_scopes[name] != name:
      raise errors.SpecError(
          f'{where}: signature "{name}" cannot be replaced while '
          f'"{kept_scopes[name]}" is kept: they share the nodes of scope '
          f'{name}/ (their frozen graphs were identical). Replace or remove '
          f'"{kept_scopes[name]}" too.')
  for name in added:
    hint = spec_lib.closest(name, in_base, 1)
    if hint:
      logging.warning(
          "Signature %s is not in the base %s, so it is added (the base's "
          "signatures are %s; to replace %s, name it so).", name, base.path,
          ", ".join(base.signatures), hint[0])
  signatures = tuple(n for n in base.signatures if n not in removed) + added
  if not signatures:
    raise errors.SpecError(
        f'{where}, key "remove": it removes every signature of the base '
        f"{base.path} ({list(base.signatures)}) and adds none; a version "
        "needs at least one signature.")
  default = spec.serving_default
  if default is not None:
    if default not in signatures and default != spec_lib.SERVING_DEFAULT:
      hint = spec_lib.closest(default, signatures, 1)
      raise errors.SpecError(
          f'{where}, key "serving_default": "{default}" is not a signature '
          f"of the new version; its signatures are {list(signatures)}" +
          (f"; did you mean {hint[0]!r}?" if hint else "."))
  elif base.serving_default is not None:
    default = base.serving_default
    if default in removed:
      raise errors.SpecError(
          f'{where}: the base {base.path} serves "{default}" as '
          f'serving_default, and "remove" drops it; name the new default '
          f"with serving_default = \"...\" (one of {list(signatures)}), or "
          "keep it.")
  if spec_lib.SERVING_DEFAULT in signatures and default not in (
      None, spec_lib.SERVING_DEFAULT):
    raise errors.SpecError(
        f'{where}, key "serving_default": the new version has a signature '
        f'named "{spec_lib.SERVING_DEFAULT}"; drop serving_default.')
  if default == spec_lib.SERVING_DEFAULT:
    default = None
  new_spec = None
  if spec.models:
    new_spec = spec_lib.MergeSpec(
        models=spec.models, message=spec.message, source=spec.source,
        allowed_asset_dirs=spec.allowed_asset_dirs)
  plan = Plan(base=base, added=added, replaced=replaced, removed=removed,
              kept=kept, signatures=signatures, serving_default=default,
              new_spec=new_spec, spec=spec)
  _check_kept_variables(plan)
  for record in _records(base.local_path):  # A corrupt warmup file fails.
    name = _record_signature(record, base.path)
    if name in kept:
      plan.kept_records.setdefault(name, []).append(record)
  return plan


# ---------------------------------------------------------------------------
# The parts of a bundle that belong to some signature scopes.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Variable:
  key: str  # Checkpoint key (= shared_name of its VarHandleOp).
  dtype: int
  shape: Any  # TensorShapeProto
  device: str
  group: str  # Restore group: the scope.


@dataclasses.dataclass
class _Part:
  """Nodes, variables, init ops and functions of some scopes of a bundle."""
  nodes: list
  handles: list  # merge_internal VarHandleOps to carry.
  variables: list
  init_inputs: list
  functions: function_pb2.FunctionDefLibrary
  producer: int
  min_consumer: int


def _functions_used(nodes: Iterable, library) -> set[str]:
  """Names of the library functions `nodes` call, transitively."""
  functions = {f.signature.name: f for f in library.function}
  gradients = {g.function_name: g.gradient_func for g in library.gradient}
  found, stack = set(), []

  def visit_attr(value):
    which = value.WhichOneof("value")
    funcs = ([value.func] if which == "func" else
             list(value.list.func) if which == "list" else [])
    for func in funcs:
      stack.append(func.name)
      for v in func.attr.values():
        visit_attr(v)

  def visit(node_list):
    for node in node_list:
      stack.append(node.op)
      for value in node.attr.values():
        visit_attr(value)

  visit(nodes)
  while stack:
    name = stack.pop()
    if name in functions and name not in found:
      found.add(name)
      visit(functions[name].node_def)
      if name in gradients:
        stack.append(gradients[name])
  return found


def _extract(meta: meta_graph_pb2.MetaGraphDef, scopes: set,
             where: str) -> _Part:
  """The nodes of `scopes` and what they need from merge_internal/."""
  graph = meta.graph_def
  nodes = [n for n in graph.node if _first_component(n.name) in scopes]
  internal = {n.name: n for n in graph.node
              if _first_component(n.name) == _INTERNAL}
  handles, variables = {}, {}
  for node in nodes:
    for source in node.input:
      name = source.lstrip("^").split(":")[0]
      if _first_component(name) != _INTERNAL:
        continue
      handle = internal.get(name)
      if handle is None or handle.op != "VarHandleOp":
        raise BaseError(
            f"{where}: node {node.name} reads {name}, which is not a "
            "variable of the merge; the bundle was not written by "
            "//python/merge.")
      key = handle.attr["shared_name"].s.decode()
      handles[name] = handle
      primary = internal.get(f"{_INTERNAL}/variables/{key}")
      if primary is None:
        raise BaseError(
            f"{where}: the variable {key} has no restore handle "
            f"{_INTERNAL}/variables/{key}; the bundle was not written by "
            "//python/merge.")
      handles[primary.name] = primary
      variables[key] = _Variable(
          key=key, dtype=handle.attr["dtype"].type,
          shape=handle.attr["shape"].shape, device=primary.device,
          group=_first_component(node.name))
  init_inputs = []
  for collection in (_MAIN_OP_KEY,):
    if collection in meta.collection_def:
      for op in meta.collection_def[collection].node_list.value:
        init = internal.get(op.split(":")[0])
        if init is not None:
          init_inputs += [i for i in init.input
                          if _first_component(i) in scopes]
  used = _functions_used(nodes, graph.library)
  library = function_pb2.FunctionDefLibrary()
  for fdef in graph.library.function:
    if fdef.signature.name in used:
      library.function.add().CopyFrom(fdef)
  for grad in graph.library.gradient:
    if grad.function_name in used:
      library.gradient.add().CopyFrom(grad)
  library.registered_gradients.extend(graph.library.registered_gradients)
  return _Part(nodes=nodes, handles=list(handles.values()),
               variables=list(variables.values()), init_inputs=init_inputs,
               functions=library, producer=graph.versions.producer,
               min_consumer=graph.versions.min_consumer)


def _kept_part(plan: Plan) -> _Part:
  return _extract(plan.base.meta_graph,
                  {plan.base.scopes[n] for n in plan.kept},
                  f"base {plan.base.path}")


def _checkpoint_reader(export_dir: str, where: str):
  prefix = _join(export_dir, _VARIABLES)
  try:
    return tf.train.load_checkpoint(prefix)
  except (ValueError, tf.errors.OpError) as e:
    message = getattr(e, "message", str(e))
    raise BaseError(
        f"{where}: its variables checkpoint {prefix} cannot be read "
        f"({message.splitlines()[0] if message else 'unreadable'}); start "
        "from another version or publish a full merge.") from e


def _check_kept_variables(plan: Plan) -> None:
  """Refuses a base whose checkpoint or assets lack what is kept."""
  part = _kept_part(plan)
  where = f"base {plan.base.path}"
  if part.variables:
    reader = _checkpoint_reader(plan.base.local_path, where)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    for var in part.variables:
      if var.key not in shapes:
        raise BaseError(
            f"{where}: its checkpoint lacks the variable {var.key} that the "
            f"kept signature(s) read; the version is corrupt. Start from "
            "another version or publish a full merge.")
      want = tf.TensorShape(var.shape)
      if (dtypes[var.key].as_datatype_enum != var.dtype or
          not want.is_compatible_with(shapes[var.key])):
        raise BaseError(
            f"{where}: its checkpoint holds {var.key} as "
            f"{dtypes[var.key].name}{shapes[var.key]}, but the graph reads "
            f"{tf.dtypes.as_dtype(var.dtype).name}{want}; the version is "
            "corrupt.")
  for asset in _kept_assets(plan):
    source = _join(_join(plan.base.local_path, "assets"), asset.filename)
    if not tf.io.gfile.exists(source):
      raise BaseError(
          f"{where}: the asset {source} of a kept signature is missing; the "
          "version is corrupt.")


def _kept_assets(plan: Plan) -> list:
  scopes = {plan.base.scopes[n] for n in plan.kept}
  return [a for a in plan.base.meta_graph.asset_file_def
          if _first_component(a.tensor_info.name) in scopes]


# ---------------------------------------------------------------------------
# Step 2: write the new version.
# ---------------------------------------------------------------------------


def _restore_nodes(variables: Sequence[_Variable]) -> tuple[list, Any]:
  """Restore (one group per scope) and save nodes, and the SaverDef.

  The layout `externalize` writes (`externalize.checkpoint_nodes`), so
  `bundle_check` restores one group at a time and TF Serving's loader runs
  `restore_all`.
  """
  if not variables:
    return [], None
  groups = {}
  for var in variables:
    groups.setdefault(var.group, []).append(var)
  return externalize.checkpoint_nodes(
      [(str(index), members) for index, members in enumerate(groups.values())],
      lambda var: f"{_INTERNAL}/variables/{var.key}")


def _nbytes(var: _Variable) -> int:
  dims = [max(d.size, 0) for d in var.shape.dim]
  count = 1
  for d in dims:
    count *= d
  return count * max(tf.dtypes.as_dtype(var.dtype).size, 1)


def _copy_variables(sources: Sequence[tuple[str, Sequence[_Variable]]],
                    export_dir: str) -> None:
  """Copies variables tensor by tensor into `<export_dir>/variables/`.

  Args:
    sources: (checkpoint prefix, its variables to copy) pairs.
    export_dir: the bundle being written.

  Values are read with RestoreV2 and written with SaveV2 in batches of at
  most 64 MiB (or one tensor), then the shards are joined, so the copy
  never holds a whole bundle.
  """
  shards = []
  shard_dir = _join(export_dir, _TMP_SHARDS)
  tf.io.gfile.makedirs(shard_dir)

  def flush(prefix, batch):
    if not batch:
      return
    values = tf.raw_ops.RestoreV2(
        prefix=prefix, tensor_names=[v.key for v in batch],
        shape_and_slices=[""] * len(batch),
        dtypes=[v.dtype for v in batch])
    shard = _join(shard_dir, f"part-{len(shards):05d}")
    tf.raw_ops.SaveV2(prefix=shard, tensor_names=[v.key for v in batch],
                      shape_and_slices=[""] * len(batch), tensors=values)
    shards.append(shard)

  try:
    for prefix, variables in sources:
      batch, size = [], 0
      for var in variables:
        nbytes = _nbytes(var)
        if batch and size + nbytes > _COPY_BATCH_BYTES:
          flush(prefix, batch)
          batch, size = [], 0
        batch.append(var)
        size += nbytes
      flush(prefix, batch)
    tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=shards,
        destination_prefix=_join(export_dir, _VARIABLES),
        delete_old_dirs=True)
    if tf.io.gfile.exists(shard_dir):
      tf.io.gfile.rmtree(shard_dir)
  except tf.errors.OpError as e:
    raise errors.GraphError(
        f"cannot copy variables into {export_dir}/variables: "
        f"{e.message}") from e


def _records(path: str) -> list[bytes]:
  warmup = _join(path, warmup_lib.WARMUP_FILE)
  if not tf.io.gfile.exists(warmup):
    return []
  try:
    return list(tf.data.TFRecordDataset(warmup).as_numpy_iterator())
  except tf.errors.OpError as e:
    raise BaseError(f"the warmup file {warmup} is corrupt: {e.message}; "
                    "start from another version or publish a full merge."
                    ) from e


def _record_signature(record: bytes, path: str) -> Optional[str]:
  try:
    log = prediction_log_pb2.PredictionLog.FromString(record)
  except proto_message.DecodeError as e:
    raise BaseError(
        f"the warmup file {_join(path, warmup_lib.WARMUP_FILE)} holds a "
        f"record that is not a PredictionLog ({e}); the version is corrupt. "
        "Start from another version or publish a full merge.") from e
  kind = log.WhichOneof("log_type")
  if kind is None:
    return None
  request = getattr(getattr(log, kind), "request", None)
  return None if request is None else request.model_spec.signature_name


def signature_info(signature: meta_graph_pb2.SignatureDef
                   ) -> signatures_lib.SignatureInfo:
  """The SignatureInfo of a SignatureDef written by the merge."""

  def specs(tensors):
    return {alias: signatures_lib.TensorSpec(
        tf.dtypes.as_dtype(t.dtype).base_dtype.name,
        None if t.tensor_shape.unknown_rank else
        [d.size for d in t.tensor_shape.dim])
            for alias, t in tensors.items()}

  tensors = {alias: t.name for alias, t in signature.inputs.items()}
  tensors.update({alias: t.name for alias, t in signature.outputs.items()})
  return signatures_lib.SignatureInfo(
      method=_METHODS.get(signature.method_name, spec_lib.PREDICT),
      inputs=specs(signature.inputs), outputs=specs(signature.outputs),
      tensors=tensors)


def _rename_asset(nodes: list, asset: meta_graph_pb2.AssetFileDef,
                  filename: str) -> None:
  """Points an asset's file name Const at `filename` (inside assets/)."""
  const = asset.tensor_info.name.split(":")[0]
  for node in nodes:
    if node.name == const and node.op == "Const":
      node.attr["value"].tensor.string_val[0] = filename.encode()
  asset.filename = filename


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while True:
      chunk = f.read(16 << 20)
      if not chunk:
        break
      digest.update(chunk)
  return digest.hexdigest()


def write_bundle(plan: Plan, export_dir: str, *, warmup: bool = True,
                 externalize_threshold_bytes: int = 1 << 20,
                 version: Optional[int] = None,
                 **writer_options) -> bundle_writer.BundleInfo:
  """Writes the incremental version planned by `prepare` into `export_dir`.

  Args:
    plan: from `prepare`.
    export_dir: the staging directory (created).
    warmup: write warmup records (kept ones carried over, new ones made).
    externalize_threshold_bytes: for the new models' graphs.
    version: the version number being written, for the manifest.
    **writer_options: passed on to `bundle_writer.write_saved_model`.

  Returns:
    A BundleInfo of the whole new version.

  Raises:
    GraphError, SpecError: as `bundle_writer` for the new models.
    BaseError: the base cannot be read.
  """
  scratch = export_dir.rstrip("/") + f"-new-{secrets.token_hex(4)}"
  new_info, new_meta = None, None
  try:
    if plan.new_spec is not None:
      new_info = bundle_writer.write_saved_model(
          plan.new_spec, scratch, warmup=warmup,
          externalize_threshold_bytes=externalize_threshold_bytes,
          **writer_options)
      new_meta = _read_saved_model(scratch).meta_graphs[0]
    info = _combine(plan, export_dir, scratch, new_info, new_meta, warmup)
  finally:
    if tf.io.gfile.exists(scratch):
      tf.io.gfile.rmtree(scratch)
  add_manifest(export_dir, info, build_manifest(
      plan.spec, info, plan=plan, version=version,
      new_manifest=new_info_manifest(new_info)))
  return info


def new_info_manifest(info) -> Optional[dict]:
  """The manifest `bundle_writer` made (on branches that write one)."""
  return getattr(info, "manifest", None) if info is not None else None


def _combine(plan: Plan, export_dir: str, scratch: str, new_info,
             new_meta: Optional[meta_graph_pb2.MetaGraphDef],
             warmup: bool) -> bundle_writer.BundleInfo:
  base = plan.base
  kept = _kept_part(plan)
  saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
  meta = saved_model.meta_graphs.add()
  graph = meta.graph_def
  library = graph_merge.FunctionLibraryMerger()
  library.add(kept.functions, "base")
  nodes = list(kept.nodes) + list(kept.handles)
  variables = list(kept.variables)
  init_inputs = list(kept.init_inputs)
  producers = [kept.producer]
  min_consumers = [kept.min_consumer]
  assets = []  # (AssetFileDef, source file)
  for asset in _kept_assets(plan):
    copy = meta_graph_pb2.AssetFileDef()
    copy.CopyFrom(asset)
    assets.append((copy, _join(_join(base.local_path, "assets"),
                                asset.filename)))
  new_part = None
  if new_meta is not None:
    new_scopes = {_first_component(i.name)
                  for name, sig in new_meta.signature_def.items()
                  for i in list(sig.inputs.values()) + list(
                      sig.outputs.values())}
    new_part = _extract(new_meta, new_scopes, "the new models' bundle")
    renames = library.add(new_part.functions, plan.new_spec.models[0]
                          .signature_name)
    graph_merge.rename_function_references(new_part.nodes, renames)
    if renames:
      logging.info("Renamed new functions colliding with kept ones: %s",
                   renames)
    nodes += new_part.nodes + new_part.handles
    variables += new_part.variables
    init_inputs += new_part.init_inputs
    producers.append(new_part.producer)
    min_consumers.append(new_part.min_consumer)
    taken = {a.filename for a, _ in assets}
    for asset in new_meta.asset_file_def:
      copy = meta_graph_pb2.AssetFileDef()
      copy.CopyFrom(asset)
      source = _join(_join(scratch, "assets"), asset.filename)
      if copy.filename in taken:
        scope = _first_component(copy.tensor_info.name)
        name, k = f"{scope}_{copy.filename}", 2
        while name in taken:
          name, k = f"{scope}_{k}_{copy.filename}", k + 1
        _rename_asset(new_part.nodes, copy, name)
      taken.add(copy.filename)
      assets.append((copy, source))
  restore_nodes, saver_def = _restore_nodes(variables)
  nodes += restore_nodes
  if init_inputs:
    init = node_def_pb2.NodeDef(name=_INIT_OP, op="NoOp")
    init.input.extend(init_inputs)
    nodes.append(init)
  graph.node.extend(nodes)
  library.write_to(graph.library)
  graph.versions.producer = min(producers)
  graph.versions.min_consumer = max(min_consumers)

  sig_defs = {}
  for name in plan.signatures:
    source = (base.meta_graph if name in plan.kept else new_meta)
    sig_defs[name] = source.signature_def[name]
  if plan.serving_default:
    sig_defs[spec_lib.SERVING_DEFAULT] = sig_defs[plan.serving_default]
  info_def = meta.meta_info_def
  info_def.tags.append(bundle_writer.SERVE_TAG)
  info_def.tensorflow_version = tf.__version__
  info_def.tensorflow_git_version = tf.__git_version__
  info_def.stripped_default_attrs = True
  info_def.stripped_op_list.CopyFrom(
      meta_graph_lib.stripped_op_list_for_graph(graph))
  for name, sig in sig_defs.items():
    meta.signature_def[name].CopyFrom(sig)
  if init_inputs:
    meta.collection_def[_MAIN_OP_KEY].node_list.value.append(_INIT_OP)
  if saver_def is not None:
    meta.saver_def.CopyFrom(saver_def)
  for asset, _ in assets:
    meta.asset_file_def.add().CopyFrom(asset)

  # Files: variables, assets, warmup, then saved_model.pb last.
  tf.io.gfile.makedirs(export_dir)
  if variables:
    new_prefix = _join(scratch, _VARIABLES)
    _copy_variables(
        [(_join(base.local_path, _VARIABLES), kept.variables)] +
        ([(new_prefix, new_part.variables)] if new_part else []),
        export_dir)
  for asset, source in assets:
    destination = _join(_join(export_dir, "assets"), asset.filename)
    try:
      tf.io.gfile.makedirs(_join(export_dir, "assets"))
      tf.io.gfile.copy(source, destination, overwrite=True)
    except tf.errors.OpError as e:
      raise errors.GraphError(
          f"cannot copy asset {source} to {destination}: {e.message}") from e
  infos = {name: signature_info(sig_defs[name]) for name in plan.signatures}
  if warmup:
    by_signature = {n: list(r) for n, r in plan.kept_records.items()}
    if new_meta is not None:
      for record in _records(scratch):
        name = _record_signature(record, scratch)
        if name in plan.added or name in plan.replaced:
          by_signature.setdefault(name, []).append(record)
    missing = {n: infos[n] for n in plan.signatures if n not in by_signature}
    if missing:  # E.g. a base published with --nowarmup.
      for name, record in zip(missing, warmup_lib.warmup_records(
          missing, graph_def=graph)):
        by_signature[name] = [record]
    warmup_lib.write_warmup(
        export_dir, [r for n in plan.signatures for r in by_signature[n]])
  data = saved_model.SerializeToString()
  with tf.io.gfile.GFile(_join(export_dir, bundle_writer.SAVED_MODEL_FILE),
                         "wb") as f:
    f.write(data)
  new_weights = list(new_info.externalized_weights) if new_info else []
  return bundle_writer.BundleInfo(
      signatures=infos, serving_default=plan.serving_default,
      unique_graphs=new_info.unique_graphs if new_info else 0,
      nodes=len(graph.node), functions=len(graph.library.function),
      externalized=len(variables),
      externalized_bytes=sum(_nbytes(v) for v in variables),
      externalized_weights=new_weights,
      lifted=list(new_info.lifted) if new_info else [],
      function_inline=list(new_info.function_inline) if new_info else [],
      init_ops=[i.lstrip("^") for i in init_inputs])


def plan_bundle(plan: Plan, *, warmup: bool = True,
                externalize_threshold_bytes: int = 1 << 20,
                **writer_options) -> bundle_writer.BundleInfo:
  """What `write_bundle` would write (new models checked, files estimated)."""
  new_info = None
  if plan.new_spec is not None:
    new_info = bundle_writer.plan(
        plan.new_spec, warmup=warmup,
        externalize_threshold_bytes=externalize_threshold_bytes,
        **writer_options)
  base = plan.base
  infos = {}
  for name in plan.signatures:
    if name in plan.kept:
      infos[name] = signature_info(base.meta_graph.signature_def[name])
    else:
      infos[name] = new_info.signatures[name]
  kept = _kept_part(plan)
  files = dict(new_info.files) if new_info else {}
  kept_bytes = sum(_nbytes(v) for v in kept.variables)
  if kept_bytes:
    key = _VARIABLES + ".data-00000-of-00001"
    files[key] = files.get(key, 0) + kept_bytes
  for asset in _kept_assets(plan):
    path = _join(_join(base.local_path, "assets"), asset.filename)
    files[f"assets/{asset.filename}"] = tf.io.gfile.stat(path).length
  return bundle_writer.BundleInfo(
      signatures=infos, serving_default=plan.serving_default,
      unique_graphs=new_info.unique_graphs if new_info else 0,
      externalized_weights=(list(new_info.externalized_weights)
                            if new_info else []),
      lifted=list(new_info.lifted) if new_info else [],
      function_inline=list(new_info.function_inline) if new_info else [],
      files=files, total_bytes=sum(files.values()))


# ---------------------------------------------------------------------------
# The manifest.
# ---------------------------------------------------------------------------


def spec_entry_sha256(model: spec_lib.ModelSpec) -> str:
  """SHA-256 of a [[model]] entry (name, method, aliases; not the path)."""
  entry = {"signature_name": model.signature_name, "method": model.method,
           "inputs": dict(sorted(model.inputs.items())),
           "outputs": dict(sorted(model.outputs.items()))}
  return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()
                        ).hexdigest()


def _source_entry(model: spec_lib.ModelSpec, graph_sha256: Optional[str],
                  status: str, version: Optional[int]) -> dict:
  if graph_sha256 is None:
    graph_sha256 = _file_sha256(model.frozen)
  entry_sha256 = spec_entry_sha256(model)
  return {
      "frozen": model.frozen,
      "method": model.method,
      "sha256": graph_sha256,
      "spec_sha256": entry_sha256,
      "fingerprint": hashlib.sha256(
          f"{graph_sha256}:{entry_sha256}".encode()).hexdigest(),
      "status": status,
      "version": version,
      "built_in_version": version,
  }


def build_manifest(spec: spec_lib.MergeSpec, info, *,
                   plan: Optional[Plan] = None,
                   previous: Optional[dict] = None,
                   previous_version: Optional[int] = None,
                   version: Optional[int] = None,
                   new_manifest: Optional[dict] = None) -> dict:
  """The manifest of a new version.

  Args:
    spec: the spec merged.
    info: the BundleInfo written.
    plan: for an incremental deploy, its Plan (statuses relative to the
      base); else statuses are relative to `previous`.
    previous: the manifest of the newest version before this one (full
      merges), if any.
    previous_version: its version number.
    version: the version being published.
    new_manifest: a manifest `bundle_writer` already made for the merged
      graphs (its SHA-256s are reused instead of reading the graphs again).

  Returns:
    The manifest: {"format", "version", "base", "signatures" (in order),
    "serving_default", "sources": {signature: {"frozen", "method", "sha256",
    "spec_sha256", "fingerprint", "status", "version", "built_in_version"}},
    "removed": {signature: {"version", ...}}, "fingerprint"} plus what
    `new_manifest` holds besides.
  """
  known = {}
  if new_manifest:
    for name, source in (new_manifest.get("sources") or {}).items():
      if isinstance(source, dict) and isinstance(source.get("sha256"), str):
        known[name] = source["sha256"]
  # A full merge keeps what bundle_writer recorded besides (its content
  # fingerprint); an incremental one's scratch bundle is only part of it.
  manifest = {k: v for k, v in (new_manifest or {}).items()
              if plan is None and
              k not in ("sources", "signatures", "serving_default")}
  sources, removed = {}, {}
  if plan is not None:
    base_sources = (plan.base.manifest or {}).get("sources") or {}
    origin = plan.base.version
    for name in plan.signatures:
      if name in plan.kept:
        entry = dict(base_sources.get(name) or {})
        if not entry:  # A base without a manifest: what is known.
          sig = plan.base.meta_graph.signature_def[name]
          entry = {"method": _METHODS.get(sig.method_name, sig.method_name),
                   "fingerprint": None, "built_in_version": origin}
        entry["status"] = KEPT
        entry["version"] = origin
        entry.setdefault("built_in_version", origin)
        sources[name] = entry
    for model in spec.models:
      status = REPLACED if model.signature_name in plan.replaced else ADDED
      sources[model.signature_name] = _source_entry(
          model, known.get(model.signature_name), status, version)
    for name in plan.removed:
      entry = dict(base_sources.get(name) or {})
      entry.update(status=REMOVED, version=origin)
      removed[name] = entry
    manifest["base"] = {"path": plan.base.path, "version": origin}
    order = list(plan.signatures)
    default = plan.serving_default
  else:
    prev_sources = (previous or {}).get("sources") or {}
    prev_names = (previous or {}).get("signatures") or []
    names = {m.signature_name for m in spec.models}
    for model in spec.models:
      status = (REPLACED if model.signature_name in prev_names else ADDED)
      entry = _source_entry(model, known.get(model.signature_name), status,
                            version)
      before = prev_sources.get(model.signature_name) or {}
      if status == REPLACED and before.get("fingerprint"):
        entry["source_changed"] = (before["fingerprint"] !=
                                   entry["fingerprint"])
      sources[model.signature_name] = entry
    for name in prev_names:
      if name not in names:
        entry = dict(prev_sources.get(name) or {})
        entry.update(status=REMOVED, version=previous_version)
        removed[name] = entry
    manifest["base"] = None
    order = [m.signature_name for m in spec.models]
    default = spec.serving_default
  del info
  manifest.update({
      "format": MANIFEST_FORMAT,
      "version": version,
      "signatures": order,
      "serving_default": default,
      "sources": sources,
      "removed": removed,
  })
  if "fingerprint" not in manifest or plan is not None:
    content = {"signatures": order, "serving_default": default,
               "sources": {n: sources[n].get("fingerprint") for n in order}}
    manifest["fingerprint"] = hashlib.sha256(
        json.dumps(content, sort_keys=True).encode()).hexdigest()
  return manifest


def write_manifest(export_dir: str, manifest: dict) -> None:
  """Writes `assets.extra/merge_manifest.json` into a bundle."""
  path = _join(export_dir, MANIFEST_FILE)
  try:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n")
              .encode())
  except tf.errors.OpError as e:
    raise errors.GraphError(f"cannot write {path}: {e.message}") from e


def add_manifest(export_dir: str, info, manifest: dict) -> None:
  """Writes the manifest into a written bundle and lists it in `info`."""
  write_manifest(export_dir, manifest)
  info.manifest = manifest
  info.fingerprint = manifest.get("fingerprint") or ""
  info.files = bundle_writer.list_files(export_dir)
  info.total_bytes = sum(info.files.values())


def newest_manifest(output_base: str) -> tuple[Optional[dict], Optional[int]]:
  """The manifest of the newest version of `output_base` (None if none)."""
  versions = publish.list_versions(output_base)
  if not versions:
    return None, None
  root = output_base.rstrip("/")
  if publish.is_local(root):
    root = os.path.abspath(root[len("file://"):] if
                           root.startswith("file://") else root)
  try:
    return read_manifest(_join(root, str(versions[-1]))), versions[-1]
  except BaseError as e:
    logging.warning("Ignoring the manifest of version %d: %s", versions[-1],
                    e)
    return None, versions[-1]


def format_manifest_text(manifest: dict) -> str:
  """The manifest for people (`inspect --dir`)."""
  if "error" in manifest and "sources" not in manifest:
    return f"Merge manifest: unreadable ({manifest['error']})"
  base = manifest.get("base") or {}
  lines = ["Merge manifest (assets.extra/merge_manifest.json):"]
  if base:
    lines.append(f"  base: version {base.get('version')} at {base.get('path')}")
  for name in manifest.get("signatures") or []:
    source = (manifest.get("sources") or {}).get(name) or {}
    fingerprint = source.get("fingerprint") or "unknown"
    lines.append(
        f"  {name} [{source.get('method')}]: {source.get('status')} "
        f"(from version {source.get('version')}, built in version "
        f"{source.get('built_in_version')}), fingerprint "
        f"{fingerprint[:16]}, frozen {source.get('frozen', 'unknown')}")
  for name, source in (manifest.get("removed") or {}).items():
    lines.append(f"  {name}: removed (was in version {source.get('version')})")
  if manifest.get("serving_default"):
    lines.append(f"  serving_default: {manifest['serving_default']}")
  return "\n".join(lines)
