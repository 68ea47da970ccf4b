"""Describing frozen graphs and SavedModels: what a spec author needs to know.

`describe_frozen(path)` lists a GraphDef's placeholders (the tensors to feed),
its probable outputs (tensors no other node consumes) and every tensor with
dtype and static shape. `describe_saved_model(dir)` reads a SavedModel's
`saved_model.pb` (no weights are loaded) and lists its tag-sets and
signatures like `saved_model_cli show --all`. Both return plain dicts (the
`--format=json` output) with text formatters beside them, and both list the
nodes running ops the merge refuses by default (`denied_ops`, like
`saved_model_cli scan`). Files are read as the merge reads them: regular
files only, at most `max_input_bytes`, text protos nested at most 100 levels.
"""

from typing import Any, Optional

import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from python.common import bounded_read
from python.common import op_policy
from python.merge import errors
from python.merge import graph_io
from python.merge import incremental
from python.merge import saved_model_io

# Ops whose unconsumed outputs are not model outputs.
_NOT_OUTPUTS = frozenset({
    "Const", "NoOp", "Assert", "Print", "PrintV2", "Placeholder",
    "PlaceholderWithDefault", "VarHandleOp", "VariableV2", "Variable",
    "HashTableV2", "MutableHashTableV2", "MutableDenseHashTableV2",
    "InitializeTableV2", "InitializeTableFromTextFileV2", "SaveV2",
    "RestoreV2", "MergeV2Checkpoints", "AssignVariableOp", "Assign",
    "ControlTrigger",
})


class InspectError(errors.MergeError):
  """The file or directory to inspect cannot be read."""


def describe_frozen(
    path: str,
    max_input_bytes: int = bounded_read.DEFAULT_MAX_INPUT_BYTES
) -> dict[str, Any]:
  """Describes a frozen GraphDef.

  Args:
    path: a `.pb` (binary) or `.pbtxt` (text) GraphDef, local or URI.
    max_input_bytes: larger files are refused.

  Returns:
    {"path", "nodes", "functions", "placeholders": [tensor], "outputs":
    [tensor], "tensors": [tensor], "denied_ops": [{"op", "node",
    "function"}]} where each tensor is {"name", "op", "dtype", "shape"}
    (shape: list with -1 for unknown dims, None for unknown rank).

  Raises:
    errors.GraphError: the file is missing, corrupt or not a GraphDef.
    InspectError: the graph cannot be imported (e.g. an unknown op).
  """
  graph_def = graph_io.read_graph_def(path, f"--frozen={path}",
                                      max_input_bytes)
  denied = [f.to_json() for f in op_policy.find_denied_ops(graph_def)]
  graph = tf.Graph()
  try:
    with graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name="")
  except (ValueError, tf.errors.OpError) as e:
    raise InspectError(
        f"--frozen={path}: the GraphDef does not import into TensorFlow "
        f"{tf.__version__}: {bounded_read.shorten_message(str(e), 300)}"
    ) from e
  tensors, placeholders, outputs = [], [], []
  for op in graph.get_operations():
    described = [_tensor_dict(t) for t in op.outputs]
    tensors.extend(described)
    if op.type in ("Placeholder", "PlaceholderWithDefault"):
      placeholders.extend(described)
    elif (op.type not in _NOT_OUTPUTS and op.outputs and
          not op._control_outputs and  # pylint: disable=protected-access
          not any(t.consumers() for t in op.outputs)):
      outputs.extend(described)
  return {
      "path": path,
      "nodes": len(graph_def.node),
      "functions": len(graph_def.library.function),
      "placeholders": placeholders,
      "outputs": outputs,
      "tensors": tensors,
      "denied_ops": denied,
  }


def _denied_text(denied: list[dict[str, Any]]) -> list[str]:
  """The lines listing denied ops (none: one line saying so)."""
  if not denied:
    return ["Ops refused by default (python/common/denied_ops.txt): none"]
  ops = sorted({d["op"] for d in denied})
  lines = [f"Ops refused by default (python/common/denied_ops.txt; the merge "
           f"needs --allow_ops={','.join(ops)}):"]
  for d in denied:
    where = f' in function "{d["function"]}"' if d["function"] else ""
    lines.append(f"  {d['op']}  node \"{d['node']}\"{where}")
  return lines


def format_frozen_text(desc: dict[str, Any]) -> str:
  """Formats `describe_frozen`'s result for people, with a spec skeleton."""
  lines = [
      f"Frozen graph {desc['path']}: {desc['nodes']} nodes, "
      f"{desc['functions']} library functions",
      "",
      "Placeholders (feed these; spec `inputs`):",
  ]
  lines += _tensor_table(desc["placeholders"], with_op=False) or ["  (none)"]
  lines += ["", "Probable outputs (consumed by no other node; spec `outputs`):"]
  lines += _tensor_table(desc["outputs"], with_op=True) or ["  (none)"]
  lines += ["", f"All tensors ({len(desc['tensors'])}):"]
  lines += _tensor_table(desc["tensors"], with_op=True)
  lines += [""] + _denied_text(desc["denied_ops"])
  lines += ["", "Spec skeleton:", "  [[model]]",
            '  signature_name = "my_model"',
            f'  frozen = "{desc["path"]}"',
            f"  inputs = {_alias_table(desc['placeholders'])}",
            f"  outputs = {_alias_table(desc['outputs'])}"]
  return "\n".join(lines)


def describe_saved_model(
    export_dir: str,
    max_input_bytes: int = bounded_read.DEFAULT_MAX_INPUT_BYTES
) -> dict[str, Any]:
  """Describes a SavedModel's MetaGraphs and signatures (no weights loaded).

  Args:
    export_dir: a SavedModel directory (a version directory), local or URI.
    max_input_bytes: a larger saved_model.pb is refused.

  Returns:
    {"path", "meta_graphs": [{"tags": [...], "signatures": {name: {"method",
    "inputs": {alias: {"dtype", "shape", "name"}}, "outputs": {...}}},
    "denied_ops": [{"op", "node", "function"}]}]} (the SaverDef's own
    checkpoint ops are not listed).

  Raises:
    InspectError: no saved_model.pb(txt) (listing the versions when
      `export_dir` is a model base path), or it cannot be parsed.
  """
  proto = _read_saved_model(export_dir, max_input_bytes)
  meta_graphs = []
  for meta_graph in proto.meta_graphs:
    signatures = {}
    for name in sorted(meta_graph.signature_def):
      sig = meta_graph.signature_def[name]
      signatures[name] = {
          "method": sig.method_name,
          "inputs": {a: _info_dict(i) for a, i in sorted(sig.inputs.items())},
          "outputs": {
              a: _info_dict(i) for a, i in sorted(sig.outputs.items())
          },
      }
    denied = op_policy.find_denied_ops(
        meta_graph.graph_def,
        exempt_nodes=op_policy.saver_exemptions(meta_graph),
        saver_functions=op_policy.saver_only_functions(meta_graph))
    meta_graphs.append({
        "tags": list(meta_graph.meta_info_def.tags),
        "signatures": signatures,
        "denied_ops": [f.to_json() for f in denied],
    })
  # The merge's manifest (python/merge/incremental.py), when there is one.
  try:
    manifest = incremental.read_manifest(export_dir)
  except incremental.BaseError as e:
    manifest = {"error": str(e)}
  return {"path": export_dir, "meta_graphs": meta_graphs,
          "manifest": manifest}


def format_saved_model_text(desc: dict[str, Any]) -> str:
  """Formats `describe_saved_model`'s result like `saved_model_cli show`."""
  lines = []
  for meta_graph in desc["meta_graphs"]:
    tags = ", ".join(meta_graph["tags"])
    lines.append(f"MetaGraphDef with tag-set: '{tags}' contains the "
                 "following SignatureDefs:")
    for name, sig in meta_graph["signatures"].items():
      lines += ["", f"signature_def['{name}']:"]
      for kind, word in (("inputs", "input(s)"), ("outputs", "output(s)")):
        lines.append("  The given SavedModel SignatureDef contains the "
                     f"following {word}:")
        for alias, info in sig[kind].items():
          lines += [
              f"    {kind}['{alias}'] tensor_info:",
              f"        dtype: {info['dtype_enum']}",
              f"        shape: {_shape_text(info['shape'])}",
              f"        name: {info['name']}",
          ]
      lines.append(f"  Method name is: {sig['method']}")
    lines += [""] + _denied_text(meta_graph.get("denied_ops", [])) + [""]
  if desc.get("manifest"):
    lines.append(incremental.format_manifest_text(desc["manifest"]))
  return "\n".join(lines).rstrip("\n")


def _read_saved_model(export_dir: str,
                      max_bytes: int) -> saved_model_pb2.SavedModel:
  try:
    return saved_model_io.read_saved_model(export_dir, max_bytes, "--dir=")
  except saved_model_io.SavedModelReadError as e:
    raise InspectError(str(e)) from e


def _shape_list(shape: tf.TensorShape) -> Optional[list[int]]:
  if shape.rank is None:
    return None
  return [-1 if d is None else int(d) for d in shape.as_list()]


def _tensor_dict(tensor: tf.Tensor) -> dict[str, Any]:
  return {
      "name": tensor.name,
      "op": tensor.op.type,
      "dtype": tensor.dtype.name,
      "shape": _shape_list(tensor.shape),
  }


def _info_dict(info) -> dict[str, Any]:
  # DT_INVALID (0): an op, not a tensor, e.g. the `__saved_model_init_op`
  # signature of TF2 exports (saved_model_cli shows it as DT_INVALID too).
  return {
      "dtype": (tf.dtypes.as_dtype(info.dtype).name if info.dtype else
                "invalid"),
      "dtype_enum": types_pb2.DataType.Name(info.dtype),
      "shape": _shape_list(tf.TensorShape(info.tensor_shape)),
      "name": info.name,
  }


def _shape_text(shape: Optional[list[int]]) -> str:
  if shape is None:
    return "unknown_rank"
  if len(shape) == 1:
    return f"({shape[0]})"
  return "(" + ", ".join(map(str, shape)) + ")"


def _tensor_table(tensors: list[dict[str, Any]], with_op: bool) -> list[str]:
  rows = [(t["name"], t["op"] if with_op else "", t["dtype"],
           "unknown_rank" if t["shape"] is None else str(t["shape"]))
          for t in tensors]
  if not rows:
    return []
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  out = []
  for row in rows:
    cells = [row[0].ljust(widths[0])]
    if with_op:
      cells.append(row[1].ljust(widths[1]))
    cells += [row[2].ljust(widths[2]), row[3]]
    out.append("  " + "  ".join(cells))
  return out


def _alias_table(tensors: list[dict[str, Any]]) -> str:
  items = []
  for t in tensors:
    alias = t["name"].split(":")[0].rsplit("/", 1)[-1]
    items.append(f'{alias} = "{t["name"]}"')
  return "{ " + ", ".join(items) + " }" if items else "{}"
