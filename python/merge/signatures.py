"""Resolving spec aliases against a frozen graph, and building SignatureDefs.

Shapes come from TensorFlow's shape inference: a copy of the graph in which
large constants are replaced by placeholders of the same dtype and shape (so
no weights are copied) is imported into a throwaway tf.Graph, with Python
`Operation`s for the aliased nodes only (`graph_import`). When inference
cannot tell a rank, in this order:

  1. the node's declared `_output_shapes` attr (graphs written with
     `add_shapes=True`), or the declared `_output_shapes` of the function
     body node a call op (PartitionedCall, StatefulPartitionedCall or a
     function called by name) returns;
  2. v1 while loops (`_loop_shapes`): the importer infers in one pass, so a
     loop's `Merge` (fed back by `NextIteration`) has unknown shape and so
     has everything after the loop. The skeleton is imported again with each
     loop `Merge` replaced by a `Placeholder` of its entry value's shape,
     then relaxed to what the `NextIteration` brings back until the two
     agree (a fixpoint, at most `_LOOP_PASSES` imports);
  3. unknown rank.
"""

import dataclasses
from typing import NamedTuple, Optional, Sequence

import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from python.merge import errors
from python.common import graph_import
from python.merge import graph_io
from python.merge import spec as spec_lib

# Constants above this size are replaced by placeholders for shape inference.
_SKELETON_CONST_BYTES = 1024

# Ops that fill lookup tables; the merged bundle runs them at load time.
TABLE_INIT_OPS = frozenset((
    "InitializeTable", "InitializeTableV2", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "LookupTableImport",
    "LookupTableImportV2", "InitializeTableFromDataset"))
# Imports of the skeleton tried while looking for v1 while-loop shapes.
_LOOP_PASSES = 4
_CALL_OPS = frozenset(("PartitionedCall", "StatefulPartitionedCall"))
# Ops whose presence means the graph was not frozen.
_VARIABLE_OPS = frozenset(("Variable", "VariableV2", "VarHandleOp"))


class TensorSpec(NamedTuple):
  """dtype name (e.g. "float32") and shape (-1 unknown dim; None rank)."""
  dtype: str
  shape: Optional[list]


@dataclasses.dataclass
class SignatureInfo:
  """What one signature of the merged bundle takes and returns.

  Attributes:
    method: "predict", "classify" or "regress".
    inputs: Alias -> TensorSpec.
    outputs: Alias -> TensorSpec.
    tensors: Alias -> tensor name in the merged graph (inputs and outputs).
  """
  method: str
  inputs: dict
  outputs: dict
  tensors: dict = dataclasses.field(default_factory=dict)

  @property
  def method_name(self) -> str:
    return spec_lib.METHOD_NAMES[self.method]


@dataclasses.dataclass
class _Resolved:
  name: str
  dtype: tf.DType
  shape: Optional[list]


@dataclasses.dataclass
class GraphAnalysis:
  """Result of analyzing one unique input graph.

  Attributes:
    signatures: Signature name -> SignatureInfo (tensor names scoped).
    init_ops: Scoped names of table initializers to run at load.
    tensor_infos: Signature name -> (inputs, outputs) of alias -> TensorInfo.
    skeleton: The graph the aliases were resolved against (see `Skeleton`);
      pass it to `resolve` for another model using the same file.
  """
  signatures: dict
  init_ops: list
  tensor_infos: dict
  skeleton: Optional["Skeleton"] = None


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """An input graph for shape inference, without its large constants.

  Attributes:
    graph_def: The serialized GraphDef, large Consts replaced by Placeholders.
    node_names: Every node name in it.
    inputs_of: Node name -> names of the nodes it reads (data and control).
    placeholders: Names of the input graph's own Placeholder nodes (not the
      ones standing in for large constants).
  """
  graph_def: bytes
  node_names: frozenset
  inputs_of: dict = dataclasses.field(default_factory=dict, compare=False)
  placeholders: frozenset = frozenset()


def where(model: spec_lib.ModelSpec, index: int, source: Optional[str],
          key: Optional[str] = None) -> str:
  """Formats the context of a message: spec file, model and key."""
  parts = [f"spec {source}" if source else "spec",
           f'model #{index + 1} "{model.signature_name}"']
  if key:
    parts.append(f'key "{key}"')
  return ", ".join(parts)


def _skeleton(graph_def: tf.compat.v1.GraphDef) -> Skeleton:
  """`graph_def` with large Consts replaced by Placeholders, serialized."""
  skeleton = tf.compat.v1.GraphDef()
  skeleton.versions.CopyFrom(graph_def.versions)
  skeleton.library.CopyFrom(graph_def.library)
  for node in graph_def.node:
    if (node.op == "Const" and graph_io.tensor_nbytes(
        node.attr["value"].tensor) > _SKELETON_CONST_BYTES):
      tensor = node.attr["value"].tensor
      placeholder = skeleton.node.add(name=node.name, op="Placeholder",
                                      device=node.device)
      placeholder.attr["dtype"].type = tensor.dtype
      placeholder.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
    else:
      skeleton.node.add().CopyFrom(node)
  return Skeleton(
      graph_def=skeleton.SerializeToString(),
      node_names=frozenset(n.name for n in skeleton.node),
      inputs_of={n.name: tuple(_node_of(i) for i in n.input)
                 for n in graph_def.node},
      placeholders=frozenset(n.name for n in graph_def.node
                             if n.op == "Placeholder"))


def _node_of(tensor_or_input: str) -> str:
  return tensor_or_input.lstrip("^").partition(":")[0]


def _unfed_placeholders(skeleton: Skeleton, output: str,
                        fed: set) -> list[str]:
  """Placeholders `output` depends on without passing a fed node."""
  found, seen = [], set()
  stack = [_node_of(output)]
  while stack:
    name = stack.pop()
    if name in seen or name in fed:
      continue
    seen.add(name)
    if name in skeleton.placeholders:
      found.append(name)
    stack.extend(skeleton.inputs_of.get(name, ()))
  return sorted(found)


def _check_inputs_cover_outputs(skeleton: Skeleton,
                                model: spec_lib.ModelSpec,
                                context: str) -> None:
  """Refuses an output that needs a placeholder the spec does not list.

  No request can feed such a placeholder, so the signature would fail on
  every request (and the bundle check would fail on a staged copy).
  """
  fed = {_node_of(t) for t in model.inputs.values()}
  for alias, tensor in model.outputs.items():
    missing = _unfed_placeholders(skeleton, tensor, fed)
    if missing:
      example = ", ".join(
          f'{name.rsplit("/", 1)[-1]} = "{name}:0"' for name in missing[:3])
      raise errors.GraphError(
          f'{context}, key "outputs": output "{alias}" ("{tensor}") needs '
          f"placeholder(s) {', '.join(repr(m) for m in missing[:5])}, which "
          "are not among the model's inputs, so no request could feed them. "
          f"Add them to the model's inputs (e.g. inputs = {{ ..., {example} "
          "}) or choose outputs that do not depend on them.")


def _import(skeleton: Skeleton, op_names: set, path: str,
            context: str) -> dict[str, tf.Operation]:
  """Imports the skeleton; returns the named nodes that it has."""
  try:
    _, operations = graph_import.import_graph_def(
        skeleton.graph_def, op_names & skeleton.node_names)
  except ValueError as e:
    raise errors.GraphError(
        f"{context}: frozen graph {path} is not a valid graph for TensorFlow "
        f"{tf.__version__}: {e}") from e
  return operations


def _shape_list(shape) -> Optional[list]:
  """A TensorShapeProto as a list (-1 unknown dims), None if unknown rank."""
  if shape.unknown_rank:
    return None
  return [d.size if d.size >= 0 else -1 for d in shape.dim]


def _output_shapes_attr(op: tf.Operation, index: int) -> Optional[list]:
  try:
    shapes = op.get_attr("_output_shapes")
  except ValueError:
    return None
  if index >= len(shapes):
    return None
  return _shape_list(shapes[index])


def _function_output_shape(graph_def: tf.compat.v1.GraphDef, node_name: str,
                           index: int) -> Optional[list]:
  """The declared shape a called function returns as output `index`.

  Follows the call node's function to the body node its `index`-th result
  comes from and reads that node's `_output_shapes` attr.
  """
  node = next((n for n in graph_def.node if n.name == node_name), None)
  if node is None:
    return None
  functions = {f.signature.name: f for f in graph_def.library.function}
  name = node.attr["f"].func.name if node.op in _CALL_OPS else node.op
  fdef = functions.get(name)
  if fdef is None or index >= len(fdef.signature.output_arg):
    return None
  source = fdef.ret.get(fdef.signature.output_arg[index].name, "")
  body_node, _, rest = source.partition(":")
  port = int(rest.rpartition(":")[2]) if rest.rpartition(":")[2].isdigit() \
      else 0
  body = next((n for n in fdef.node_def if n.name == body_node), None)
  if body is None or "_output_shapes" not in body.attr:
    return None
  shapes = body.attr["_output_shapes"].list.shape
  if port >= len(shapes):
    return None
  return _shape_list(shapes[port])


def _loop_shapes(skeleton: Skeleton, tensors: set) -> dict:
  """Shapes of `tensors` (names) seen through v1 while loops.

  See the module docstring (2.); tensors still unknown are left out.
  """
  graph_def = tf.compat.v1.GraphDef()
  graph_def.ParseFromString(skeleton.graph_def)
  nodes = {n.name: n for n in graph_def.node}

  def source(tensor: str) -> str:
    return tensor.lstrip("^").partition(":")[0]

  merges = {}  # Loop Merge -> (entry tensor, NextIteration's input)
  for node in graph_def.node:
    if node.op not in ("Merge", "RefMerge") or len(node.input) != 2:
      continue
    entry, back = node.input
    if nodes.get(source(back), node).op != "NextIteration":
      entry, back = back, entry
    if nodes.get(source(back), node).op == "NextIteration":
      # A (non-constant) Enter's shape function says "unknown": the value
      # entering the loop is the Enter's input.
      while nodes.get(source(entry), node).op in ("Enter", "RefEnter"):
        entry = nodes[source(entry)].input[0]
      merges[node.name] = (entry, nodes[source(back)].input[0])
  read_index = any(i.startswith(m + ":1") for n in graph_def.node
                   for i in n.input for m in merges)
  if not merges or read_index:
    return {}
  wanted = {source(t) for t in tensors}
  wanted |= {source(t) for pair in merges.values() for t in pair}

  def shapes_with(assumed: dict) -> dict:
    variant = tf.compat.v1.GraphDef()
    variant.CopyFrom(graph_def)
    for node in variant.node:
      if node.name in assumed:
        dtype = node.attr["T"].type
        node.op = "Placeholder"
        node.ClearField("attr")
        del node.input[:]
        node.attr["dtype"].type = dtype
        node.attr["shape"].shape.CopyFrom(assumed[node.name].as_proto())
    try:
      _, ops = graph_import.import_graph_def(variant.SerializeToString(),
                                             wanted & skeleton.node_names)
    except ValueError:
      return {}
    result = {}
    for name, op in ops.items():
      for i, out in enumerate(op.outputs):
        result[f"{name}:{i}"] = out.shape
    return result

  def full(tensor: str) -> str:
    return tensor if ":" in tensor else tensor + ":0"

  first = shapes_with({m: tf.TensorShape(None) for m in merges})
  assumed = {m: first.get(full(entry), tf.TensorShape(None))
             for m, (entry, _) in merges.items()}
  for _ in range(_LOOP_PASSES):
    shapes = shapes_with(assumed)
    if not shapes:
      return {}
    relaxed = {m: assumed[m].most_specific_compatible_shape(
        shapes.get(full(back), tf.TensorShape(None)))
               for m, (_, back) in merges.items()}
    if all(relaxed[m] == assumed[m] for m in merges):
      return {t: shapes[full(t)] for t in tensors
              if full(t) in shapes and shapes[full(t)].rank is not None}
    assumed = relaxed
  return {}


def _tensor_names(skeleton: Skeleton) -> list[str]:
  """Every tensor name of the graph (for "closest names" hints only)."""
  graph_def = tf.compat.v1.GraphDef()
  graph_def.ParseFromString(skeleton.graph_def)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
  return [t.name for op in graph.get_operations() for t in op.outputs]


def _resolve(operations: dict, skeleton: Skeleton, tensor: str, alias: str,
             key: str, path: str, context: str) -> _Resolved:
  """Finds a tensor of the graph for a spec alias, or explains why not."""
  node, _, index = tensor.partition(":")
  index = int(index) if index else 0
  op = operations.get(node)
  if op is None or index >= len(op.outputs):
    names = _tensor_names(skeleton)
    hint = spec_lib.closest(f"{node}:{index}", names)
    if op is not None:
      problem = (f'node "{node}" has {len(op.outputs)} output(s), so '
                 f'"{tensor}" does not exist')
    else:
      problem = f'tensor "{tensor}" is not in the graph'
    raise errors.GraphError(
        f'{context}, key "{key}": alias "{alias}": {problem} ({path}). '
        + (f"Closest names: {', '.join(hint)}." if hint else
           f"The graph has {len(names)} tensors; list them with "
           f"`bazel run //python/merge:inspect -- --frozen={path}`."))
  out = op.outputs[index]
  dtype = out.dtype.base_dtype
  shape = None
  if out.shape.rank is not None:
    shape = [-1 if d is None else int(d) for d in out.shape.as_list()]
  else:
    shape = _output_shapes_attr(op, index)
  return _Resolved(name=out.name, dtype=dtype, shape=shape)


def _refine_unknown(skeleton: Skeleton, resolved: list) -> None:
  """Declared and loop-inferred shapes for unknown ranks, in place."""
  unknown = [r for r in resolved if r.shape is None]
  if not unknown:
    return
  graph_def = None
  for r in unknown:
    node, _, index = r.name.partition(":")
    if graph_def is None:
      graph_def = tf.compat.v1.GraphDef()
      graph_def.ParseFromString(skeleton.graph_def)
    r.shape = _function_output_shape(graph_def, node, int(index or 0))
  del graph_def
  unknown = [r for r in unknown if r.shape is None]
  if unknown:
    loops = _loop_shapes(skeleton, {r.name for r in unknown})
    for r in unknown:
      if r.name in loops:
        r.shape = [-1 if d is None else int(d)
                   for d in loops[r.name].as_list()]


def _check_method(model: spec_lib.ModelSpec, inputs: dict, outputs: dict,
                  context: str) -> None:
  """The dtype/rank checks TF Serving's classifier and regressor apply."""

  def need(alias, resolved, dtype, ranks, key, what):
    if resolved.dtype != dtype:
      raise errors.GraphError(
          f'{context}, key "{key}": method "{model.method}" needs alias '
          f'"{alias}" to be {dtype.name} ({what}); tensor "{resolved.name}" '
          f'is {resolved.dtype.name}. Use method = "predict" or alias a '
          f"{dtype.name} tensor.")
    if resolved.shape is not None and len(resolved.shape) not in ranks:
      raise errors.GraphError(
          f'{context}, key "{key}": method "{model.method}" needs alias '
          f'"{alias}" of rank {" or ".join(map(str, ranks))} ({what}); '
          f'tensor "{resolved.name}" has shape {resolved.shape}.')

  if model.method == spec_lib.CLASSIFY:
    need("inputs", inputs["inputs"], tf.string, (1,), "inputs",
         "a batch of serialized tf.Example")
    if "classes" in outputs:
      need("classes", outputs["classes"], tf.string, (2,), "outputs",
           "[batch, num_classes] class labels")
    if "scores" in outputs:
      need("scores", outputs["scores"], tf.float32, (2,), "outputs",
           "[batch, num_classes] scores")
  elif model.method == spec_lib.REGRESS:
    need("inputs", inputs["inputs"], tf.string, (1,), "inputs",
         "a batch of serialized tf.Example")
    need("outputs", outputs["outputs"], tf.float32, (1, 2), "outputs",
         "[batch] or [batch, 1] values")
    shape = outputs["outputs"].shape
    if shape is not None and len(shape) == 2 and shape[1] not in (1, -1):
      raise errors.GraphError(
          f'{context}, key "outputs": method "regress" needs alias '
          f'"outputs" of shape [batch] or [batch, 1]; tensor '
          f'"{outputs["outputs"].name}" has shape {shape}.')


def tensor_info(name: str, dtype: tf.DType,
                shape: Optional[list]) -> meta_graph_pb2.TensorInfo:
  """Builds a TensorInfo (name, dtype, static shape or unknown rank)."""
  info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype.as_datatype_enum)
  if shape is None:
    info.tensor_shape.unknown_rank = True
  else:
    info.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]))
  return info


def analyze(graph_def: tf.compat.v1.GraphDef, scope: str,
            models: Sequence[tuple[int, spec_lib.ModelSpec]],
            source: Optional[str]) -> GraphAnalysis:
  """Resolves every model's aliases against one unique input graph.

  Args:
    graph_def: The parsed input graph (unscoped; not modified).
    scope: The scope its nodes will get in the merged graph.
    models: (index in spec, ModelSpec) of every model using this graph.
    source: Spec file path for messages.

  Returns:
    The signatures (with tensor names scoped), table init ops and
    TensorInfos; `skeleton` is the graph the aliases were resolved against
    (pass it to `resolve` for another model using the same file).

  Raises:
    GraphError: the graph does not import, is not frozen, an alias names a
      missing tensor (closest names listed) or a method's dtype/rank
      structure is violated.
  """
  first_index, first = models[0]
  path = first.frozen
  context = where(first, first_index, source)
  variables = [n.name for n in graph_def.node if n.op in _VARIABLE_OPS]
  if variables:
    raise errors.GraphError(
        f"{context}: {path} is not frozen: it still has variable node(s) "
        f"{', '.join(variables[:5])}; freeze it (e.g. "
        "tf.compat.v1.graph_util.convert_variables_to_constants) so weights "
        "are constants.")
  skeleton = _skeleton(graph_def)
  result = resolve(skeleton, scope, models, source, path=path)
  result.init_ops = [f"{scope}/{n.name}" for n in graph_def.node
                     if n.op in TABLE_INIT_OPS]
  result.skeleton = skeleton
  return result


def resolve(skeleton: Skeleton, scope: str,
            models: Sequence[tuple[int, spec_lib.ModelSpec]],
            source: Optional[str], *,
            path: Optional[str] = None) -> GraphAnalysis:
  """Resolves models' aliases against a graph `analyze` already imported.

  Args:
    skeleton: `GraphAnalysis.skeleton` of the models' frozen graph.
    scope: The scope the graph's nodes have in the merged graph.
    models: (index in spec, ModelSpec) of the models to resolve.
    source: Spec file path for messages.
    path: The frozen graph named in messages (default: the first model's).

  Returns:
    Their signatures and TensorInfos (no init ops: `analyze` reports those
    once per graph).

  Raises:
    GraphError: an alias names a missing tensor (closest names listed) or a
      method's dtype/rank structure is violated.
  """
  if path is None:
    path = models[0][1].frozen
  result = GraphAnalysis(signatures={}, init_ops=[], tensor_infos={})
  op_names = {tensor.partition(":")[0] for _, model in models
              for tensor in (*model.inputs.values(), *model.outputs.values())}
  operations = _import(skeleton, op_names, path,
                       where(models[0][1], models[0][0], source))
  for index, model in models:
    context = where(model, index, source)
    resolved_in = {
        alias: _resolve(operations, skeleton, tensor, alias, "inputs", path,
                        context)
        for alias, tensor in model.inputs.items()
    }
    resolved_out = {
        alias: _resolve(operations, skeleton, tensor, alias, "outputs", path,
                        context)
        for alias, tensor in model.outputs.items()
    }
    _refine_unknown(skeleton, list(resolved_out.values()))
    _check_method(model, resolved_in, resolved_out, context)
    if skeleton.inputs_of:
      _check_inputs_cover_outputs(skeleton, model, context)
    infos_in = {a: tensor_info(f"{scope}/{r.name}", r.dtype, r.shape)
                for a, r in resolved_in.items()}
    infos_out = {a: tensor_info(f"{scope}/{r.name}", r.dtype, r.shape)
                 for a, r in resolved_out.items()}
    result.tensor_infos[model.signature_name] = (infos_in, infos_out)
    tensors = {a: i.name for a, i in infos_in.items()}
    tensors.update({a: i.name for a, i in infos_out.items()})
    result.signatures[model.signature_name] = SignatureInfo(
        method=model.method,
        inputs={a: TensorSpec(r.dtype.name, r.shape)
                for a, r in resolved_in.items()},
        outputs={a: TensorSpec(r.dtype.name, r.shape)
                 for a, r in resolved_out.items()},
        tensors=tensors)
  return result


def signature_def(info: SignatureInfo, tensor_infos: tuple
                  ) -> meta_graph_pb2.SignatureDef:
  """Builds the SignatureDef of one model."""
  infos_in, infos_out = tensor_infos
  sig = meta_graph_pb2.SignatureDef(method_name=info.method_name)
  for alias, tinfo in infos_in.items():
    sig.inputs[alias].CopyFrom(tinfo)
  for alias, tinfo in infos_out.items():
    sig.outputs[alias].CopyFrom(tinfo)
  return sig
