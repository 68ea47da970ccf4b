"""Lifting large constants out of function bodies into the graph.

`externalize` turns large graph `Const`s into restored variables. A TF2
frozen graph can hold its weights inside functions instead (the body of a
`While`/`If`, or a function call that survived freezing, e.g.
`convert_variables_to_constants_v2(..., lower_control_flow=False)`), and
those bytes would stay in `saved_model.pb`. This module moves such a
constant out of its function, before the graph is scoped and its library
merged:

  * the function gets a new input argument of the constant's dtype, named
    after it, and every body input reading the constant reads the argument
    (`c:output:0`, `c:0` or `c`; control inputs `^c` are replaced by the
    constant's own control inputs);
  * a graph `Const` with the value (`function_constants/<function>/<node>`)
    is passed at every call site, which `Externalizer.process` then
    externalizes like any other graph constant;
  * functions calling the function (at any depth) get the argument too and
    pass it on, so a shared or nested function gets the value at every site.

Call sites rewritten (the value appended after the existing data inputs):
`PartitionedCall`/`StatefulPartitionedCall` (`f`, `Tin`), a node whose op is
the function, `While`/`StatelessWhile` (`cond` and `body`: a loop variable
the body returns unchanged; `T`, `output_shapes`, `_output_shapes`,
`_num_original_outputs`), `If`/`StatelessIf` (both branches, `Tin`) and
`Case`/`StatelessCase` (every branch, `Tin`). Functions tied by one site
(a loop's cond and body, the branches of an `If`/`Case`) get the same new
arguments in the same order.

A constant stays inline (and is reported) when its function, or a function
on some path of callers to it, cannot be rewritten safely: referenced by any
other attr (dataset, gradient, XLA or TPU ops, nested function attrs), named
in the library's gradients, polymorphic (a signature with attrs), a `While`
body also used otherwise, a call site whose inputs do not match its type
list, a graph call site inside a TF1 while-loop frame (a root-frame value
cannot feed it), or the constant is a control output. The result is always a
valid graph: nothing is rewritten for those.

Only the function bodies' node lists, signatures and the call nodes change;
each lifted value is copied once (into its graph Const) and its body node is
dropped, so peak memory grows by the largest constant, not by a graph copy.
"""

import dataclasses
import re
from typing import Iterable, Optional

from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import node_def_pb2

from python.merge import graph_io

CALL_OPS = frozenset(("PartitionedCall", "StatefulPartitionedCall"))
WHILE_OPS = frozenset(("While", "StatelessWhile"))
IF_OPS = frozenset(("If", "StatelessIf"))
CASE_OPS = frozenset(("Case", "StatelessCase"))
_ENTER_OPS = frozenset(("Enter", "RefEnter"))
# Attr -> role, per op family: the function references that can be rewritten.
_ROLES = {
    **{op: {"f": "call"} for op in CALL_OPS},
    **{op: {"cond": "cond", "body": "body"} for op in WHILE_OPS},
    **{op: {"then_branch": "branch", "else_branch": "branch"}
       for op in IF_OPS},
    **{op: {"branches": "branch"} for op in CASE_OPS},
}
# The attr listing a site's input types (None: a direct call).
_TYPE_ATTR = {**{op: "Tin" for op in CALL_OPS | IF_OPS | CASE_OPS},
              **{op: "T" for op in WHILE_OPS}}
# Data inputs before the function arguments (the If/Case selector).
_LEADING_INPUTS = {op: 1 for op in IF_OPS | CASE_OPS}
GRAPH_PREFIX = "function_constants"
_NODE_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")
_ARG_NAME = re.compile(r"[^a-z0-9_]")


@dataclasses.dataclass(frozen=True)
class Constant:
  """A large Const inside a function body."""
  function: str
  node: str
  size: int


@dataclasses.dataclass
class _Site:
  """A node calling library functions in a rewritable way."""
  node: node_def_pb2.NodeDef
  owner: Optional[str]  # The function holding it; None: the graph.
  functions: tuple  # Called functions (a loop's cond and body, branches).


def large_constants(graph_def, threshold: int,
                    not_saveable: frozenset) -> list[Constant]:
  """The Consts of function bodies above `threshold` bytes, sorted."""
  if threshold < 0:
    return []
  found = []
  for fdef in graph_def.library.function:
    for node in fdef.node_def:
      if node.op != "Const" or "value" not in node.attr:
        continue
      tensor = node.attr["value"].tensor
      size = graph_io.tensor_nbytes(tensor)
      if size > threshold and tensor.dtype not in not_saveable:
        found.append(Constant(fdef.signature.name, node.name, size))
  return sorted(found, key=lambda c: (c.function, c.node))


def _func_refs(value) -> list:
  which = value.WhichOneof("value")
  if which == "func":
    return [value.func]
  if which == "list":
    return list(value.list.func)
  return []


def _nested_names(func) -> list[str]:
  """Function names referenced inside a NameAttrList's own attrs."""
  names = []
  for value in func.attr.values():
    for inner in _func_refs(value):
      names.append(inner.name)
      names.extend(_nested_names(inner))
  return names


def _data_inputs(node) -> int:
  return sum(1 for i in node.input if not i.startswith("^"))


def _input_name(tensor: str) -> str:
  """The node a data or control input names (graph or body syntax)."""
  return tensor.lstrip("^").split(":", 1)[0]


def _in_loop_frames(graph_def) -> set[str]:
  """Graph nodes that may run inside a TF1 while-loop frame.

  Everything reachable from an Enter node (conservatively, also past its
  Exit): a graph Const in the root frame cannot feed them.
  """
  if not any(n.op in _ENTER_OPS for n in graph_def.node):
    return set()
  consumers = {}
  for node in graph_def.node:
    for tensor in node.input:
      consumers.setdefault(_input_name(tensor), []).append(node.name)
  seen = {n.name for n in graph_def.node if n.op in _ENTER_OPS}
  stack = list(seen)
  while stack:
    for consumer in consumers.get(stack.pop(), ()):
      if consumer not in seen:
        seen.add(consumer)
        stack.append(consumer)
  return seen


class _Union:
  """Union-find over function names (functions tied by one call site)."""

  def __init__(self, names: Iterable[str]):
    self._parent = {n: n for n in names}

  def find(self, name: str) -> str:
    root = name
    while self._parent[root] != root:
      root = self._parent[root]
    while self._parent[name] != root:
      self._parent[name], name = root, self._parent[name]
    return root

  def union(self, names: Iterable[str]) -> None:
    names = [self.find(n) for n in names]
    for other in names[1:]:
      a, b = sorted((names[0], other))
      self._parent[b] = a


class Analysis:
  """Which library functions can take new arguments, and who calls them.

  Args:
    graph_def: The input graph (before scoping), read only here.
  """

  def __init__(self, graph_def):
    self.functions = {f.signature.name: f for f in graph_def.library.function}
    self.sites: list[_Site] = []
    self.body_roles: dict[str, set] = {}  # function -> roles it is used in
    self._bad: dict[str, str] = {}  # function -> why it cannot be rewritten
    self._root: dict[str, str] = {}  # function -> the first cause of that
    self._union = _Union(self.functions)
    frames = _in_loop_frames(graph_def)
    for node in graph_def.node:
      self._visit(node, None, node.name in frames)
    for name in sorted(self.functions):
      fdef = self.functions[name]
      for node in fdef.node_def:
        self._visit(node, name, False)
      signature = fdef.signature
      if signature.attr or any(
          a.number_attr or a.type_list_attr or a.type_attr
          for a in list(signature.input_arg) + list(signature.output_arg)):
        self._mark(name, "it is polymorphic (its signature has attrs)")
    for gradient in graph_def.library.gradient:
      for name in (gradient.function_name, gradient.gradient_func):
        self._mark(name, "the library's gradients name it")
    for registered in graph_def.library.registered_gradients:
      self._mark(registered.gradient_func, "it is a registered gradient")
    for name, roles in self.body_roles.items():
      if "body" in roles and len(roles) > 1:
        self._mark(name, "it is a While body also used otherwise")
    self._propagate()

  def _mark(self, name: str, reason: str, root: Optional[str] = None) -> bool:
    """Records why `name` cannot be rewritten; False if it already was."""
    if name not in self.functions or name in self._bad:
      return False
    self._bad[name] = reason
    self._root[name] = reason if root is None else root
    return True

  def _visit(self, node, owner: Optional[str], in_frame: bool) -> None:
    where = (f"node {node.name} of function {owner}" if owner else
             f"graph node {node.name}")
    roles = _ROLES.get(node.op, {})
    called = []
    for attr in sorted(node.attr):
      for func in _func_refs(node.attr[attr]):
        for inner in _nested_names(func):
          self._mark(inner, f"{where} refers to it inside attr {attr}")
        if attr in roles and not func.attr and func.name in self.functions:
          called.append(func.name)
          self.body_roles.setdefault(func.name, set()).add(roles[attr])
        else:
          self._mark(func.name, f"{where} ({node.op}) refers to it in attr "
                     f"{attr}, which is not rewritten")
    if node.op in self.functions:
      called = [node.op]
      self.body_roles.setdefault(node.op, set()).add("direct")
    if not called:
      return
    self.sites.append(_Site(node=node, owner=owner, functions=tuple(called)))
    self._union.union(called)
    expected = self._expected_inputs(node, called[0])
    if expected is None or expected != _data_inputs(node):
      for name in called:
        self._mark(name, f"{where} ({node.op}) has inputs that do not match "
                   "its type list")
    if in_frame:
      for name in called:
        self._mark(name, f"{where} runs inside a TF1 while-loop frame")

  def _expected_inputs(self, node, callee: str) -> Optional[int]:
    attr = _TYPE_ATTR.get(node.op)
    if attr is None:
      return len(self.functions[callee].signature.input_arg)
    if attr not in node.attr:
      return None
    return (_LEADING_INPUTS.get(node.op, 0) +
            len(node.attr[attr].list.type))

  def _propagate(self) -> None:
    """Spreads badness to tied functions and to callees of bad callers."""
    changed = True
    while changed:
      changed = False
      groups = {}
      for name in sorted(self.functions):
        groups.setdefault(self.group(name), []).append(name)
      for members in groups.values():
        bad = [m for m in members if m in self._bad]
        for member in members:
          if bad and self._mark(
              member, f"it shares call sites with {bad[0]}, which cannot be "
              f"rewritten ({self._root[bad[0]]})", self._root[bad[0]]):
            changed = True
      for site in self.sites:
        if site.owner is not None and site.owner in self._bad:
          root = self._root[site.owner]
          for name in site.functions:
            if self._mark(name, f"its caller {site.owner} cannot be "
                          f"rewritten ({root})", root):
              changed = True

  def group(self, name: str) -> str:
    return self._union.find(name)

  def why_not(self, const: Constant) -> Optional[str]:
    """Why `const` cannot be lifted out of its function; None if it can."""
    reason = self._bad.get(const.function)
    if reason is None and const.node in set(
        self.functions[const.function].control_ret.values()):
      reason = "it is a control output of its function"
    return reason


def _unique(base: str, taken: set) -> str:
  candidate, k = base, 2
  while candidate in taken:
    candidate, k = f"{base}_{k}", k + 1
  taken.add(candidate)
  return candidate


def _arg_name(node: str, taken: set) -> str:
  base = "merge_" + _ARG_NAME.sub("_", node.lower()).strip("_")
  return _unique(base, taken)


@dataclasses.dataclass
class Lifted:
  """What `lift` did.

  Attributes:
    graph_names: (function, node) -> the graph Const now holding its value.
    inline: (function, node) -> why it stays in its function body.
    weights: Graph Consts whose value is MatMul/Conv weights in the body.
  """
  graph_names: dict = dataclasses.field(default_factory=dict)
  inline: dict = dataclasses.field(default_factory=dict)
  weights: set = dataclasses.field(default_factory=set)


def _weight_consts(fdef, weight_ops: frozenset) -> set[str]:
  """Body nodes feeding input 1 of a weight op, through Identity chains."""
  identities = {n.name: n.input[0] for n in fdef.node_def
                if n.op == "Identity" and n.input}
  found = set()
  for node in fdef.node_def:
    if node.op not in weight_ops or len(node.input) < 2:
      continue
    tensor, seen = node.input[1], set()
    while not tensor.startswith("^"):
      name = tensor.split(":", 1)[0]
      if name not in identities or name in seen:
        found.add(name)
        break
      seen.add(name)
      tensor = identities[name]
  return found


def lift(graph_def, analysis: Analysis, constants: Iterable[Constant],
         weight_ops: frozenset = frozenset()) -> Lifted:
  """Moves `constants` out of their function bodies, in place.

  Args:
    graph_def: The graph `analysis` was made of (not scoped yet).
    analysis: Its Analysis.
    constants: The function constants to lift.
    weight_ops: Ops whose input 1 is weights (see `externalize`).

  Returns:
    The Lifted record; constants that cannot be lifted are in `inline`.
  """
  result = Lifted()
  functions = analysis.functions
  chosen = []
  for const in sorted(constants, key=lambda c: (c.function, c.node)):
    reason = analysis.why_not(const)
    if reason is not None:
      result.inline[(const.function, const.node)] = reason
    else:
      chosen.append(const)
  if not chosen:
    return result
  ids = {(c.function, c.node): i for i, c in enumerate(chosen)}

  # What each group of tied functions needs as new arguments: its own
  # constants and, transitively, what the functions it calls need.
  needed = {}
  for const in chosen:
    needed.setdefault(analysis.group(const.function), set()).add(
        ids[(const.function, const.node)])
  callees = {}
  for site in analysis.sites:
    if site.owner is not None:
      callees.setdefault(analysis.group(site.owner), set()).add(
          analysis.group(site.functions[0]))
  changed = True
  while changed:
    changed = False
    for group, called in callees.items():
      have = needed.setdefault(group, set())
      for callee in called:
        extra = needed.get(callee, set()) - have
        if extra:
          have |= extra
          changed = True
  order = {g: sorted(n) for g, n in needed.items() if n}

  # The graph Consts' names, dtypes and shapes (values are copied later,
  # one at a time, right before their body node is dropped).
  taken = {n.name for n in graph_def.node}
  dtypes, shapes, graph_names = {}, {}, {}
  own = {}  # function -> body node -> id
  for const in chosen:
    i = ids[(const.function, const.node)]
    body = _body_node(functions[const.function], const.node)
    tensor = body.attr["value"].tensor
    dtypes[i] = tensor.dtype
    shapes[i] = type(tensor.tensor_shape)()
    shapes[i].CopyFrom(tensor.tensor_shape)
    graph_names[i] = _unique(_NODE_NAME.sub(
        "_", f"{GRAPH_PREFIX}/{const.function}/{const.node}"), taken)
    result.graph_names[(const.function, const.node)] = graph_names[i]
    own.setdefault(const.function, {})[const.node] = i

  # New arguments (and, for loop bodies, pass-through outputs).
  local = {}  # function -> id -> argument name
  for name in sorted(functions):
    group = analysis.group(name)
    if group not in order:
      continue
    fdef = functions[name]
    taken = ({a.name for a in fdef.signature.input_arg} |
             {a.name for a in fdef.signature.output_arg} |
             {n.name for n in fdef.node_def})
    mine = own.get(name, {})
    by_id = {i: node for node, i in mine.items()}
    names = {i: _arg_name(by_id.get(i, chosen[i].node), taken)
             for i in order[group]}
    local[name] = names
    if mine:
      weights = _weight_consts(fdef, weight_ops)
      result.weights.update(graph_names[i] for node, i in mine.items()
                            if node in weights)
      _rewrite_body(fdef, {node: names[i] for node, i in mine.items()})

      def move(body, mine=mine):
        i = mine[body.name]
        node = graph_def.node.add(name=graph_names[i], op="Const")
        node.attr["dtype"].type = dtypes[i]
        node.attr["value"].CopyFrom(body.attr["value"])

      _drop_nodes(fdef, mine, move)
    index = len(fdef.signature.input_arg)
    has_arg_attrs = bool(fdef.arg_attr)
    input_shapes = fdef.attr["_input_shapes"].list.shape if (
        "_input_shapes" in fdef.attr) else None
    if input_shapes is not None and len(input_shapes) == index:
      for i in order[group]:
        input_shapes.add().CopyFrom(shapes[i])
    for i in order[group]:
      fdef.signature.input_arg.add(name=names[i], type=dtypes[i])
      if has_arg_attrs:
        attrs = fdef.arg_attr[index].attr
        attrs["_output_shapes"].list.shape.add().CopyFrom(shapes[i])
      index += 1
    if "body" in analysis.body_roles.get(name, ()):
      for i in order[group]:
        out = _unique(names[i] + "_out", taken)
        fdef.signature.output_arg.add(name=out, type=dtypes[i])
        fdef.ret[out] = names[i]

  # Every call site passes the values.
  for site in analysis.sites:
    group = analysis.group(site.functions[0])
    if group not in order:
      continue
    values = [graph_names[i] if site.owner is None else
              local[site.owner][i] for i in order[group]]
    _add_inputs(site.node, values, [dtypes[i] for i in order[group]],
                [shapes[i] for i in order[group]])
  return result


def _body_node(fdef: function_pb2.FunctionDef, name: str):
  return next(n for n in fdef.node_def if n.name == name)


def _rewrite_body(fdef: function_pb2.FunctionDef, args: dict) -> None:
  """Makes body inputs read arguments instead of Consts (node -> arg)."""
  control = {}
  for node in fdef.node_def:
    if node.name in args:
      control[node.name] = [i for i in node.input if i.startswith("^")]

  def replace(tensor: str) -> list[str]:
    if tensor.startswith("^"):
      name = tensor[1:]
      return control[name] if name in args else [tensor]
    name, _, port = tensor.partition(":")
    if name in args and port in ("", "0", "output:0"):
      return [args[name]]
    return [tensor]

  for node in fdef.node_def:
    if node.name in args:
      continue
    if any(i.lstrip("^").split(":", 1)[0] in args for i in node.input):
      inputs = []
      for tensor in node.input:
        for new in replace(tensor):
          if not (new.startswith("^") and new in inputs):
            inputs.append(new)
      del node.input[:]
      node.input.extend([i for i in inputs if not i.startswith("^")] +
                        [i for i in inputs if i.startswith("^")])
    if "_class" in node.attr:
      values = node.attr["_class"].list.s
      keep = [v for v in values if not (
          v.startswith(b"loc:@") and v[5:].decode(errors="replace") in args)]
      if len(keep) != len(values):
        if keep:
          del values[:]
          values.extend(keep)
        else:
          del node.attr["_class"]
  for key in list(fdef.ret):
    fdef.ret[key] = replace(fdef.ret[key])[0]


def _drop_nodes(fdef: function_pb2.FunctionDef, names, move) -> None:
  """Removes body nodes, calling `move(node)` on each just before."""
  while True:
    index = next((i for i, n in enumerate(fdef.node_def) if n.name in names),
                 None)
    if index is None:
      return
    move(fdef.node_def[index])
    del fdef.node_def[index]


def _add_inputs(node, values: list[str], dtypes: list, shapes: list) -> None:
  """Appends data inputs to a call site and updates its type attrs."""
  data = [i for i in node.input if not i.startswith("^")]
  control = [i for i in node.input if i.startswith("^")]
  del node.input[:]
  node.input.extend(data + values + control)
  attr = _TYPE_ATTR.get(node.op)
  if attr is not None:
    node.attr[attr].list.type.extend(dtypes)
  if node.op not in WHILE_OPS:
    return
  count = len(node.attr["T"].list.type) - len(values)
  for name in ("output_shapes", "_output_shapes"):
    if name in node.attr and len(node.attr[name].list.shape) == count:
      for shape in shapes:
        node.attr[name].list.shape.add().CopyFrom(shape)
  if "_num_original_outputs" in node.attr:
    node.attr["_num_original_outputs"].i += len(values)


def label(scope: str, const: Constant) -> str:
  """How reports name a function constant: <scope>/<function>/<node>."""
  return f"{scope}/{const.function}/{const.node}"
