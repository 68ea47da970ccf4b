"""Importing a GraphDef without a Python `Operation` for every node.

`tf.compat.v1.import_graph_def` imports a GraphDef into the graph's C++
`TF_Graph` (which is what sessions run and what shape inference works on) and
then wraps every new node in a Python `Operation`. On a merged bundle of 16k
nodes the wrapping is ~80% of the import (0.8 s of which 0.65 s are
wrappers), and the merge only ever touches a few dozen nodes by name: the
signature tensors, the restore and init ops.

`import_graph_def` here imports the whole GraphDef into a fresh `tf.Graph`'s
C++ graph and wraps only the named operations, through the same C API calls
`tf.compat.v1.import_graph_def` makes (`TF_GraphImportGraphDefWithResults`
with "return operations"). The result is an ordinary `tf.Graph`:
`tf.compat.v1.Session(graph=...)` runs any node of it (sessions read the C++
graph) and the returned `Operation`s have the shapes and dtypes shape
inference gave them. What it does not have is Python objects for the other
nodes: `graph.get_operation_by_name` only finds the named ones.

The C API entry points are TensorFlow internals (`pywrap_tf_session`, pinned
by requirements_lock.txt); `graph_import_test` fails if they change, and
`import_graph_def` falls back to the public, slower import when they are
missing.
"""

import functools
from typing import Iterable

import tensorflow as tf

try:  # TensorFlow internals; see the module docstring.
  from tensorflow.python.client import pywrap_tf_session as _c_api
except ImportError:  # pragma: no cover - only on other TF versions.
  _c_api = None

_C_API_NAMES = (
    "TF_NewImportGraphDefOptions", "TF_ImportGraphDefOptionsSetPrefix",
    "TF_ImportGraphDefOptionsSetPropagateDeviceSpec",
    "TF_ImportGraphDefOptionsAddReturnOperation", "TF_NewBufferFromString",
    "TF_GraphImportGraphDefWithResults",
    "TF_ImportGraphDefResultsReturnOperations",
    "TF_DeleteImportGraphDefResults", "TF_DeleteImportGraphDefOptions",
    "TF_DeleteBuffer")


@functools.cache
def fast_path_available() -> bool:
  """True if the wrapper-free import can be used with this TensorFlow."""
  graph = tf.Graph()
  return (_c_api is not None and
          all(hasattr(_c_api, name) for name in _C_API_NAMES) and
          hasattr(graph, "_c_graph") and hasattr(graph, "_mutation_lock") and
          hasattr(graph, "_create_op_from_tf_operation"))


def import_graph_def(
    graph_def: bytes, op_names: Iterable[str]
) -> tuple[tf.Graph, dict[str, tf.Operation]]:
  """Imports a serialized GraphDef, wrapping only `op_names` in Python.

  Args:
    graph_def: A serialized GraphDef. Node names are kept (no prefix) and so
      are their devices.
    op_names: Names of nodes to return as `Operation`s; each must be in
      `graph_def`.

  Returns:
    (graph, operations): a new graph holding every node of `graph_def`, and
    name -> Operation for `op_names`.

  Raises:
    ValueError: the GraphDef does not parse or import (an unknown op, a bad
      input, a named node that is not in it ...); the message is
      TensorFlow's.
  """
  names = sorted(set(op_names))
  if not fast_path_available():
    return _import_public(graph_def, names)
  graph = tf.Graph()
  options = _c_api.TF_NewImportGraphDefOptions()
  buffer = None
  results = None
  try:
    _c_api.TF_ImportGraphDefOptionsSetPrefix(options, "")
    _c_api.TF_ImportGraphDefOptionsSetPropagateDeviceSpec(options, True)
    for name in names:
      _c_api.TF_ImportGraphDefOptionsAddReturnOperation(options, name)
    buffer = _c_api.TF_NewBufferFromString(graph_def)
    with graph._mutation_lock():  # pylint: disable=protected-access
      with graph._c_graph.get() as c_graph:  # pylint: disable=protected-access
        results = _c_api.TF_GraphImportGraphDefWithResults(
            c_graph, buffer, options)
      c_ops = _c_api.TF_ImportGraphDefResultsReturnOperations(results)
      operations = [
          graph._create_op_from_tf_operation(c_op, compute_device=False)  # pylint: disable=protected-access
          for c_op in c_ops
      ]
  except tf.errors.OpError as e:
    raise ValueError(e.message) from e
  finally:
    if results is not None:
      _c_api.TF_DeleteImportGraphDefResults(results)
    if buffer is not None:
      _c_api.TF_DeleteBuffer(buffer)
    _c_api.TF_DeleteImportGraphDefOptions(options)
  return graph, {op.name: op for op in operations}


def _import_public(graph_def: bytes,
                   names: list[str]) -> tuple[tf.Graph, dict[str, tf.Operation]]:
  """The public import: wraps every node (slower on large graphs)."""
  proto = tf.compat.v1.GraphDef()
  try:
    proto.ParseFromString(graph_def)
  except Exception as e:  # protobuf's DecodeError has no public base class.
    raise ValueError(f"not a GraphDef: {e}") from e
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(proto, name="")
  try:
    return graph, {name: graph.get_operation_by_name(name) for name in names}
  except KeyError as e:
    raise ValueError(str(e)) from e
