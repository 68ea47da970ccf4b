"""The one policy for synthesizing inputs that a graph accepts.

Three parts of the toolkit feed a graph inputs that nobody recorded: the
merge's warmup writer (`python/merge/warmup.py`, one request per signature in
`assets.extra/tf_serving_warmup_requests`), the merge's check
(`python/merge/bundle_check.py`) and the C++ verifier's smoke run
(`cc/verify/example_synthesis.cc` ports this module rule for rule). They follow
this policy, so a request the check ran is the request TF Serving replays, and
the verifier feeds what the merge wrote. `//python/merge:cc_verify_test`
compares the verifier's `--dump_requests` with this module's output, its
tf.Examples byte for byte.

The policy:

1. **Shapes.** A declared shape keeps its known dimensions; unknown ones
   become `batch_size` (first dimension) or 1 (the others). The batch size is
   1 (`BATCH_SIZE`). An input of **unknown rank** has an ordered list of
   candidate shapes (`unknown_rank_candidates`): first the shape the graph
   gives it (the `shape` attr of its Placeholder, when that has a rank; else
   the shape its consumers pin down: a value assigned to a variable of known
   shape through `Assign`/`AssignAdd`/`AssignSub` or their resource-variable
   forms, through `Identity` chains), then a scalar `[]`, then `[1]`, then
   `[batch_size]` (duplicates dropped). A runner tries them in order and reports the one
   that ran; a writer that cannot run the graph uses the first.
2. **Numbers.** Floating and complex inputs hold `0.25 + (i % 7) / 8` at flat
   index `i` (small, positive, exact in float16 and bfloat16: no `log(0)` nor
   division by zero); integers hold 0 (a valid index); booleans `False`.
3. **Strings.** Every element is one serialized proto built for the parse ops
   that read the tensor (`GraphSynthesizer.example_for`), or `b""` when none
   does. Parse ops are found by following the tensor's consumers forward
   through any op (so `Identity` chains between the placeholder and the parse
   op are followed), and into function bodies through call ops
   (`PartitionedCall`, `StatefulPartitionedCall`, a direct call of a library
   function, `If`/`StatelessIf`, `While`/`StatelessWhile`, `Case`), breadth
   first, in GraphDef order.
   * `ParseExample` (v1: keys are `Nsparse` + `Ndense` scalar string Const
     inputs), `ParseExampleV2` (keys are three string Const inputs: sparse,
     dense, ragged) and `ParseSingleExample` (keys in attrs) yield a
     `tf.Example`; `ParseSequenceExample` (keys in attrs),
     `ParseSequenceExampleV2` (six Const key inputs) and
     `ParseSingleSequenceExample` (Const key inputs) yield a
     `tf.SequenceExample`. Key Consts are found through `Identity` chains.
     The first parse op found decides which of the two protos it is; parse
     ops of the other kind are left out.
   * Every key gets a feature: a dense one holds as many values as its
     `dense_shapes` entry has elements (unknown dimensions count 1), a
     sparse or ragged one holds one value. Values are `b"a"` for strings, 1
     for integers and 0.5 for floats (nonzero, so that no serialized proto
     ends in a NUL byte that a fixed-width numpy bytes array would drop). A
     feature list holds one step of such a feature. When two parse ops read
     the same key, the first one found defines it.
   * A parse op whose keys are not constants (for instance moved to
     `variables/` by `--externalize_threshold_bytes=0`) contributes nothing.
   * The proto is serialized deterministically, map entries in bytewise key
     order (as C++'s deterministic serialization writes them), so C++ and
     Python produce the same bytes.

  from python.common import synthesis
  synth = synthesis.GraphSynthesizer(graph_def)
  value = synth.input_value("x:0", tf.float32, [-1, 3])
"""

import collections
import dataclasses
from typing import Iterator, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.framework import node_def_pb2

BATCH_SIZE = 1

# Identity-like ops followed backward from a parse op to its key Consts, and
# forward from an input to the assignment that pins its shape.
_IDENTITY_OPS = ("Identity", "Snapshot", "StopGradient")
# Assignment ops: input 0 is the variable (ref or resource), input 1 the value.
_ASSIGN_OPS = ("Assign", "AssignAdd", "AssignSub", "AssignVariableOp",
               "AssignAddVariableOp", "AssignSubVariableOp")
_VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_PLACEHOLDER_OPS = ("Placeholder", "PlaceholderWithDefault")

EXAMPLE = "example"
SEQUENCE_EXAMPLE = "sequence_example"


@dataclasses.dataclass(frozen=True)
class _Group:
  """One list of keys of a parse op.

  Attributes:
    feature_list: The keys name feature lists (else context features).
    dense: Dense features (their count comes from `shapes`).
    keys: Where the keys are: "attr:NAME" (a list(string) attr),
      "inputs:ATTR" (ATTR consecutive scalar Const inputs) or "input" (one
      Const input holding a vector of keys).
    types: The list(type) attr with one dtype per key.
    shapes: The list(shape) attr of dense features, if dense.
  """
  feature_list: bool
  dense: bool
  keys: str
  types: str
  shapes: str = ""


def _g(feature_list, dense, keys, types, shapes=""):
  return _Group(feature_list, dense, keys, types, shapes)


# Parse op -> (proto it parses, its key groups in input order). Key inputs
# start at input 2 (after serialized and names / debug_name /
# feature_list_dense_missing_assumed_empty).
PARSE_OPS = {
    "ParseExample": (EXAMPLE, (
        _g(False, False, "inputs:Nsparse", "sparse_types"),
        _g(False, True, "inputs:Ndense", "Tdense", "dense_shapes"))),
    "ParseExampleV2": (EXAMPLE, (
        _g(False, False, "input", "sparse_types"),
        _g(False, True, "input", "Tdense", "dense_shapes"),
        _g(False, False, "input", "ragged_value_types"))),
    "ParseSingleExample": (EXAMPLE, (
        _g(False, False, "attr:sparse_keys", "sparse_types"),
        _g(False, True, "attr:dense_keys", "Tdense", "dense_shapes"))),
    "ParseSequenceExample": (SEQUENCE_EXAMPLE, (
        _g(False, False, "attr:context_sparse_keys", "context_sparse_types"),
        _g(False, True, "attr:context_dense_keys", "Tcontext_dense",
           "context_dense_shapes"),
        _g(True, False, "attr:feature_list_sparse_keys",
           "feature_list_sparse_types"),
        _g(True, True, "attr:feature_list_dense_keys",
           "feature_list_dense_types", "feature_list_dense_shapes"))),
    "ParseSequenceExampleV2": (SEQUENCE_EXAMPLE, (
        _g(False, False, "input", "context_sparse_types"),
        _g(False, True, "input", "Tcontext_dense", "context_dense_shapes"),
        _g(False, False, "input", "context_ragged_value_types"),
        _g(True, False, "input", "feature_list_sparse_types"),
        _g(True, True, "input", "feature_list_dense_types",
           "feature_list_dense_shapes"),
        _g(True, False, "input", "feature_list_ragged_value_types"))),
    "ParseSingleSequenceExample": (SEQUENCE_EXAMPLE, (
        _g(False, False, "inputs:Ncontext_sparse", "context_sparse_types"),
        _g(False, True, "inputs:Ncontext_dense", "Tcontext_dense",
           "context_dense_shapes"),
        _g(True, False, "inputs:Nfeature_list_sparse",
           "feature_list_sparse_types"),
        _g(True, True, "inputs:Nfeature_list_dense",
           "feature_list_dense_types", "feature_list_dense_shapes"))),
}
_FIRST_KEY_INPUT = 2


def known_shape(shape: Sequence[int], batch_size: int = BATCH_SIZE
                ) -> tuple[int, ...]:
  """A declared shape with unknown (-1 or None) dims filled per the policy."""
  return tuple((batch_size if i == 0 else 1) if d is None or d < 0 else d
               for i, d in enumerate(shape))


def unknown_rank_candidates(derived: Optional[Sequence[int]] = None,
                            batch_size: int = BATCH_SIZE
                            ) -> list[tuple[int, ...]]:
  """Shapes to try, in order, for an input of unknown rank."""
  candidates = [] if derived is None else [tuple(derived)]
  for shape in ((), (1,), (batch_size,)):
    if shape not in candidates:
      candidates.append(shape)
  return candidates


def dense_values(dtype: tf.dtypes.DType, shape: Sequence[int]) -> np.ndarray:
  """A numeric or boolean value of `shape` per the policy (rule 2)."""
  dtype = tf.dtypes.as_dtype(dtype).base_dtype
  shape = tuple(shape)
  if dtype == tf.bool:
    return np.zeros(shape, dtype=bool)
  if dtype.is_floating or dtype.is_complex:
    count = int(np.prod(shape, dtype=np.int64))
    values = 0.25 + (np.arange(count) % 7) / 8.0
    return values.reshape(shape).astype(dtype.as_numpy_dtype)
  if dtype.is_integer or dtype.is_quantized:
    return np.zeros(shape, dtype=dtype.as_numpy_dtype)
  raise ValueError(f"cannot synthesize a value of dtype {dtype.name}")


def synthesized_feature(dtype: tf.dtypes.DType, count: int) -> tf.train.Feature:
  """A tf.train.Feature of `count` values of `dtype`'s kind (b"a", 1, 0.5)."""
  dtype = tf.dtypes.as_dtype(dtype)
  if dtype == tf.string:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"] *
                                                          count))
  if dtype.is_integer or dtype == tf.bool:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * count))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * count))


def _node_name(tensor_or_input: str) -> str:
  """The node of "node", "node:0", "^node" or a function body's "n:out:0"."""
  return tensor_or_input.lstrip("^").split(":")[0]


def _data_inputs(node: node_def_pb2.NodeDef) -> list[str]:
  return [i for i in node.input if not i.startswith("^")]


class KeysNotConstant(Exception):
  """A parse op's feature keys are not Const nodes of its graph."""


@dataclasses.dataclass
class _Scope:
  """The top-level graph ("") or one function body."""
  nodes: dict
  consumers: dict  # node or arg name -> [(consumer NodeDef, input position)]
  args: list


class GraphSynthesizer:
  """Synthesizes inputs for the tensors of one GraphDef (see the policy).

  Works on the GraphDef alone; indexed on first use (most bundles have no
  string inputs, and indexing a large GraphDef costs ~0.3 s).
  """

  def __init__(self, graph_def: graph_pb2.GraphDef):
    self._graph_def = graph_def
    self._scopes: Optional[dict[str, _Scope]] = None

  # --- Index ---------------------------------------------------------------

  def _index(self) -> dict[str, _Scope]:
    if self._scopes is None:
      self._scopes = {"": self._scope(self._graph_def.node, [])}
      for function in self._graph_def.library.function:
        self._scopes[function.signature.name] = self._scope(
            function.node_def, [a.name for a in function.signature.input_arg])
    return self._scopes

  @staticmethod
  def _scope(nodes, args) -> _Scope:
    consumers = collections.defaultdict(list)
    for node in nodes:
      for position, name in enumerate(_data_inputs(node)):
        consumers[_node_name(name)].append((node, position))
    return _Scope({n.name: n for n in nodes}, consumers, args)

  def _callees(self, node: node_def_pb2.NodeDef,
               position: int) -> list[tuple[str, int]]:
    """(function, argument index) that input `position` of `node` feeds."""
    attr = node.attr
    if node.op in _CALL_OPS:
      return [(attr["f"].func.name, position)]
    if node.op in self._index() and node.op:
      return [(node.op, position)]
    if node.op in ("If", "StatelessIf"):
      return [(attr[b].func.name, position - 1)
              for b in ("then_branch", "else_branch") if position > 0]
    if node.op in ("While", "StatelessWhile"):
      return [(attr[b].func.name, position) for b in ("cond", "body")]
    if node.op in ("Case", "StatelessCase") and position > 0:
      return [(f.name, position - 1) for f in attr["branches"].list.func]
    return []

  def _forward(self, scope: str, name: str
               ) -> Iterator[tuple[str, node_def_pb2.NodeDef]]:
    """(scope, node) for every op reached from `name`, breadth first.

    Call ops are not yielded: their callees' argument consumers are.
    """
    scopes = self._index()
    queue = collections.deque(
        (scope, node, position)
        for node, position in scopes[scope].consumers.get(name, []))
    seen = set()
    while queue:
      scope, node, position = queue.popleft()
      callees = self._callees(node, position)
      if callees:
        for function, index in callees:
          body = scopes.get(function)
          if body is None or not 0 <= index < len(body.args):
            continue
          queue.extend((function, n, p) for n, p in
                       body.consumers.get(body.args[index], []))
        continue
      if (scope, node.name) in seen:
        continue
      seen.add((scope, node.name))
      yield scope, node
      queue.extend((scope, n, p)
                   for n, p in scopes[scope].consumers.get(node.name, []))

  def _through_identities(self, scope: str, name: str
                          ) -> Optional[node_def_pb2.NodeDef]:
    nodes = self._index()[scope].nodes
    node = nodes.get(_node_name(name))
    seen = set()
    while (node is not None and node.op in _IDENTITY_OPS and
           node.name not in seen and _data_inputs(node)):
      seen.add(node.name)
      node = nodes.get(_node_name(_data_inputs(node)[0]))
    return node

  # --- Shapes --------------------------------------------------------------

  def derived_shape(self, tensor_name: str) -> Optional[tuple[int, ...]]:
    """The shape the graph gives an input of unknown rank (rule 1), or None.

    The `shape` attr of its Placeholder when that has a rank (unknown dims
    filled as in `known_shape`), else the shape its consumers pin down.
    """
    node = self._index()[""].nodes.get(_node_name(tensor_name))
    if (node is not None and node.op in _PLACEHOLDER_OPS and
        "shape" in node.attr and not node.attr["shape"].shape.unknown_rank):
      return known_shape([d.size for d in node.attr["shape"].shape.dim])
    for scope, node in self._forward("", _node_name(tensor_name)):
      if node.op in _IDENTITY_OPS:
        continue
      if node.op not in _ASSIGN_OPS or len(_data_inputs(node)) < 2:
        return None  # Only Identity chains into an assignment count.
      variable = self._through_identities(scope, _data_inputs(node)[0])
      if variable is None or variable.op not in _VARIABLE_OPS:
        return None
      shape = variable.attr["shape"].shape
      if shape.unknown_rank or any(d.size < 0 for d in shape.dim):
        return None
      return tuple(d.size for d in shape.dim)
    return None

  def candidate_shapes(self, tensor_name: str, shape: Optional[Sequence[int]],
                       batch_size: int = BATCH_SIZE
                       ) -> list[tuple[int, ...]]:
    """The shapes to try for an input, in order (one for a known rank)."""
    if shape is not None:
      return [known_shape(shape, batch_size)]
    return unknown_rank_candidates(self.derived_shape(tensor_name),
                                   batch_size)

  # --- Values --------------------------------------------------------------

  def input_value(self, tensor_name: str, dtype: tf.dtypes.DType,
                  shape: Sequence[int]) -> np.ndarray:
    """The value fed to `tensor_name` with the concrete `shape`."""
    dtype = tf.dtypes.as_dtype(dtype).base_dtype
    if dtype == tf.string:
      return np.full(tuple(shape), self.example_for(tensor_name),
                     dtype=object)
    return dense_values(dtype, shape)

  def input_candidates(self, tensor_name: str, dtype: tf.dtypes.DType,
                       shape: Optional[Sequence[int]],
                       batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """`input_value` for each of `candidate_shapes`, in order."""
    return [self.input_value(tensor_name, dtype, s)
            for s in self.candidate_shapes(tensor_name, shape, batch_size)]

  # --- tf.Example ----------------------------------------------------------

  def _const_strings(self, scope: str, inputs: Sequence[str]) -> list[str]:
    keys = []
    for name in inputs:
      node = self._through_identities(scope, name)
      if (node is None or node.op != "Const" or
          node.attr["value"].tensor.dtype != tf.string.as_datatype_enum):
        raise KeysNotConstant(name)
      value = tf.make_ndarray(node.attr["value"].tensor)
      keys.extend(v.decode() for v in np.asarray(value).reshape(-1))
    return keys

  def _keys(self, scope: str, node: node_def_pb2.NodeDef,
            groups: Sequence[_Group]) -> list[list[str]]:
    inputs = _data_inputs(node)
    cursor = _FIRST_KEY_INPUT
    keys = []
    for group in groups:
      if group.keys.startswith("attr:"):
        attr = group.keys[len("attr:"):]
        keys.append([k.decode() for k in node.attr[attr].list.s]
                    if attr in node.attr else [])
        continue
      count = (node.attr[group.keys[len("inputs:"):]].i
               if group.keys.startswith("inputs:") else 1)
      keys.append(self._const_strings(scope, inputs[cursor:cursor + count]))
      cursor += count
    return keys

  def parse_op_features(self, scope: str, node: node_def_pb2.NodeDef
                        ) -> tuple[dict, dict]:
    """(context features, feature lists) of `node`: key -> tf.train.Feature.

    Raises:
      KeysNotConstant: if a key input is not a Const.
    """
    _, groups = PARSE_OPS[node.op]
    context, feature_lists = {}, {}
    for group, keys in zip(groups, self._keys(scope, node, groups)):
      types = ([tf.dtypes.as_dtype(t) for t in node.attr[group.types].list.type]
               if group.types in node.attr else [])
      shapes = (list(node.attr[group.shapes].list.shape)
                if group.shapes and group.shapes in node.attr else [])
      target = feature_lists if group.feature_list else context
      for i, (key, dtype) in enumerate(zip(keys, types)):
        count = 1
        if group.dense and i < len(shapes) and not shapes[i].unknown_rank:
          for dim in shapes[i].dim:
            count *= dim.size if dim.size > 0 else 1
        target.setdefault(key, synthesized_feature(dtype, count))
    return context, feature_lists

  def example_for(self, tensor_name: str) -> bytes:
    """The serialized proto fed to string tensor `tensor_name` (rule 3).

    b"" when no parse op reads it. A parse op whose feature keys are not
    constants contributes no features; a warning says so.
    """
    kind = None
    context, feature_lists = {}, {}
    for scope, node in self._forward("", _node_name(tensor_name)):
      if node.op not in PARSE_OPS:
        continue
      op_kind = PARSE_OPS[node.op][0]
      if kind is not None and op_kind != kind:
        logging.warning(
            'Parse op "%s" parses a %s but "%s" also feeds a %s parser; the '
            "synthesized input is a %s, so its features are left out.",
            node.name, op_kind, tensor_name, kind, kind)
        continue
      try:
        op_context, op_lists = self.parse_op_features(scope, node)
      except KeysNotConstant as e:
        logging.warning(
            'Parse op "%s" reads its feature keys from "%s", which is not '
            "a constant; its features are left out of the synthesized "
            "input (a request without them fails if they have no "
            "default).", node.name, e)
        continue
      kind = op_kind
      for key, feature in op_context.items():
        context.setdefault(key, feature)
      for key, feature in op_lists.items():
        feature_lists.setdefault(key, feature)
    if kind is None:
      return b""
    if kind == EXAMPLE:
      return _field(1, _feature_map(context))  # Example.features
    lists = {key: tf.train.FeatureList(feature=[feature])
             for key, feature in feature_lists.items()}
    # SequenceExample.context, .feature_lists.
    return _field(1, _feature_map(context)) + _field(2, _feature_map(lists))


def _varint(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature_map(features: Mapping[str, object]) -> bytes:
  """A Features / FeatureLists message: its map field 1, keys sorted bytewise.

  Serialized by hand as C++'s deterministic serialization orders map entries
  (Python's upb orders them otherwise), so both languages give equal bytes.
  """
  entries = b""
  for key in sorted(features, key=lambda k: k.encode()):
    value = features[key].SerializeToString(deterministic=True)
    entries += _field(1, _field(1, key.encode()) + _field(2, value))
  return entries


def synthesize_examples(graph_def: graph_pb2.GraphDef,
                        tensors: Mapping[str, str]) -> dict[str, bytes]:
  """`example_for` for each name -> tensor of `tensors`, one index."""
  synthesizer = GraphSynthesizer(graph_def)
  return {name: synthesizer.example_for(tensor)
          for name, tensor in tensors.items()}
