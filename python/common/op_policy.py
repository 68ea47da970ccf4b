"""The op denylist: ops a merged or checked graph may not contain by default.

A TensorFlow graph is a program. Like `saved_model_cli scan`, the toolkit
refuses graphs whose nodes, or the nodes of whose library functions, run ops
that touch the file system, the console, the network or the process
(`denied_ops.txt` beside this file lists them, one per line). Users accept
some explicitly (`--allow_ops=Op1,Op2`).

  findings = op_policy.find_denied_ops(graph_def, allowed=("PrintV2",))
  if findings:
    raise SomeError(op_policy.describe(findings, "graph.pb"))

Scanning reads the GraphDef only; it never imports or runs the graph.
"""

import dataclasses
import functools
import os
from typing import Iterable, Optional, Sequence

DENIED_OPS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "denied_ops.txt")
# Ops the merge writes itself to restore externalized weights and that a
# bundle's SaverDef legitimately runs; see `saver_exemptions`.
CHECKPOINT_OPS = frozenset(("SaveV2", "Save", "SaveSlices", "RestoreV2",
                            "Restore", "RestoreSlice", "MergeV2Checkpoints"))
_MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class Finding:
  """One node running a denied op.

  Attributes:
    op: the op name, e.g. "ReadFile".
    node: the node's name.
    function: the library function whose body holds the node; None for a
      node of the graph itself.
  """
  op: str
  node: str
  function: Optional[str] = None

  def where(self) -> str:
    if self.function:
      return f'node "{self.node}" in function "{self.function}"'
    return f'node "{self.node}"'

  def to_json(self) -> dict:
    return {"op": self.op, "node": self.node, "function": self.function}


def parse_denied_ops(text: str) -> frozenset:
  """Op names of a denylist text: one per line, `#` starts a comment."""
  names = set()
  for line in text.splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      names.add(line)
  return frozenset(names)


@functools.cache
def denied_ops() -> frozenset:
  """The op names listed in denied_ops.txt."""
  with open(DENIED_OPS_FILE, encoding="utf-8") as f:
    return parse_denied_ops(f.read())


def parse_allow_ops(value: Optional[str]) -> tuple[str, ...]:
  """'ReadFile, PrintV2' -> ('ReadFile', 'PrintV2'); None or '' -> ()."""
  if not value:
    return ()
  return tuple(name.strip() for name in value.split(",") if name.strip())


def unknown_allowed(allowed: Iterable[str]) -> list[str]:
  """The names in `allowed` that are not on the denylist (likely typos)."""
  return sorted(set(allowed) - denied_ops())


def find_denied_ops(graph_def,
                    allowed: Iterable[str] = (),
                    exempt_nodes: Iterable[str] = (),
                    saver_functions: Iterable[str] = ()) -> list[Finding]:
  """Every node of `graph_def` (and of its function library) with a denied op.

  Args:
    graph_def: a tf.compat.v1.GraphDef (or the graph_def of a MetaGraphDef).
    allowed: op names accepted although denied.
    exempt_nodes: names of graph nodes not to report (e.g. a bundle's own
      restore ops, see `saver_exemptions`).
    saver_functions: library functions only the SaverDef runs (TF2 exports
      save and restore inside `__inference__traced_save/restore`, see
      `saver_only_functions`): their checkpoint ops are not reported, any
      other denied op in them is.

  Returns:
    The findings, graph nodes first, in graph order.
  """
  denied = denied_ops() - set(allowed)
  exempt = set(exempt_nodes)
  saver_only = set(saver_functions)
  findings = [Finding(op=node.op, node=node.name)
              for node in graph_def.node
              if node.op in denied and node.name not in exempt]
  for function in graph_def.library.function:
    name = function.signature.name
    findings.extend(
        Finding(op=node.op, node=node.name, function=name)
        for node in function.node_def if node.op in denied and not (
            name in saver_only and node.op in CHECKPOINT_OPS))
  return findings


def _called_functions(node, library: set) -> list[str]:
  """Library functions a node calls: as its op, or through func attrs."""
  called = [node.op] if node.op in library else []
  for value in node.attr.values():
    if value.HasField("func") and value.func.name in library:
      called.append(value.func.name)
    called.extend(f.name for f in value.list.func if f.name in library)
  return called


def _function_closure(roots, functions: dict) -> set[str]:
  """Functions reachable from the nodes `roots`, through nested calls."""
  library = set(functions)
  seen, stack = set(), [f for node in roots
                        for f in _called_functions(node, library)]
  while stack:
    name = stack.pop()
    if name in seen:
      continue
    seen.add(name)
    for node in functions[name].node_def:
      stack.extend(f for f in _called_functions(node, library)
                   if f not in seen)
  return seen


def _saver_nodes(meta_graph) -> set[str]:
  """Graph nodes the SaverDef's restore op and save tensor depend on."""
  if not meta_graph.HasField("saver_def"):
    return set()
  saver = meta_graph.saver_def
  nodes = {node.name: node for node in meta_graph.graph_def.node}
  starts = [saver.restore_op_name, saver.save_tensor_name.partition(":")[0]]
  seen, stack = set(), [s for s in starts if s in nodes]
  while stack:
    name = stack.pop()
    if name in seen:
      continue
    seen.add(name)
    for source in nodes[name].input:
      source = source.lstrip("^").partition(":")[0]
      if source in nodes and source not in seen:
        stack.append(source)
  return seen


def saver_only_functions(meta_graph) -> set[str]:
  """Library functions reachable from the SaverDef's nodes and nothing else."""
  saver = _saver_nodes(meta_graph)
  if not saver:
    return set()
  graph = meta_graph.graph_def
  functions = {f.signature.name: f for f in graph.library.function}
  return (_function_closure([n for n in graph.node if n.name in saver],
                            functions) -
          _function_closure([n for n in graph.node if n.name not in saver],
                            functions))


def saver_exemptions(meta_graph) -> set[str]:
  """Checkpoint-op nodes a MetaGraph's SaverDef runs (save and restore).

  A SavedModel restores its variables with RestoreV2 and saves them with
  SaveV2; those nodes are the loader's business, not the model's. Only nodes
  of CHECKPOINT_OPS reachable from the SaverDef's restore op or save tensor
  are exempted: any other denied op there is still reported.
  """
  nodes = {node.name: node for node in meta_graph.graph_def.node}
  return {name for name in _saver_nodes(meta_graph)
          if nodes[name].op in CHECKPOINT_OPS}


def describe(findings: Sequence[Finding]) -> str:
  """'ReadFile (node "a/read"), PrintV2 (node "p" in function "f")...'."""
  listed = [f"{f.op} ({f.where()})" for f in findings[:_MAX_LISTED]]
  more = len(findings) - _MAX_LISTED
  if more > 0:
    listed.append(f"and {more} more")
  return ", ".join(listed)


def refusal(findings: Sequence[Finding], subject: str) -> str:
  """The message refusing a graph: names the ops, nodes and the fix."""
  ops = sorted({f.op for f in findings})
  return (
      f"{subject} contains op(s) refused by default: {describe(findings)}. "
      "They read or write files, print, or run code outside TensorFlow, "
      "which a served model has no business doing (see "
      "python/common/denied_ops.txt). Remove them from the graph, or accept "
      f"them explicitly with --allow_ops={','.join(ops)}.")
