"""Moving large constants out of the GraphDef into a variables checkpoint.

A Const node `X` larger than the threshold becomes

  merge_internal/variables/X = VarHandleOp(shared_name="X")
  X = ReadVariableOp(merge_internal/variables/X)    # same name: consumers,
                                                    # control edges, device and
                                                    # colocation unchanged

and its value is written, unchanged, under the key `X` into
`variables/variables` (TensorBundle V2). Values are written per shard with
eager `SaveV2` while the input graphs are processed (only one graph's large
constants are held at a time) and joined at the end with
`MergeV2Checkpoints`. Restore/save nodes and a SaverDef are added so that
C++ `LoadSavedModel` (TF Serving) and `tf.compat.v1.saved_model.load` restore
the values before serving. The checkpoint holds the constants' exact bytes.

Constants inside function bodies (TF2 graphs frozen with their control
flow or calls kept as functions): `Externalizer.prepare`, run on each input
graph before its function library is merged, moves each large body Const
that is not kept inline (below) out of its function with
`function_constants.lift`: the function takes the value as a new argument,
every caller passes a new graph Const (a `While` carries it as a loop
variable the body returns unchanged), and `process` externalizes that
graph Const like the others. A constant whose function cannot be rewritten
safely (see `function_constants`) stays in its body and is listed in
`Externalizer.function_inline`, for the merge to warn.

Restore groups: each input graph's constants are restored by their own
`RestoreV2` (`merge_internal/restore_<k>/RestoreV2`, grouped by the NoOp
`merge_internal/restore_<k>`), and the SaverDef's restore op
`merge_internal/restore_all` is a NoOp depending on every group. A loader
that runs `restore_all` (TF Serving) restores everything, as with one
`RestoreV2`; the merge's own check (`bundle_check`) can restore one group at
a time, so its memory follows the largest input, not the total.

Bit-identical answers. A weight that is a variable instead of a `Const`
changes what the served graph computes in two places (measured on a
Keras ResNet50, random weights, TF 2.21 x86; see README "Numerics"):

  * Grappler's constant folding rewrites `Mul(Conv2D(x, W), c)` (a
    BatchNormalization after a convolution, as every ResNet/MobileNet/
    EfficientNet block has) into `Conv2D(x, W * c)` only when `W` is a
    `Const` (ConstantFolding's MulConvPushDown), and folds any op whose
    inputs are all constants. The folded weights differ in the last bits
    from computing the Mul at run time (up to 2.4e-7 on ResNet50 outputs).
    So before externalizing, each input graph is optimized offline by
    Grappler with the server's default options and the same fetches
    (`folded_constants`): a large constant whose exact bytes do not survive
    optimization (in the graph or in the optimized function library) was
    folded into another constant, and is kept inline as a `Const` (in its
    function body, for function constants), so the served graph folds it
    exactly as the frozen graph does.
    Kept constants stay in `saved_model.pb`; when they would take it past
    `inline_budget_bytes` they are externalized anyway and listed in
    `Externalizer.folded_externalized` (answers of their signatures may
    differ in the last bits; the merge's numerics check measures it).
  * oneDNN (TensorFlow's x86 CPU kernels, also in `tensorflow_model_server`)
    runs MatMul/Conv with a cached, reordered weights path when input 1 is a
    `Const` and another path when it is not (up to 1.3e-7 on ResNet50, 3e-6
    on a 640x1024 dense layer + bias). Running the server with
    `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1` makes oneDNN treat every weight as
    constant (true for a served bundle: the variables are restored once and
    never assigned again), which gives bit-identical answers; so does
    `TF_ENABLE_ONEDNN_OPTS=0`. `Externalizer.weights` lists the externalized
    constants concerned so the merge can say so.

With both, every signature of the test corpus (tests/numerics_test.py) is
bit-identical to its frozen graph alone.
"""

import concurrent.futures
import dataclasses
import hashlib
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saver_pb2
from tensorflow.python.grappler import tf_optimizer

from python.common import tf_env
from python.merge import errors
from python.merge import function_constants
from python.merge import graph_io
from python.merge import spec as spec_lib

_SCOPE = spec_lib.RESERVED_SCOPE
VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables/variables"
_TMP_DIR = "variables/merge_tmp_shards"
# Shards are flushed when their pending values exceed this many bytes.
_SHARD_BYTES = 256 << 20
# Dtypes that cannot live in a checkpoint.
_NOT_SAVEABLE = frozenset((types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT))
# Ops whose oneDNN kernel depends on whether input 1 (the weights) is a Const.
_WEIGHT_OPS = frozenset((
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D",
    "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
    "Conv3DBackpropInputV2", "_FusedMatMul", "_FusedConv2D",
    "_FusedConv3D", "_FusedBatchMatMulV2"))
# The env var that makes oneDNN treat variable weights as constant.
ONEDNN_FROZEN_WEIGHTS_ENV = tf_env.ONEDNN_ASSUME_FROZEN_WEIGHTS
# Constants Grappler folds stay inline up to this many bytes in total, so
# saved_model.pb stays well below protobuf's 2 GiB limit.
DEFAULT_INLINE_BUDGET_BYTES = 1 << 30


@dataclasses.dataclass
class _Variable:
  key: str
  handle: str
  dtype: int
  shape: object  # TensorShapeProto
  device: str
  # Control inputs of the replaced Const (e.g. a while-loop frame pivot).
  # When present, the ReadVariableOp reads through a second handle op that
  # carries them, so the read stays in the Const's frame while the restore
  # handle stays in the root frame.
  control: list
  # The restore group: the index of the `process` call (input graph).
  group: int


def _value(tensor) -> Union[np.ndarray, tf.Tensor]:
  """The exact value of a TensorProto, copying packed data only once."""
  dtype = tf.dtypes.as_dtype(tensor.dtype)
  if tensor.tensor_content and dtype != tf.string:
    shape = [d.size for d in tensor.tensor_shape.dim]
    return np.frombuffer(tensor.tensor_content,
                         dtype=dtype.as_numpy_dtype).reshape(shape)
  # Repeated-field and string values: let TensorFlow decode the proto.
  return tf.raw_ops.ParseTensor(serialized=tensor.SerializeToString(),
                                out_type=dtype)


def _weight_inputs(graph_def: tf.compat.v1.GraphDef) -> set[str]:
  """Nodes feeding the weights input of a MatMul/Conv op.

  Identity chains (the `w/read` nodes of frozen TF1 graphs) are followed,
  as Grappler removes them before the kernels are chosen.

  Args:
    graph_def: The graph.

  Returns:
    Their names.
  """
  identities = {n.name: n.input[0] for n in graph_def.node
                if n.op == "Identity" and n.input}

  def source(tensor: str) -> Optional[str]:
    seen = set()
    while True:
      if tensor.startswith("^"):
        return None
      name, _, port = tensor.partition(":")
      if port not in ("", "0"):
        return None
      if name not in identities or name in seen:
        return name
      seen.add(name)
      tensor = identities[name]

  names = set()
  for node in graph_def.node:
    if node.op in _WEIGHT_OPS and len(node.input) > 1:
      name = source(node.input[1])
      if name is not None:
        names.add(name)
  return names


def _digest(tensor) -> tuple:
  """A key identifying a TensorProto's value (dtype, shape and bytes)."""
  value = np.asarray(_value(tensor))
  data = value.tobytes() if value.dtype != object else b"".join(
      value.reshape(-1).tolist())
  return (tensor.dtype, value.shape, hashlib.sha256(data).digest())


def _sinks(graph_def: tf.compat.v1.GraphDef) -> list[str]:
  """Nodes nothing reads (the fetches when none are given)."""
  read = {i.lstrip("^").partition(":")[0] for n in graph_def.node
          for i in n.input}
  return [n.name for n in graph_def.node if n.name not in read]


def large_constants(graph_def: tf.compat.v1.GraphDef, threshold: int,
                    keep: frozenset = frozenset()) -> list:
  """(node, bytes) of the Consts that are externalized unless kept."""
  if threshold < 0:
    return []
  large = []
  for node in graph_def.node:
    if node.op != "Const":
      continue
    tensor = node.attr["value"].tensor
    size = graph_io.tensor_nbytes(tensor)
    if (size > threshold and tensor.dtype not in _NOT_SAVEABLE and
        node.name not in keep):
      large.append((node, size))
  return large


def folded_constants(graph_def: tf.compat.v1.GraphDef, candidates: list,
                     fetches: Optional[list[str]] = None) -> set[str]:
  """The candidate Consts that Grappler folds into other constants.

  Runs Grappler's meta-optimizer with a server's default options (as a
  Session or TF Serving runs it before the first request) on `graph_def`
  with these fetches. A candidate whose exact value is not among the
  optimized graph's constants was combined with something else (e.g.
  MulConvPushDown folding a BatchNorm scale into conv weights); one whose
  value survives (possibly renamed, e.g. an Identity folded onto it) is
  read unchanged by a kernel.

  Args:
    graph_def: The input graph (values included).
    candidates: Names of its large Consts.
    fetches: Tensor or node names the server fetches (signature outputs and
      initializers); default the nodes nothing reads.

  Returns:
    Names of the folded candidates; empty if Grappler fails (logged).
  """
  nodes = {n.name: n for n in graph_def.node}
  return _folded(graph_def, {c: nodes[c].attr["value"].tensor
                             for c in candidates}, fetches)


def _folded(graph_def: tf.compat.v1.GraphDef, tensors: dict,
            fetches: Optional[list[str]]) -> set:
  """The keys of `tensors` (Const values) whose bytes Grappler folds away.

  As `folded_constants`, for graph and function-body Consts alike: a value
  survives when a Const of the optimized graph or of its optimized function
  library (Grappler optimizes the functions the graph calls, and may inline
  them) holds exactly its bytes.
  """
  if not tensors:
    return set()
  nodes = {n.name for n in graph_def.node}
  meta = meta_graph_pb2.MetaGraphDef()
  meta.graph_def.CopyFrom(graph_def)
  names = sorted({f.lstrip("^").partition(":")[0] for f in
                  (fetches if fetches else _sinks(graph_def))} & nodes)
  meta.collection_def["train_op"].node_list.value.extend(names)
  try:
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Grappler could not optimize the graph to find folded "
                    "constants (%s); externalizing every large constant.", e)
    return set()
  del meta
  def kind(tensor) -> tuple:
    return tensor.dtype, tuple(d.size for d in tensor.tensor_shape.dim)

  kinds = {kind(t) for t in tensors.values()}
  survivors = set()
  bodies = [f.node_def for f in optimized.library.function]
  for body in [optimized.node] + bodies:
    for node in body:
      if node.op == "Const" and kind(node.attr["value"].tensor) in kinds:
        survivors.add(_digest(node.attr["value"].tensor))
  return {key for key, tensor in tensors.items()
          if _digest(tensor) not in survivors}


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `Externalizer.prepare` found (unscoped graph node names)."""
  folded: set
  weights: set


def _save_shard(prefix: str, names: list[str], values: list) -> None:
  """Writes `values` under `names` as the checkpoint shard `prefix`."""
  try:
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=values)
  except tf.errors.OpError as e:
    raise errors.GraphError(
        f"cannot write externalized constants to {prefix}: {e.message}"
    ) from e


def _join(base: str, relative: str) -> str:
  return base.rstrip("/") + "/" + relative


class Externalizer:
  """Replaces large Consts by restored variables, writing their values.

  Args:
    threshold_bytes: Consts whose serialized tensor is larger than this are
      externalized; a negative value disables externalization.
    export_dir: Where `variables/` is written; None only plans (decides and
      rewrites nodes, writes nothing).
    inline_budget_bytes: Large Consts that Grappler folds stay inline up to
      this many bytes in total (see the module docstring); default
      DEFAULT_INLINE_BUDGET_BYTES.
  """

  def __init__(self, threshold_bytes: int, export_dir: Optional[str],
               inline_budget_bytes: Optional[int] = None):
    self._threshold = threshold_bytes
    self._inline_budget = (DEFAULT_INLINE_BUDGET_BYTES
                           if inline_budget_bytes is None else
                           inline_budget_bytes)
    self._export_dir = export_dir
    self._variables: list[_Variable] = []
    self._pending_names: list[str] = []
    self._pending_values: list[Union[np.ndarray, tf.Tensor]] = []
    self._pending_bytes = 0
    self._shards: list[str] = []
    self._groups = 0
    # One background thread writes a shard while the next graph is merged.
    self._writer: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._writing: Optional[concurrent.futures.Future] = None
    self._writing_bytes = 0
    self.externalized_bytes = 0
    # Externalized constants used as MatMul/Conv weights (see module doc).
    self.weights: list[str] = []
    # Large constants kept inline because Grappler folds them, and their
    # bytes; those externalized anyway past the inline budget.
    self.kept_inline: list[str] = []
    self.kept_inline_bytes = 0
    self.folded_externalized: list[str] = []
    # Function-body constants left in their bodies because their call
    # pattern cannot be rewritten: "<scope>/<function>/<node>: <why>".
    self.function_inline: list[str] = []
    self.function_inline_bytes = 0
    # Function-body constants moved to the graph (then externalized).
    self.lifted: list[str] = []

  @property
  def count(self) -> int:
    return len(self._variables)

  def prepare(self, graph_def: tf.compat.v1.GraphDef,
              fetches: Optional[list[str]] = None,
              scope: str = "") -> "Prepared":
    """Finds folded constants and lifts function-body constants, in place.

    Call it on the input graph as read, before scoping and merging its
    function library (the library merge copies the functions, so they must
    have their final signatures by then). One Grappler run (see
    `folded_constants`) decides, for graph and function-body Consts above
    the threshold alike, which ones Grappler folds. A function-body Const
    that is not folded, or is folded but past the inline budget, is moved
    out of its function by `function_constants.lift`: a graph Const passed
    to every caller, which `process` then externalizes like any graph
    Const. Folded ones within the budget stay in their bodies (counted in
    the budget), so Grappler folds them as in the frozen graph. Ones whose
    call pattern cannot be rewritten stay inline and are listed in
    `function_inline`.

    Args:
      graph_def: The input graph (unscoped).
      fetches: What a server fetches from it (signature outputs, table
        initializers); default its sink nodes.
      scope: Its scope, only to name function constants in reports
        (`<scope>/<function>/<node>`, the function's name as read).

    Returns:
      The folded graph Consts (unscoped names, for `process`'s `folded`)
      and the new graph Consts that are MatMul/Conv weights in their
      function (for `process`'s `weights`).
    """
    if self._threshold < 0:
      return Prepared(folded=set(), weights=set())
    large = large_constants(graph_def, self._threshold)
    in_functions = function_constants.large_constants(
        graph_def, self._threshold, _NOT_SAVEABLE)
    analysis = None
    liftable = []
    if in_functions:
      analysis = function_constants.Analysis(graph_def)
      for const in in_functions:
        reason = analysis.why_not(const)
        if reason is None:
          liftable.append(const)
        else:
          self._keep_in_function(scope, const, reason)
    tensors = {n.name: n.attr["value"].tensor for n, _ in large}
    for const in liftable:
      fdef = analysis.functions[const.function]
      node = next(n for n in fdef.node_def if n.name == const.node)
      tensors[(const.function, const.node)] = node.attr["value"].tensor
    folded = _folded(graph_def, tensors, fetches)
    del tensors
    chosen = []
    for const in liftable:
      name = function_constants.label(scope, const)
      if (const.function, const.node) in folded:
        if self.kept_inline_bytes + const.size <= self._inline_budget:
          self.kept_inline.append(name)
          self.kept_inline_bytes += const.size
          continue
        self.folded_externalized.append(name)
      chosen.append(const)
    weights = set()
    if chosen:
      lifted = function_constants.lift(graph_def, analysis, chosen,
                                       _WEIGHT_OPS)
      for const in chosen:
        key = (const.function, const.node)
        if key in lifted.inline:
          self._keep_in_function(scope, const, lifted.inline[key])
        else:
          self.lifted.append(function_constants.label(scope, const))
      weights = lifted.weights
    return Prepared(folded={k for k in folded if isinstance(k, str)},
                    weights=weights)

  def _keep_in_function(self, scope: str,
                        const: function_constants.Constant,
                        reason: str) -> None:
    self.function_inline.append(
        f"{function_constants.label(scope, const)}: {reason}")
    self.function_inline_bytes += const.size

  def process(self, graph_def: tf.compat.v1.GraphDef,
              keep: frozenset = frozenset(),
              folded: Optional[set] = None,
              weights: frozenset = frozenset()) -> None:
    """Externalizes the large Consts of an already scoped graph, in place.

    Args:
      graph_def: The graph.
      keep: Names of Consts that must stay Consts (asset file names).
      folded: (Scoped) names of Consts that Grappler folds (see `prepare`):
        they stay inline within the inline budget. None: computed here
        with the sink nodes as fetches.
      weights: (Scoped) names of Consts to report as MatMul/Conv weights
        besides the graph's own (constants `prepare` lifted out of
        functions, whose weight use is inside the function).
    """
    if self._threshold < 0:
      return
    weights = _weight_inputs(graph_def) | set(weights)
    large = large_constants(graph_def, self._threshold, keep)
    if folded is None:
      folded = folded_constants(graph_def, [n.name for n, _ in large])
    for node, size in large:
      if node.name in folded:
        if self.kept_inline_bytes + size <= self._inline_budget:
          self.kept_inline.append(node.name)
          self.kept_inline_bytes += size
          continue
        self.folded_externalized.append(node.name)
      self._externalize(node, size)
      if node.name in weights:
        self.weights.append(node.name)
    self._groups += 1
    self._flush()

  def _externalize(self, node: node_def_pb2.NodeDef, size: int) -> None:
    tensor = node.attr["value"].tensor
    dtype = tensor.dtype
    shape = tf.TensorShape(tensor.tensor_shape)
    key = node.name
    handle = f"{_SCOPE}/variables/{key}"
    if self._export_dir is not None:
      value = _value(tensor)
      self._pending_names.append(key)
      self._pending_values.append(value)
      self._pending_bytes += size
    control = [i for i in node.input if i.startswith("^")]
    colocation = None
    if "_class" in node.attr:
      colocation = type(node.attr["_class"])()
      colocation.CopyFrom(node.attr["_class"])
    # The ReadVariableOp keeps the Const's name, device and colocation, so no
    # consumer changes.
    node.ClearField("attr")
    node.op = "ReadVariableOp"
    del node.input[:]
    node.input.append(f"{_SCOPE}/read_handles/{key}" if control else handle)
    node.attr["dtype"].type = dtype
    if colocation is not None:
      node.attr["_class"].CopyFrom(colocation)
    self._variables.append(
        _Variable(key=key, handle=handle, dtype=dtype, shape=shape.as_proto(),
                  device=node.device, control=control, group=self._groups))
    self.externalized_bytes += size
    if self._pending_bytes >= _SHARD_BYTES:
      self._flush()

  def _flush(self) -> None:
    """Starts writing the pending values as one shard, in the background.

    SaveV2 releases the GIL, so the write (copying the values into tensors
    and to disk) overlaps with parsing and analyzing the next graph. At most
    one shard is in flight: this waits for the previous one first.

    Raises:
      GraphError: if the previous shard could not be written.
    """
    if not self._pending_names:
      return
    self._wait()
    prefix = _join(self._export_dir,
                   f"{_TMP_DIR}/part-{len(self._shards):05d}")
    try:
      tf.io.gfile.makedirs(prefix.rsplit("/", 1)[0])
    except tf.errors.OpError as e:
      raise errors.GraphError(
          f"cannot write externalized constants to {prefix}: {e.message}"
      ) from e
    if self._writer is None:
      self._writer = concurrent.futures.ThreadPoolExecutor(
          max_workers=1, thread_name_prefix="externalize")
    self._writing_bytes = self._pending_bytes
    self._writing = self._writer.submit(_save_shard, prefix,
                                        self._pending_names,
                                        self._pending_values)
    self._shards.append(prefix)
    self._pending_names, self._pending_values = [], []
    self._pending_bytes = 0

  def wait_for_large_write(self) -> None:
    """Waits for the shard being written if it holds >= 256 MiB.

    Call it before reading the next input. Writing a shard holds its values
    twice (the arrays and SaveV2's tensor copies); reading and externalizing
    the next input holds that input's bytes, its parsed GraphDef and its own
    values. Overlapping the two for large inputs raised the peak from about
    3x to 5x the largest input, so only small shards (many small inputs,
    where the overlap pays) are written in the background of the next read.

    Raises:
      GraphError: if that shard could not be written.
    """
    if self._writing is not None and self._writing_bytes >= _SHARD_BYTES:
      self._wait()

  def _wait(self) -> None:
    """Waits for the shard being written; raises GraphError if it failed."""
    writing, self._writing = self._writing, None
    if writing is not None:
      writing.result()

  def close(self) -> None:
    """Waits for a background write and stops the writer thread.

    Idempotent; call it when the merge ends, also on error (`finish`
    reports write errors, this does not).
    """
    try:
      self._wait()
    except errors.GraphError:
      pass
    finally:
      if self._writer is not None:
        self._writer.shutdown(wait=True)
        self._writer = None

  def finish(self) -> tuple[list[node_def_pb2.NodeDef],
                            Optional[saver_pb2.SaverDef]]:
    """Joins the shards and returns the nodes and SaverDef to add.

    Returns:
      (nodes, saver_def): VarHandleOps plus restore/save nodes to add to the
      merged graph, and the SaverDef; ([], None) if nothing was externalized.

    Raises:
      GraphError: if the checkpoint cannot be written.
    """
    if not self._variables:
      return [], None
    self._flush()
    self._wait()
    self.close()
    if self._export_dir is not None:
      destination = _join(self._export_dir, VARIABLES_PREFIX)
      try:
        tf.raw_ops.MergeV2Checkpoints(
            checkpoint_prefixes=self._shards,
            destination_prefix=destination, delete_old_dirs=True)
        tmp_dir = _join(self._export_dir, _TMP_DIR)
        if tf.io.gfile.exists(tmp_dir):
          tf.io.gfile.rmtree(tmp_dir)
      except tf.errors.OpError as e:
        raise errors.GraphError(
            f"cannot write the variables checkpoint {destination}: "
            f"{e.message}") from e
    handles = []
    for var in self._variables:
      handles.append(_handle_op(var.handle, var))
      if var.control:
        handles.append(_handle_op(f"{_SCOPE}/read_handles/{var.key}", var,
                                  var.control))
    groups = {}
    for var in self._variables:
      groups.setdefault(var.group, []).append(var)
    nodes, saver_def = checkpoint_nodes(
        [(str(g), members) for g, members in groups.items()],
        lambda var: var.handle)
    return handles + nodes, saver_def


def _handle_op(name: str, var, control=()) -> node_def_pb2.NodeDef:
  """The VarHandleOp of an externalized variable (shared_name = its key)."""
  handle = node_def_pb2.NodeDef(name=name, op="VarHandleOp",
                                input=list(control), device=var.device)
  handle.attr["dtype"].type = var.dtype
  handle.attr["shape"].shape.CopyFrom(var.shape)
  handle.attr["shared_name"].s = var.key.encode()
  return handle


def checkpoint_nodes(groups: Sequence[tuple[str, Sequence[Any]]],
                     handle_of: Callable[[Any], str]
                     ) -> tuple[list[node_def_pb2.NodeDef],
                                saver_pb2.SaverDef]:
  """The restore and save nodes of variables held in one V2 checkpoint.

  The layout every merged bundle has, full merges (`Externalizer`) and
  incremental deploys (`incremental`) alike: one `RestoreV2` per group under
  `merge_internal/restore_<label>` (so `bundle_check` restores one group at a
  time), `merge_internal/restore_all` depending on every group (what TF
  Serving's loader runs), and a SaveV2 over all of them.

  Args:
    groups: (label, variables) in restore order; each variable has `key`
      (its checkpoint key), `dtype` and `device`.
    handle_of: a variable -> the name of its VarHandleOp.

  Returns:
    (nodes, saver_def); the VarHandleOps are the caller's.
  """
  nodes = []

  def add(name, op, inputs=(), device=""):
    node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs),
                                device=device)
    nodes.append(node)
    return node

  def string_const(name, values):
    node = add(name, "Const")
    node.attr["dtype"].type = types_pb2.DT_STRING
    tensor = node.attr["value"].tensor
    tensor.dtype = types_pb2.DT_STRING
    if isinstance(values, list):
      tensor.tensor_shape.dim.add(size=len(values))
      tensor.string_val.extend(v.encode() for v in values)
    else:
      tensor.string_val.append(values.encode())

  variables = [v for _, members in groups for v in members]
  keys = [v.key for v in variables]
  string_const(f"{_SCOPE}/filename", "model")
  string_const(f"{_SCOPE}/tensor_names", keys)
  string_const(f"{_SCOPE}/shape_and_slices", [""] * len(keys))
  group_ops = []
  for label, members in groups:
    scope = f"{_SCOPE}/restore_{label}"
    string_const(f"{scope}/tensor_names", [v.key for v in members])
    string_const(f"{scope}/shape_and_slices", [""] * len(members))
    restore = add(f"{scope}/RestoreV2", "RestoreV2",
                  [f"{_SCOPE}/filename", f"{scope}/tensor_names",
                   f"{scope}/shape_and_slices"], device="/device:CPU:0")
    restore.attr["dtypes"].list.type.extend(v.dtype for v in members)
    assigns = []
    for i, var in enumerate(members):
      assign = add(f"{_SCOPE}/assign/{var.key}", "AssignVariableOp",
                   [handle_of(var), f"{restore.name}:{i}"], device=var.device)
      assign.attr["dtype"].type = var.dtype
      assigns.append("^" + assign.name)
    group_ops.append("^" + add(scope, "NoOp", assigns).name)
  add(f"{_SCOPE}/restore_all", "NoOp", group_ops)
  save = add(f"{_SCOPE}/save/SaveV2", "SaveV2",
             [f"{_SCOPE}/filename", f"{_SCOPE}/tensor_names",
              f"{_SCOPE}/shape_and_slices"] + keys, device="/device:CPU:0")
  save.attr["dtypes"].list.type.extend(v.dtype for v in variables)
  control = add(f"{_SCOPE}/save/control_dependency", "Identity",
                [f"{_SCOPE}/filename", "^" + save.name])
  control.attr["T"].type = types_pb2.DT_STRING
  return nodes, saver_pb2.SaverDef(
      filename_tensor_name=f"{_SCOPE}/filename:0",
      save_tensor_name=f"{_SCOPE}/save/control_dependency:0",
      restore_op_name=f"{_SCOPE}/restore_all", max_to_keep=1, sharded=False,
      version=saver_pb2.SaverDef.V2)
