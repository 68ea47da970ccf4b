"""Writes the merged SavedModel: the merge core behind `merge_lib`.

  info = bundle_writer.write_saved_model(spec, "/models/merged/.staging-x")

For every unique frozen graph of the spec (the same file listed twice is
stored once; both signatures point at the first model's scope): parse it
once, resolve the spec's aliases (dtype and static shape, closest names on
typos), scope its nodes under `<signature_name>/`, merge its function
library, strip default-valued attrs, copy the vocabulary files of its tables
into `assets/`, move its large constants to `variables/` and append its
nodes to the merged graph. Then write the warmup requests and, last,
`saved_model.pb` (tag "serve", one signature per model, plus
"serving_default" when the spec names one). Publishing (staging, fsync,
rename to a version number) is `publish`'s job.

Inputs are untrusted: graph files are read only as regular files of at most
`max_input_bytes`, a graph holding an op of `python/common/denied_ops.txt`
(in a node or a library function) is refused unless `allow_ops` names it, and
vocabulary files come only from the spec's allowed directories (`assets`).

The bundle also gets `assets.extra/merge_manifest.json` (TF Serving ignores
it): the signatures, the sources and SHA-256 of every input, and the content
`fingerprint` over all of them, which the merge compares with the newest
published version's to refuse republishing identical content.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import zlib
from typing import Iterable, NamedTuple, Optional

from absl import logging
from google.protobuf import message
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import meta_graph

from python.common import bounded_read
from python.common import op_policy
from python.merge import assets as assets_lib
from python.merge import errors
from python.merge import externalize
from python.merge import graph_io
from python.merge import graph_merge
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"
# saved_model.pb must stay below protobuf's 2 GiB message limit.
_PROTO_LIMIT = (1 << 31) - 1
_MAIN_OP_KEY = "saved_model_main_op"
MANIFEST_FILE = "assets.extra/merge_manifest.json"
DEFAULT_MAX_INPUT_BYTES = bounded_read.DEFAULT_MAX_INPUT_BYTES
# Bump when what the fingerprint covers changes.
_FINGERPRINT_FORMAT = 1

SignatureInfo = signatures_lib.SignatureInfo
TensorSpec = signatures_lib.TensorSpec


@dataclasses.dataclass
class BundleInfo:
  """What a merged bundle holds (or, from `plan`, would hold).

  Attributes:
    signatures: Model signature name -> SignatureInfo, in spec order (the
      "serving_default" alias is not repeated here; see `serving_default`).
    serving_default: Signature also exported as "serving_default", if any.
    unique_graphs: Number of distinct frozen graphs stored.
    assets: Vocabulary files copied into `assets/` (see `assets`).
    nodes: Nodes in the merged graph.
    functions: Functions in the merged function library.
    externalized: Number of constants moved to `variables/`.
    externalized_bytes: Bytes of those constants.
    externalized_weights: Those of them that are MatMul/Conv weights: on
      oneDNN CPU builds their answers are bit-identical to the frozen
      graph's only when the server runs with
      TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 (see `externalize`).
    kept_inline: Large constants kept as Consts because Grappler folds
      them into other constants (e.g. BatchNorm scales into conv weights),
      so answers stay bit-identical (see `externalize`).
    folded_externalized: Such constants externalized anyway, past the
      inline budget: their signatures may differ in the last bits.
    lifted: Constants moved out of function bodies (then externalized),
      as `<scope>/<function>/<node>` with the function's input name.
    function_inline: Function-body constants above the threshold left in
      their bodies because a call pattern cannot be rewritten safely, as
      `<scope>/<function>/<node>: <why>`; they stay in saved_model.pb.
    init_ops: Table initializers run at load time (scoped node names).
    files: Relative path -> bytes. After `write_saved_model`, the files
      written; from `plan`, an estimate (saved_model.pb and the warmup file
      exact, variables approximate).
    total_bytes: Sum of `files`.
    fingerprint: Hex SHA-256 over everything that decides what the bundle
      serves (see `manifest`).
    manifest: What `assets.extra/merge_manifest.json` holds.
  """
  signatures: dict
  serving_default: Optional[str] = None
  unique_graphs: int = 0
  assets: list = dataclasses.field(default_factory=list)
  nodes: int = 0
  functions: int = 0
  externalized: int = 0
  externalized_bytes: int = 0
  externalized_weights: list = dataclasses.field(default_factory=list)
  kept_inline: list = dataclasses.field(default_factory=list)
  folded_externalized: list = dataclasses.field(default_factory=list)
  lifted: list = dataclasses.field(default_factory=list)
  function_inline: list = dataclasses.field(default_factory=list)
  init_ops: list = dataclasses.field(default_factory=list)
  files: dict = dataclasses.field(default_factory=dict)
  total_bytes: int = 0
  fingerprint: str = ""
  manifest: dict = dataclasses.field(default_factory=dict)


def _fill_meta_graph(meta: meta_graph_pb2.MetaGraphDef, sig_defs: dict,
                     init_op: Optional[str], saver_def) -> None:
  """Fills everything but `graph_def` (already built in place)."""
  info = meta.meta_info_def
  info.tags.append(SERVE_TAG)
  info.tensorflow_version = tf.__version__
  info.tensorflow_git_version = tf.__git_version__
  info.stripped_default_attrs = True
  info.stripped_op_list.CopyFrom(
      meta_graph.stripped_op_list_for_graph(meta.graph_def))
  for name, sig in sig_defs.items():
    meta.signature_def[name].CopyFrom(sig)
  if init_op:
    meta.collection_def[_MAIN_OP_KEY].node_list.value.append(init_op)
  if saver_def is not None:
    meta.saver_def.CopyFrom(saver_def)


@dataclasses.dataclass
class _Merged:
  """What merging the input graphs produced, besides the graph itself."""
  signatures: dict
  tensor_infos: dict
  init_ops: list
  unique_graphs: int
  # Signature name -> future of the hex SHA-256 of its frozen graph's bytes.
  digests: dict = dataclasses.field(default_factory=dict)


def _check_threshold(threshold) -> None:
  # The same contract as merge_lib and --externalize_threshold_bytes.
  if (isinstance(threshold, bool) or not isinstance(threshold, int) or
      threshold < 0):
    raise errors.SpecError(
        f"externalize_threshold_bytes={threshold!r} must be a non-negative "
        "integer (bytes); a value above the largest constant keeps every "
        "constant inline.")


class _Seen(NamedTuple):
  """An input merged earlier that a later file of equal size may repeat."""
  path: str
  where: str  # For messages.
  scope: str
  skeleton: signatures_lib.Skeleton


def _check_ops(graph_def: tf.compat.v1.GraphDef, path: str, where: str,
               allow_ops: Iterable[str]) -> None:
  """Refuses a graph holding denied ops (before anything imports it)."""
  findings = op_policy.find_denied_ops(graph_def, allowed=allow_ops)
  if findings:
    raise errors.GraphError(
        op_policy.refusal(findings, f"{where}: frozen graph {path}"))


def _merge_graphs(spec: spec_lib.MergeSpec, merger: graph_merge.GraphMerger,
                  externalizer: externalize.Externalizer,
                  asset_collector: assets_lib.AssetCollector,
                  hasher: concurrent.futures.Executor,
                  max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
                  allow_ops: Iterable[str] = ()) -> _Merged:
  """Reads each input once, parses each unique one once and merges it.

  A file whose content equals an earlier one's is not parsed again: its
  model's aliases are resolved against the earlier graph, whose scope its
  signature shares. Only files whose size another file has are checksummed
  (CRC32 of the bytes read for parsing, 2.5x faster than SHA-256 here), and
  a checksum match is confirmed by comparing the bytes with the earlier file.
  """
  wheres = [signatures_lib.where(model, index, spec.source, "frozen")
            for index, model in enumerate(spec.models)]
  # Stat every file first, so a missing one fails before any work.
  sizes = [graph_io.file_size(model.frozen, where, max_input_bytes)
           for model, where in zip(spec.models, wheres)]
  totals = collections.Counter(sizes)
  remaining = collections.Counter(sizes)
  # (size, CRC32) -> the first input with that checksum, for later duplicates.
  seen = {}
  merged = _Merged(signatures={}, tensor_infos={}, init_ops=[],
                   unique_graphs=0)
  for index, model in enumerate(spec.models):
    where = wheres[index]
    size = sizes[index]
    remaining[size] -= 1
    externalizer.wait_for_large_write()
    data = graph_io.read_bytes(model.frozen, where, max_input_bytes)
    # hashlib releases the GIL: hashing runs beside the parse below.
    merged.digests[model.signature_name] = hasher.submit(
        lambda d: hashlib.sha256(d).hexdigest(), data)
    digest = None
    if totals[size] > 1:  # Another file might have the same content.
      digest = (size, zlib.crc32(data))
    earlier = seen.get(digest) if digest is not None else None
    if earlier is not None and graph_io.read_bytes(
        earlier.path, earlier.where, max_input_bytes) == data:
      del data
      scope, skeleton = earlier.scope, earlier.skeleton
      analysis = signatures_lib.resolve(skeleton, scope, [(index, model)],
                                        spec.source)
      merged.signatures.update(analysis.signatures)
      merged.tensor_infos.update(analysis.tensor_infos)
      logging.info("%s has the content of the graph merged as scope %s/; "
                   "signature %s uses it", model.frozen, scope,
                   model.signature_name)
      continue
    graph_def = graph_io.parse_graph_def(data, model.frozen, where)
    del data
    _check_ops(graph_def, model.frozen, where, allow_ops)
    scope = model.signature_name
    analysis = signatures_lib.analyze(graph_def, scope, [(index, model)],
                                      spec.source)
    if digest is not None and remaining[size] and digest not in seen:
      seen[digest] = _Seen(path=model.frozen, where=where, scope=scope,
                           skeleton=analysis.skeleton)
    merged.unique_graphs += 1
    merged.signatures.update(analysis.signatures)
    merged.tensor_infos.update(analysis.tensor_infos)
    merged.init_ops.extend(analysis.init_ops)
    del analysis
    # numerics: which large constants Grappler folds, on the graph as read;
    # large function-body constants move to graph Consts the callers pass,
    # before the library is merged (it copies the functions).
    prepared = externalizer.prepare(graph_def, _fetches(graph_def, model),
                                    scope)
    renames = merger.scope_and_rename(graph_def, scope)
    if renames:
      logging.info("Renamed colliding functions of %s: %s", model.frozen,
                   renames)
    asset_collector.collect(graph_def, scope, where)
    externalizer.process(
        graph_def, keep=asset_collector.const_names,
        folded={f"{scope}/{name}" for name in prepared.folded},
        weights=frozenset(f"{scope}/{name}" for name in prepared.weights))
    merger.append(graph_def)
    del graph_def  # Frees the input before the next one is parsed.
    logging.info("Merged %s as scope %s/ for signature %s", model.frozen,
                 scope, model.signature_name)
  return merged


def _fetches(graph_def: tf.compat.v1.GraphDef,
             model: spec_lib.ModelSpec) -> list[str]:
  """What a server runs in an input graph: its outputs and table inits."""
  return list(model.outputs.values()) + [
      n.name for n in graph_def.node
      if n.op in signatures_lib.TABLE_INIT_OPS]


def _add_init_op(merger: graph_merge.GraphMerger,
                 init_ops: list) -> Optional[str]:
  """Adds one NoOp running every table initializer; returns its name."""
  if not init_ops:
    return None
  name = f"{spec_lib.RESERVED_SCOPE}/init_all_tables"
  node = tf.compat.v1.NodeDef(name=name, op="NoOp")
  node.input.extend("^" + op for op in init_ops)
  merger.add_nodes([node])
  return name


def _serialize(saved_model: saved_model_pb2.SavedModel,
               threshold: int) -> bytes:
  """Serializes saved_model.pb, refusing protobuf's 2 GiB limit clearly."""
  fix = (f"lower externalize_threshold_bytes (now {threshold}) so more "
         "constants move to variables/.")
  library_bytes = sum(m.graph_def.library.ByteSize()
                      for m in saved_model.meta_graphs)
  if library_bytes:
    fix += (f" {library_bytes} bytes are function bodies, whose constants "
            "are externalized only when every call of their function can be "
            "rewritten (the merge warns about the others): freeze those "
            "models with their functions inlined (e.g. TF2 "
            "convert_variables_to_constants_v2 with lower_control_flow) if "
            "they hold the large weights.")
  try:
    data = saved_model.SerializeToString()
  except (ValueError, message.EncodeError) as e:
    raise errors.GraphError(
        f"the merged saved_model.pb is over protobuf's 2 GiB limit ({e}); "
        + fix) from e
  if len(data) > _PROTO_LIMIT:
    raise errors.GraphError(
        f"the merged saved_model.pb would be {len(data)} bytes, over "
        "protobuf's 2 GiB limit; " + fix)
  return data


def _manifest(spec: spec_lib.MergeSpec, merged: _Merged, assets: list,
              warmup: bool, threshold: int) -> dict:
  """The manifest, with the content fingerprint over what it lists."""
  content = {
      "format": _FINGERPRINT_FORMAT,
      "models": [{
          "signature_name": m.signature_name,
          "method": m.method,
          "inputs": dict(sorted(m.inputs.items())),
          "outputs": dict(sorted(m.outputs.items())),
          "sha256": merged.digests[m.signature_name].result(),
      } for m in spec.models],
      "serving_default": spec.serving_default,
      "assets": sorted({a.filename: a.sha256 for a in assets}.items()),
      "warmup": bool(warmup),
      "externalize_threshold_bytes": threshold,
  }
  fingerprint = hashlib.sha256(
      json.dumps(content, sort_keys=True).encode()).hexdigest()
  return {
      "fingerprint": fingerprint,
      "signatures": [m.signature_name for m in spec.models],
      "serving_default": spec.serving_default,
      "sources": {
          m.signature_name: {"frozen": m.frozen, "method": m.method,
                             "sha256": merged.digests[
                                 m.signature_name].result()}
          for m in spec.models},
      "assets": {a.filename: {"source": a.source, "sha256": a.sha256}
                 for a in assets},
      "content": content,
      "tensorflow_version": tf.__version__,
  }


def manifest_bytes(manifest: dict) -> bytes:
  """The serialized manifest file."""
  return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def read_manifest(export_dir: str) -> Optional[dict]:
  """The manifest of a bundle, or None if it has none or it is unreadable."""
  path = export_dir.rstrip("/") + "/" + MANIFEST_FILE
  try:
    data = bounded_read.read_regular_file(path, 64 << 20)
    manifest = json.loads(data.decode("utf-8"))
  except (bounded_read.InputFileError, ValueError):
    return None
  return manifest if isinstance(manifest, dict) else None


def _write_files(export_dir: str, data: bytes, records: list,
                 manifest: dict) -> None:
  """Writes the warmup file and the manifest, then saved_model.pb last."""
  if records:
    warmup_lib.write_warmup(export_dir, records)
  base = export_dir.rstrip("/")
  path = base + "/" + SAVED_MODEL_FILE
  try:
    tf.io.gfile.makedirs(base + "/" + MANIFEST_FILE.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(base + "/" + MANIFEST_FILE, "wb") as f:
      f.write(manifest_bytes(manifest))
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)
  except tf.errors.OpError as e:
    raise errors.GraphError(f"cannot write {path}: {e.message}") from e


def _build(spec: spec_lib.MergeSpec, export_dir: Optional[str], warmup: bool,
           externalize_threshold_bytes: int, max_input_bytes: int,
           allow_ops: Iterable[str]) -> BundleInfo:
  """Plans (export_dir None) or writes the bundle; see write_saved_model."""
  spec_lib.validate_spec(spec)
  _check_threshold(externalize_threshold_bytes)
  if (isinstance(max_input_bytes, bool) or not isinstance(max_input_bytes, int)
      or max_input_bytes < 1):
    raise errors.SpecError(
        f"max_input_bytes={max_input_bytes!r} must be a positive number of "
        f"bytes; the default is {DEFAULT_MAX_INPUT_BYTES}.")
  allow_ops = tuple(allow_ops)
  # The merged graph is built directly inside the proto that is written.
  saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
  meta = saved_model.meta_graphs.add()
  merger = graph_merge.GraphMerger(meta.graph_def)
  externalizer = externalize.Externalizer(externalize_threshold_bytes,
                                          export_dir)
  asset_collector = assets_lib.AssetCollector(
      allowed_dirs=spec_lib.asset_dirs(spec), max_bytes=max_input_bytes)
  hasher = concurrent.futures.ThreadPoolExecutor(
      max_workers=1, thread_name_prefix="merge-sha256")
  try:
    merged = _merge_graphs(spec, merger, externalizer, asset_collector,
                           hasher, max_input_bytes, allow_ops)
    restore_nodes, saver_def = externalizer.finish()
    manifest = _manifest(spec, merged, asset_collector.assets, warmup,
                         externalize_threshold_bytes)
  finally:
    externalizer.close()  # On error, no shard write outlives the merge.
    hasher.shutdown(wait=True)
  merger.add_nodes(restore_nodes)
  init_op = _add_init_op(merger, merged.init_ops)
  graph_def = merger.finish()

  ordered = {m.signature_name: merged.signatures[m.signature_name]
             for m in spec.models}
  sig_defs = {name: signatures_lib.signature_def(
      info, merged.tensor_infos[name]) for name, info in ordered.items()}
  if spec.serving_default and spec.serving_default != spec_lib.SERVING_DEFAULT:
    sig_defs[spec_lib.SERVING_DEFAULT] = sig_defs[spec.serving_default]
  _fill_meta_graph(meta, sig_defs, init_op, saver_def)
  asset_collector.add_to(meta)
  info = BundleInfo(
      signatures=ordered,
      serving_default=spec.serving_default,
      unique_graphs=merged.unique_graphs,
      nodes=len(graph_def.node),
      functions=len(graph_def.library.function),
      externalized=externalizer.count,
      externalized_bytes=externalizer.externalized_bytes,
      externalized_weights=list(externalizer.weights),
      kept_inline=list(externalizer.kept_inline),
      folded_externalized=list(externalizer.folded_externalized),
      lifted=list(externalizer.lifted),
      function_inline=list(externalizer.function_inline),
      assets=list(asset_collector.assets),
      init_ops=merged.init_ops,
      fingerprint=manifest["fingerprint"],
      manifest=manifest)
  if externalizer.weights:
    logging.warning(
        "%d externalized constant(s) are MatMul/Conv weights (%s%s). On "
        "oneDNN CPU builds of TensorFlow (Serving) they run a different "
        "kernel than constant weights do, so answers may differ from the "
        "frozen graphs' in the last bits unless the server runs with %s=1 "
        "(or raise externalize_threshold_bytes, now %d, above their size).",
        len(externalizer.weights), ", ".join(externalizer.weights[:3]),
        ", ..." if len(externalizer.weights) > 3 else "",
        externalize.ONEDNN_FROZEN_WEIGHTS_ENV, externalize_threshold_bytes)
  if externalizer.function_inline:
    logging.warning(
        "%d constant(s) above externalize_threshold_bytes stay inside "
        "function bodies (%d bytes in saved_model.pb), because a call of "
        "their function cannot be rewritten to pass them: %s%s",
        len(externalizer.function_inline),
        externalizer.function_inline_bytes,
        "; ".join(externalizer.function_inline[:3]),
        "; ..." if len(externalizer.function_inline) > 3 else "")
  # Warmup records from the merged graph (python/common/synthesis's policy:
  # string inputs carry the Examples their parse ops read, unknown ranks the
  # shape the graph pins down), before the graph is serialized and dropped.
  examples = (warmup_lib.synthesize_examples(graph_def, ordered)
              if warmup else {})
  records = (warmup_lib.warmup_records(ordered, examples, graph_def=graph_def)
             if warmup else [])
  data = _serialize(saved_model, externalize_threshold_bytes)
  del saved_model, meta, graph_def

  if export_dir is None:
    info.files.update(asset_collector.files())
    info.files[SAVED_MODEL_FILE] = len(data)
    if records:
      info.files[warmup_lib.WARMUP_FILE] = warmup_lib.record_file_size(
          records)
    info.files[MANIFEST_FILE] = len(manifest_bytes(manifest))
    if info.externalized_bytes:
      info.files[externalize.VARIABLES_PREFIX + ".data-00000-of-00001"] = (
          info.externalized_bytes)
  else:
    asset_collector.write(export_dir)
    _write_files(export_dir, data, records, manifest)
    info.files = list_files(export_dir)
  info.total_bytes = sum(info.files.values())
  return info


def list_files(export_dir: str) -> dict[str, int]:
  """Relative path -> size of every file under `export_dir`."""
  files = {}
  base = export_dir.rstrip("/")
  for root, _, names in tf.io.gfile.walk(base):
    for name in names:
      path = root.rstrip("/") + "/" + name
      files[path[len(base) + 1:]] = tf.io.gfile.stat(path).length
  return dict(sorted(files.items()))


def write_saved_model(spec: spec_lib.MergeSpec, export_dir: str, *,
                      warmup: bool = True,
                      externalize_threshold_bytes: int = 1 << 20,
                      max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
                      allow_ops: Iterable[str] = ()) -> BundleInfo:
  """Writes the merged SavedModel of `spec` into `export_dir`.

  `saved_model.pb` is written last, so a reader never sees it before the
  variables and warmup files. Nothing is fsynced (the publisher does that).
  On error the directory may hold partial files but no saved_model.pb.

  Args:
    spec: The validated or Python-built spec (validated again here).
    export_dir: Local path or tf.io.gfile URI; created if missing.
    warmup: Write `assets.extra/tf_serving_warmup_requests`.
    externalize_threshold_bytes: Constants larger than this move to
      `variables/` (non-negative; above the largest constant keeps all
      inline).
    max_input_bytes: Frozen graphs and vocabulary files larger than this are
      refused.
    allow_ops: Ops of `python/common/denied_ops.txt` accepted anyway.

  Returns:
    The BundleInfo, with `files` listing what was written.

  Raises:
    SpecError: invalid spec.
    GraphError: unreadable/corrupt graph, not a regular file or too large,
      denied ops, alias not in the graph (closest names listed), method
      structure violated, vocabulary file outside the allowed directories,
      unwritable export_dir.
  """
  return _build(spec, export_dir, warmup, externalize_threshold_bytes,
                max_input_bytes, allow_ops)


def plan(spec: spec_lib.MergeSpec, *, warmup: bool = True,
         externalize_threshold_bytes: int = 1 << 20,
         max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
         allow_ops: Iterable[str] = ()) -> BundleInfo:
  """Does every check `write_saved_model` does without writing anything.

  Args:
    spec: The spec.
    warmup: Whether warmup requests would be written (affects `files`).
    externalize_threshold_bytes: As for `write_saved_model`.
    max_input_bytes: As for `write_saved_model`.
    allow_ops: As for `write_saved_model`.

  Returns:
    The BundleInfo the write would produce (`files` estimated).

  Raises:
    SpecError, GraphError: as `write_saved_model`.
  """
  return _build(spec, None, warmup, externalize_threshold_bytes,
                max_input_bytes, allow_ops)
