"""Synthetic frozen graphs for the merge benchmarks.

Each graph is a frozen model the size of a real one, written straight as a
GraphDef protobuf (no TensorFlow op construction, so gigabytes are generated
in seconds):

  x   float32[batch, width]  (Placeholder "x")
  ids int32[batch]           (Placeholder "ids")
  h_0 = x; h_{k+1} = tanh(h_k @ layer_k/w + layer_k/b)     many small layers
  scores = h_L + gather(embedding/table, floormod(ids, rows))   one large Const

so every request reads the large constant (no constant folding can remove
it) and the answers depend on both inputs. Five nodes per layer plus eleven
fixed ones; the table holds the rest of the requested bytes.

  from tests.bench import graph_gen
  graphs = graph_gen.write_graphs("/tmp/frozen", num_graphs=8,
                                  total_bytes=300 << 20, total_nodes=16000)
  graph_gen.write_spec("/tmp/frozen/merge.toml", graphs)
"""

import dataclasses
import math
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

WIDTH = 32
_NODES_PER_LAYER = 5
_FIXED_NODES = 11
# Keep every generated file comfortably below protobuf's 2 GiB limit.
MAX_GRAPH_BYTES = (1 << 31) - (64 << 20)


class GraphGenError(ValueError):
  """The requested graph sizes cannot be generated."""


@dataclasses.dataclass(frozen=True)
class GraphInfo:
  """A generated frozen graph.

  Attributes:
    path: The binary GraphDef file.
    signature_name: The signature name used for it in specs.
    inputs: Alias -> tensor name.
    outputs: Alias -> tensor name.
    nodes: Number of nodes.
    table_rows: Rows of the large embedding table.
    file_bytes: Size of the file.
  """
  path: str
  signature_name: str
  inputs: dict
  outputs: dict
  nodes: int
  table_rows: int
  file_bytes: int


def _shape_proto(dims: Sequence[int]) -> tensor_shape_pb2.TensorShapeProto:
  shape = tensor_shape_pb2.TensorShapeProto()
  for d in dims:
    shape.dim.add(size=d)
  return shape


def _const(name: str, array: np.ndarray) -> node_def_pb2.NodeDef:
  node = node_def_pb2.NodeDef(name=name, op="Const")
  dtype = (types_pb2.DT_FLOAT if array.dtype == np.float32 else
           types_pb2.DT_INT32)
  node.attr["dtype"].type = dtype
  tensor = node.attr["value"].tensor
  tensor.dtype = dtype
  tensor.tensor_shape.CopyFrom(_shape_proto(array.shape))
  tensor.tensor_content = np.ascontiguousarray(array).tobytes()
  return node


def _op(name: str, op: str, inputs: Sequence[str],
        **type_attrs: int) -> node_def_pb2.NodeDef:
  node = node_def_pb2.NodeDef(name=name, op=op)
  node.input.extend(inputs)
  for key, value in type_attrs.items():
    node.attr[key].type = value
  return node


def _placeholder(name: str, dtype: int,
                 dims: Sequence[int]) -> node_def_pb2.NodeDef:
  node = node_def_pb2.NodeDef(name=name, op="Placeholder")
  node.attr["dtype"].type = dtype
  node.attr["shape"].shape.CopyFrom(_shape_proto(dims))
  return node


def layers_for_nodes(nodes: int) -> int:
  """Number of small layers giving a graph of about `nodes` nodes."""
  return max(1, math.ceil((nodes - _FIXED_NODES) / _NODES_PER_LAYER))


def write_graph(path: str, *, graph_bytes: int, layers: int,
                seed: int) -> tuple[int, int]:
  """Writes one synthetic frozen graph.

  The small nodes are serialized first and the large constant is appended as
  a second serialized GraphDef (concatenated protobuf messages merge, so the
  file is one GraphDef); only the table's bytes are held in memory twice.

  Args:
    path: Output file (binary GraphDef).
    graph_bytes: Approximate file size; the table takes what the layers do
      not.
    layers: Number of small tanh layers.
    seed: Seed of the weights.

  Returns:
    (number of nodes, rows of the table).
  """
  rng = np.random.default_rng(seed)
  graph = graph_pb2.GraphDef()
  graph.versions.producer = tf.version.GRAPH_DEF_VERSION
  f32, i32 = types_pb2.DT_FLOAT, types_pb2.DT_INT32
  graph.node.append(_placeholder("x", f32, [-1, WIDTH]))
  graph.node.append(_placeholder("ids", i32, [-1]))
  h = "x"
  scale = 1.0 / math.sqrt(WIDTH)
  for k in range(layers):
    w = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * scale)
    b = rng.standard_normal(WIDTH, dtype=np.float32) * 0.1
    graph.node.extend([
        _const(f"layer_{k}/w", w),
        _const(f"layer_{k}/b", b),
        _op(f"layer_{k}/matmul", "MatMul", [h, f"layer_{k}/w"], T=f32),
        _op(f"layer_{k}/bias", "BiasAdd", [f"layer_{k}/matmul",
                                           f"layer_{k}/b"], T=f32),
        _op(f"layer_{k}/tanh", "Tanh", [f"layer_{k}/bias"], T=f32),
    ])
    h = f"layer_{k}/tanh"
  small_bytes = graph.ByteSize()
  rows = max(1, (graph_bytes - small_bytes) // (4 * WIDTH))
  graph.node.extend([
      _const("embedding/rows", np.array(rows, dtype=np.int32)),
      _op("embedding/index", "FloorMod", ["ids", "embedding/rows"], T=i32),
      _const("embedding/axis", np.array(0, dtype=np.int32)),
      _op("embedding/gather", "GatherV2",
          ["embedding/table", "embedding/index", "embedding/axis"],
          Tparams=f32, Tindices=i32, Taxis=i32),
      _op("scores", "AddV2", [h, "embedding/gather"], T=f32),
      _op("output/identity", "Identity", ["scores"], T=f32),
      _op("output/l2", "Mul", ["scores", "scores"], T=f32),
      _op("output/unused", "Identity", ["output/l2"], T=f32),
  ])
  table = rng.random((rows, WIDTH), dtype=np.float32)
  big = graph_pb2.GraphDef()
  big.node.append(_const("embedding/table", table))
  del table
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "wb") as f:
    f.write(graph.SerializeToString())
    f.write(big.SerializeToString())
  return len(graph.node) + 1, rows


def write_graphs(out_dir: str, *, num_graphs: int, total_bytes: int,
                 total_nodes: int, seed: int = 0,
                 prefix: str = "model") -> list[GraphInfo]:
  """Writes `num_graphs` frozen graphs sharing the bytes and nodes evenly.

  Args:
    out_dir: Directory receiving `<prefix>_<i>.pb`.
    num_graphs: How many graphs.
    total_bytes: Approximate total size of all files.
    total_nodes: Minimum total number of nodes.
    seed: Base seed (graph i uses seed + i).
    prefix: File and signature name prefix.

  Returns:
    One GraphInfo per graph.

  Raises:
    GraphGenError: a size is not positive or one graph would exceed the 2 GiB
      protobuf limit (use more graphs).
  """
  if num_graphs < 1:
    raise GraphGenError(f"num_graphs={num_graphs} must be at least 1.")
  if total_bytes < 1 or total_nodes < 1:
    raise GraphGenError(
        f"total_bytes={total_bytes} and total_nodes={total_nodes} must be "
        "positive.")
  graph_bytes = total_bytes // num_graphs
  if graph_bytes > MAX_GRAPH_BYTES:
    raise GraphGenError(
        f"{total_bytes} bytes in {num_graphs} graphs is {graph_bytes} bytes "
        f"per graph, over the {MAX_GRAPH_BYTES}-byte limit of one GraphDef; "
        f"use at least {math.ceil(total_bytes / MAX_GRAPH_BYTES)} graphs.")
  layers = layers_for_nodes(math.ceil(total_nodes / num_graphs))
  infos = []
  for i in range(num_graphs):
    path = os.path.join(out_dir, f"{prefix}_{i}.pb")
    nodes, rows = write_graph(path, graph_bytes=graph_bytes, layers=layers,
                              seed=seed + i)
    infos.append(GraphInfo(
        path=path, signature_name=f"{prefix}_{i}",
        inputs={"x": "x:0", "ids": "ids:0"},
        outputs={"scores": "output/identity:0"},
        nodes=nodes, table_rows=rows, file_bytes=os.path.getsize(path)))
  return infos


def _toml_table(mapping: dict) -> str:
  return "{ " + ", ".join(f'{k} = "{v}"' for k, v in mapping.items()) + " }"


def write_spec(path: str, graphs: Sequence[GraphInfo],
               message: Optional[str] = None) -> str:
  """Writes a merge spec (TOML) with one predict signature per graph.

  Returns:
    `path`.
  """
  lines = []
  if message:
    lines.append(f'message = "{message}"')
  for g in graphs:
    lines += [
        "",
        "[[model]]",
        f'signature_name = "{g.signature_name}"',
        f'frozen = "{os.path.abspath(g.path)}"',
        f"inputs = {_toml_table(g.inputs)}",
        f"outputs = {_toml_table(g.outputs)}",
    ]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def sample_feeds(graph: GraphInfo, batch_size: int = 4,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """Deterministic inputs for a graph's signature, keyed by alias."""
  rng = np.random.default_rng(seed)
  return {
      "x": rng.standard_normal((batch_size, WIDTH), dtype=np.float32),
      # Out-of-range and negative ids exercise the FloorMod.
      "ids": rng.integers(-2 * graph.table_rows, 2 * graph.table_rows,
                          size=batch_size, dtype=np.int32),
  }
