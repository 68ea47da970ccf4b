"""Which runs execute in the request's own thread instead of TF's pool.

A session run normally hands every op to TensorFlow's inter-op thread pool
and the calling thread sleeps until the last one is done. For a small graph
that hand-off is most of the run: on TF Serving's half_plus_two, with the
pool's threads asleep between requests (as they are on a server), a run
takes ~0.17 ms through the pool and ~0.05 ms in the caller's thread (measured
in process with 0.5 ms between runs; 0.026 and 0.008 ms back to back).
`RunOptions.inter_op_thread_pool = -1` asks DirectSession for the second,
and TensorFlow's own documentation of that field says when: "ONLY for simple
graphs, where the overhead of an additional context switch is comparable
with the overhead of Session::Run()".

`simple_runs` decides it per signature at load, from the part of the graph
a signature's run executes (pruned from its outputs back to its inputs, with
the bodies of the functions it calls):

- at most `MAX_NODES` nodes, so there is little inter-op parallelism to
  lose (each op still uses the intra-op pool, so one large MatMul keeps
  every core);
- no op that can wait for another op or another run (queues, barriers,
  staging areas, accumulators, iterators, send/recv, collectives): run
  inline, such an op would wait in the only thread that could feed it.

Answers are the same either way (the same kernels on the same inputs); only
where the ops run changes. TF Serving always uses the pool; a session config
that sets `inter_op_parallelism_threads` or named inter-op pools keeps every
run on the pools it asked for.
"""

import re
from typing import Dict, FrozenSet, Iterable, Mapping, Optional, Set, Tuple

from tensorflow.core.framework import function_pb2
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import meta_graph_pb2

# Most nodes (graph plus called function bodies) of a run kept in the
# caller's thread.
MAX_NODES = 100

# Op types that may block on another op or another run.
_BLOCKING_OP = re.compile(
    r'Queue|Barrier|Stage|Accumulator|Iterator|Recv|Send|Collective|'
    r'NcclAll|Rendezvous')


def pool_configured(config: Optional[config_pb2.ConfigProto]) -> bool:
  """True if the session config asks for its own inter-op threads."""
  if config is None:
    return False
  return bool(config.inter_op_parallelism_threads or
              config.session_inter_op_thread_pool or
              config.use_per_session_threads)


def _node_name(tensor_or_input: str) -> str:
  name = tensor_or_input[1:] if tensor_or_input.startswith(
      '^') else tensor_or_input
  return name.split(':', 1)[0]


def _called_functions(node, library: Mapping[str, function_pb2.FunctionDef]
                     ) -> Iterable[str]:
  """Functions a node calls (PartitionedCall's f, While's body, ...)."""
  for attr in node.attr.values():
    if attr.HasField('func') and attr.func.name in library:
      yield attr.func.name
    for func in attr.list.func:
      if func.name in library:
        yield func.name
  if node.op in library:  # A function called as an op.
    yield node.op


class _Graph:
  """Name -> node of a GraphDef, and its function library."""

  def __init__(self, graph_def: graph_pb2.GraphDef):
    self.nodes = {node.name: node for node in graph_def.node}
    self.library = {f.signature.name: f for f in graph_def.library.function}

  def run_size(self, feeds: Iterable[str], fetches: Iterable[str],
               limit: int) -> Optional[int]:
    """Nodes a run executes, or None past `limit` or with a blocking op."""
    fed = {_node_name(t) for t in feeds}
    pending = [_node_name(t) for t in fetches]
    seen: Set[str] = set()
    functions: Set[str] = set()
    while pending:
      name = pending.pop()
      if name in seen:
        continue
      seen.add(name)
      node = self.nodes.get(name)
      if node is None:
        return None  # Not a graph this module understands: keep the pool.
      if _BLOCKING_OP.search(node.op) or len(seen) > limit:
        return None
      functions.update(_called_functions(node, self.library))
      if name in fed:
        continue
      pending.extend(_node_name(i) for i in node.input)
    size = len(seen)
    done: Set[str] = set()
    while functions:
      fname = functions.pop()
      if fname in done:
        continue
      done.add(fname)
      body = self.library[fname]
      size += len(body.node_def)
      if size > limit:
        return None
      for node in body.node_def:
        if _BLOCKING_OP.search(node.op):
          return None
        functions.update(_called_functions(node, self.library))
    return size


def simple_runs(meta_graph_def: meta_graph_pb2.MetaGraphDef,
                max_nodes: int = MAX_NODES
               ) -> Dict[Tuple[str, ...], FrozenSet[str]]:
  """The runs to execute in the caller's thread, per set of feeds.

  Args:
    meta_graph_def: The loaded MetaGraphDef (with its graph_def).
    max_nodes: The most nodes of a run kept in the caller's thread.

  Returns:
    Sorted feed names -> the fetches that may run in the caller's thread
    with those feeds: the outputs of every simple signature fed exactly
    these tensors. A run whose fetches are a subset (an output_filter) or
    a union of such signatures' outputs (MultiInference) qualifies too.
  """
  graph = _Graph(meta_graph_def.graph_def)
  runs: Dict[Tuple[str, ...], Set[str]] = {}
  for signature in meta_graph_def.signature_def.values():
    feeds = tuple(sorted({t.name for t in signature.inputs.values()}))
    fetches = {t.name for t in signature.outputs.values()}
    if not fetches:
      continue
    if graph.run_size(feeds, fetches, max_nodes) is not None:
      runs.setdefault(feeds, set()).update(fetches)
  return {feeds: frozenset(fetches) for feeds, fetches in runs.items()}


def in_caller_thread(runs: Mapping[Tuple[str, ...], FrozenSet[str]],
                     feeds: Tuple[str, ...],
                     fetches: Iterable[str]) -> bool:
  """True if a run of `fetches` fed `feeds` (sorted) stays in the caller."""
  allowed = runs.get(feeds)
  return allowed is not None and allowed.issuperset(fetches)
