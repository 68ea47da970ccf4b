"""GraphDef-level merging: name scoping, function libraries, default attrs.

Each model's graph is rewritten in place under the scope `<signature_name>/`:
node names, data and control inputs, `_class` colocation constraints,
`frame_name` of while-loop `Enter` ops and non-empty `shared_name` attributes
(so models never share tables or variables). Function libraries are merged
by name: identical FunctionDefs are kept once, different ones with the same
name are renamed (`<name>_<scope>`) and every reference is rewritten (node
ops, `func` and `list(func)` attributes, inside other functions too, and
gradient entries).
"""

import re
from typing import Iterable, Optional

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2
from tensorflow.core.framework import function_pb2
from tensorflow.python.framework import op_def_registry

_ENTER_OPS = frozenset(("Enter", "RefEnter"))
_COLOCATION_ATTR = "_class"
_COLOCATION_PREFIX = b"loc:@"


def scoped_name(scope: str, name: str) -> str:
  """Returns `name` (node or tensor name) under `scope`."""
  return f"{scope}/{name}"


def scoped_input(scope: str, graph_input: str) -> str:
  """Scopes a NodeDef input: "x", "x:1" and control inputs "^x"."""
  if graph_input.startswith("^"):
    return "^" + scoped_name(scope, graph_input[1:])
  return scoped_name(scope, graph_input)


def scope_graph(graph_def: tf.compat.v1.GraphDef, scope: str) -> None:
  """Moves every node of `graph_def` under `scope`, in place.

  Rewrites names, inputs, `_class` colocation attrs, `frame_name` of Enter
  ops and non-empty `shared_name` attrs. Function bodies are left alone:
  their node names are local to the function.

  Args:
    graph_def: The graph to rewrite.
    scope: The name scope (a signature name, without "/").
  """
  prefix = scope + "/"
  bprefix = prefix.encode()
  for node in graph_def.node:
    node.name = prefix + node.name
    if node.input:
      scoped = [scoped_input(scope, i) for i in node.input]
      del node.input[:]
      node.input.extend(scoped)
    attrs = node.attr
    if _COLOCATION_ATTR in attrs:
      values = attrs[_COLOCATION_ATTR].list.s
      for i, value in enumerate(values):
        if value.startswith(_COLOCATION_PREFIX):
          values[i] = (_COLOCATION_PREFIX + bprefix +
                       value[len(_COLOCATION_PREFIX):])
    if node.op in _ENTER_OPS and "frame_name" in attrs:
      attrs["frame_name"].s = bprefix + attrs["frame_name"].s
    if "shared_name" in attrs and attrs["shared_name"].s:
      attrs["shared_name"].s = bprefix + attrs["shared_name"].s


def _rename_in_attr(value: attr_value_pb2.AttrValue, renames: dict) -> None:
  which = value.WhichOneof("value")
  if which == "func":
    _rename_in_name_attr_list(value.func, renames)
  elif which == "list":
    for func in value.list.func:
      _rename_in_name_attr_list(func, renames)


def _rename_in_name_attr_list(func: attr_value_pb2.NameAttrList,
                              renames: dict) -> None:
  if func.name in renames:
    func.name = renames[func.name]
  for value in func.attr.values():
    _rename_in_attr(value, renames)


def rename_function_references(nodes: Iterable, renames: dict) -> None:
  """Rewrites calls of renamed functions in NodeDefs, in place.

  Args:
    nodes: NodeDefs (of a graph or of a FunctionDef's body).
    renames: Old function name -> new name.
  """
  if not renames:
    return
  for node in nodes:
    if node.op in renames:
      node.op = renames[node.op]
    for value in node.attr.values():
      _rename_in_attr(value, renames)


def _callees(fdef: function_pb2.FunctionDef, names: set) -> list[str]:
  """Functions of `names` that `fdef`'s body refers to."""
  found = []

  def visit_attr(value):
    which = value.WhichOneof("value")
    if which == "func":
      visit_func(value.func)
    elif which == "list":
      for func in value.list.func:
        visit_func(func)

  def visit_func(func):
    if func.name in names:
      found.append(func.name)
    for v in func.attr.values():
      visit_attr(v)

  for node in fdef.node_def:
    if node.op in names:
      found.append(node.op)
    for value in node.attr.values():
      visit_attr(value)
  return found


def _sanitize(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_]", "_", text)


class FunctionLibraryMerger:
  """Accumulates the function libraries of several graphs into one."""

  def __init__(self):
    self._functions = {}  # name -> FunctionDef (owned copy)
    self._bytes = {}  # name -> deterministic serialization
    self._gradients = {}  # function name -> gradient function name
    self._registered = {}  # op type -> gradient function name

  def _unique_name(self, name: str, scope: str, taken: set) -> str:
    base = f"{name}_{_sanitize(scope)}"
    candidate, k = base, 2
    while candidate in self._functions or candidate in taken:
      candidate, k = f"{base}_{k}", k + 1
    return candidate

  def add(self, library: function_pb2.FunctionDefLibrary,
          scope: str) -> dict[str, str]:
    """Merges `library` (of the graph scoped under `scope`) into this one.

    Functions are visited callees first, so a function that calls a renamed
    function is compared (and renamed if needed) after its call sites have
    been rewritten.

    Args:
      library: The incoming library; its FunctionDefs are modified in place.
      scope: The incoming graph's scope, used in new names.

    Returns:
      Old name -> new name for every renamed function; apply it to the
      incoming graph's nodes with `rename_function_references`.
    """
    incoming = {f.signature.name: f for f in library.function}
    if not incoming:
      return {}
    gradients = {g.function_name: g.gradient_func for g in library.gradient}
    names = set(incoming)
    order, state = [], {}

    def visit(name):
      # Iterative DFS post-order; cycles (recursion) are cut.
      stack = [(name, iter(self._deps(incoming[name], gradients, names)))]
      state[name] = "open"
      while stack:
        current, children = stack[-1]
        child = next(children, None)
        if child is None:
          stack.pop()
          state[current] = "done"
          order.append(current)
        elif child not in state:
          state[child] = "open"
          stack.append(
              (child, iter(self._deps(incoming[child], gradients, names))))

    for name in sorted(incoming):
      if name not in state:
        visit(name)

    renames = {}
    added = []
    for name in order:
      fdef = incoming[name]
      rename_function_references(fdef.node_def, renames)
      grad = gradients.get(name)
      grad = renames.get(grad, grad)
      data = fdef.SerializeToString(deterministic=True)
      if name in self._functions:
        if self._bytes[name] == data and self._gradients.get(name) == grad:
          continue
        new_name = self._unique_name(name, scope, names)
        renames[name] = new_name
        fdef.signature.name = new_name
        name = new_name
        data = fdef.SerializeToString(deterministic=True)
      copy = function_pb2.FunctionDef()
      copy.CopyFrom(fdef)
      self._functions[name] = copy
      self._bytes[name] = data
      if grad:
        self._gradients[name] = grad
      added.append(name)
    # Recursive functions may have been visited before a callee was renamed.
    for name in added:
      rename_function_references(self._functions[name].node_def, renames)
      for old, new in renames.items():
        if self._gradients.get(name) == old:
          self._gradients[name] = new
    for registered in library.registered_gradients:
      func = renames.get(registered.gradient_func, registered.gradient_func)
      self._registered.setdefault(registered.registered_op_type, func)
    return renames

  @staticmethod
  def _deps(fdef, gradients: dict, names: set) -> list[str]:
    deps = _callees(fdef, names)
    grad = gradients.get(fdef.signature.name)
    if grad in names:
      deps.append(grad)
    return deps

  def write_to(self, library: function_pb2.FunctionDefLibrary) -> None:
    """Fills `library` with the merged functions and gradients."""
    for name in sorted(self._functions):
      library.function.add().CopyFrom(self._functions[name])
    for name in sorted(self._gradients):
      library.gradient.add(function_name=name,
                           gradient_func=self._gradients[name])
    for op_type in sorted(self._registered):
      library.registered_gradients.add(
          registered_op_type=op_type, gradient_func=self._registered[op_type])

  def __len__(self) -> int:
    return len(self._functions)


class DefaultAttrStripper:
  """Removes attrs equal to their op's registered default (forward compat).

  Same semantics as SavedModel's `strip_default_attrs=True`: a server built
  with an older TensorFlow that does not know a newer attr can still load
  the graph as long as the attr has its default value.
  """

  def __init__(self):
    self._defaults = {}

  def _op_defaults(self, op: str) -> Optional[list]:
    if op not in self._defaults:
      op_def = op_def_registry.get(op)
      self._defaults[op] = None if op_def is None else [
          (a.name, a.default_value)
          for a in op_def.attr
          if a.HasField("default_value")
      ]
    return self._defaults[op]

  def strip(self, nodes: Iterable) -> int:
    """Strips default-valued attrs from `nodes` in place.

    Returns:
      The number of attrs removed.
    """
    removed = 0
    for node in nodes:
      defaults = self._op_defaults(node.op)
      if not defaults:
        continue
      attrs = node.attr
      for name, default in defaults:
        if name in attrs and attrs[name] == default:
          del attrs[name]
          removed += 1
    return removed

  def strip_library(self, library: function_pb2.FunctionDefLibrary) -> int:
    return sum(self.strip(f.node_def) for f in library.function)


class GraphMerger:
  """Builds the merged GraphDef one scoped input graph at a time.

  Usage: for each unique input graph call `add(graph_def, scope)` (which
  rewrites it in place and moves its nodes into the merged graph), then
  `finish()` returns the merged GraphDef.
  """

  def __init__(self, graph_def: Optional[tf.compat.v1.GraphDef] = None):
    """Creates a merger.

    Args:
      graph_def: Empty GraphDef to build into, e.g. the `graph_def` field of
        the MetaGraphDef being written (avoids copying the merged graph).
    """
    self.graph_def = (tf.compat.v1.GraphDef() if graph_def is None else
                      graph_def)
    self._library = FunctionLibraryMerger()
    self._stripper = DefaultAttrStripper()
    self._producers = []
    self._min_consumers = []

  def scope_and_rename(self, graph_def: tf.compat.v1.GraphDef,
                       scope: str) -> dict[str, str]:
    """Scopes `graph_def` in place and merges its function library.

    Returns:
      The function renames applied to the graph.
    """
    renames = self._library.add(graph_def.library, scope)
    scope_graph(graph_def, scope)
    rename_function_references(graph_def.node, renames)
    self._stripper.strip(graph_def.node)
    self._producers.append(graph_def.versions.producer)
    self._min_consumers.append(graph_def.versions.min_consumer)
    return renames

  def append(self, graph_def: tf.compat.v1.GraphDef) -> None:
    """Moves the (already scoped) nodes of `graph_def` into the merged graph."""
    self.graph_def.node.extend(graph_def.node)
    del graph_def.node[:]

  def add_nodes(self, nodes: Iterable) -> None:
    """Adds merger-owned nodes (restore ops, init op) to the merged graph."""
    self.graph_def.node.extend(nodes)

  def finish(self) -> tf.compat.v1.GraphDef:
    """Returns the merged GraphDef with library and versions filled in.

    The producer version is the oldest of the inputs', so the loader applies
    the compatibility rules every input graph was written for.
    """
    self.graph_def.library.Clear()
    self._library.write_to(self.graph_def.library)
    self._stripper.strip_library(self.graph_def.library)
    if self._producers:
      self.graph_def.versions.producer = min(self._producers)
      self.graph_def.versions.min_consumer = max(self._min_consumers)
    return self.graph_def
