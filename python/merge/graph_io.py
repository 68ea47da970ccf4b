"""Reading frozen graphs: one parse per file, with actionable errors.

`.pbtxt` files are parsed as text GraphDefs, everything else as binary. A
text file named `.pb` (or a binary one named `.pbtxt`), a SavedModel's
`saved_model.pb` and truncated or corrupt files are reported as such.
"""

from google.protobuf import message
from google.protobuf import text_format
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from python.common import bounded_read
from python.merge import errors

DEFAULT_MAX_INPUT_BYTES = bounded_read.DEFAULT_MAX_INPUT_BYTES
MAX_TEXT_NESTING = bounded_read.DEFAULT_MAX_TEXT_NESTING


def _input_error(path: str, where: str,
                 e: bounded_read.InputFileError) -> errors.GraphError:
  """The GraphError for a frozen graph that cannot be read as a file."""
  text = str(e)
  if text.endswith("does not exist"):
    return errors.GraphError(
        f"{where}: frozen graph {path} does not exist; fix the path "
        "(relative paths are resolved against the spec file's directory).")
  if " is a directory" in text:
    return errors.GraphError(
        f"{where}: frozen graph {path} is a directory; name the .pb or "
        ".pbtxt GraphDef file (a SavedModel directory is not a frozen "
        "graph).")
  return errors.GraphError(
      f"{where}: frozen graph {text}; name a .pb or .pbtxt GraphDef file.")


def check_exists(path: str, where: str,
                 max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> None:
  """Raises GraphError naming `where` unless `path` is a regular file."""
  file_size(path, where, max_bytes)


# Repeated TensorProto field holding values of each dtype (when the values
# are not packed into `tensor_content`).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_QINT8: "int_val",
    types_pb2.DT_QUINT8: "int_val",
    types_pb2.DT_QINT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}


def tensor_nbytes(tensor: tensor_pb2.TensorProto) -> int:
  """Approximate bytes a Const's value takes in a serialized graph.

  Cheap: never serializes or copies the (possibly huge) value. Values in
  `tensor_content` count elements x item size; a "splat" constant stored as
  a few repeated values (e.g. zeros of a large shape) counts only those.

  Args:
    tensor: The Const node's `value` attr.

  Returns:
    The size in bytes; 0 for dtypes whose size is unknown.
  """
  if tensor.dtype == types_pb2.DT_STRING:
    return sum(len(v) for v in tensor.string_val)
  field = _VALUE_FIELDS.get(tensor.dtype)
  if field is None:
    return 0
  itemsize = tf.dtypes.as_dtype(tensor.dtype).size
  values = len(getattr(tensor, field))
  if values:
    return values * itemsize
  elements = 1
  for dim in tensor.tensor_shape.dim:
    elements *= max(dim.size, 0)
  return elements * itemsize


def _looks_like_text(data: bytes) -> bool:
  head = data[:4096]
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError:
    return False
  stripped = text.lstrip()
  return (stripped.startswith(("node", "library", "versions", "#")) and
          ("{" in text or ":" in text))


def _is_saved_model(data: bytes) -> bool:
  saved_model = saved_model_pb2.SavedModel()
  try:
    saved_model.ParseFromString(data)
  except message.DecodeError:
    return False
  return bool(saved_model.meta_graphs) and any(
      len(m.graph_def.node) for m in saved_model.meta_graphs)


def file_size(path: str, where: str,
              max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> int:
  """Returns the size of a frozen graph file in bytes, without opening it.

  Args:
    path: Local path or tf.io.gfile URI.
    where: Context for error messages (spec, model, key).
    max_bytes: Larger files are refused.

  Raises:
    GraphError: if the file is missing, not a regular file (a directory,
      FIFO, device or socket), larger than `max_bytes` or unreadable.
  """
  try:
    return bounded_read.check_regular_file(path, max_bytes)
  except bounded_read.InputFileError as e:
    raise _input_error(path, where, e) from e


def read_bytes(path: str, where: str,
               max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> bytes:
  """Returns a frozen graph file's contents (see `parse_graph_def`).

  Only regular files are read, at most `max_bytes` of them
  (`bounded_read.read_regular_file`): a FIFO or device never blocks the read.

  Args:
    path: Local path or tf.io.gfile URI.
    where: Context for error messages (spec, model, key).
    max_bytes: Larger files are refused.

  Raises:
    GraphError: if the file is missing, not a regular file, too large or
      unreadable.
  """
  try:
    return bounded_read.read_regular_file(path, max_bytes)
  except bounded_read.InputFileError as e:
    raise _input_error(path, where, e) from e


def read_graph_def(path: str, where: str,
                   max_bytes: int = DEFAULT_MAX_INPUT_BYTES
                  ) -> tf.compat.v1.GraphDef:
  """Parses a frozen GraphDef (binary, or text if `path` ends in .pbtxt).

  Args:
    path: Local path or tf.io.gfile URI.
    where: Context for error messages, e.g. 'spec m.toml, model #1 "a", key
      "frozen"'.

  Returns:
    The parsed GraphDef.

  Raises:
    GraphError: missing/unreadable file, text/binary mix-up, a SavedModel
      instead of a GraphDef, corrupt or empty data.
  """
  return parse_graph_def(read_bytes(path, where, max_bytes), path, where)


def parse_graph_def(data: bytes, path: str,
                    where: str) -> tf.compat.v1.GraphDef:
  """Parses the contents `data` of the frozen graph file `path`.

  Args:
    data: What `read_bytes(path, where)` returned.
    path: The file (`.pbtxt` means text format), for format and messages.
    where: Context for error messages.

  Returns:
    The parsed GraphDef.

  Raises:
    GraphError: text/binary mix-up, a SavedModel instead of a GraphDef,
      corrupt or empty data.
  """
  graph_def = tf.compat.v1.GraphDef()
  if path.endswith(".pbtxt"):
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError:
      text = None
    if text is None:
      raise errors.GraphError(
          f"{where}: {path} ends in .pbtxt but holds binary data (is it a "
          "binary GraphDef? then rename it to .pb).")
    try:
      bounded_read.check_text_nesting(data, MAX_TEXT_NESTING)
    except bounded_read.InputFileError as e:
      raise errors.GraphError(
          f"{where}: {path} is not a valid text GraphDef: {e}.") from e
    try:
      text_format.Parse(text, graph_def)
    except text_format.ParseError as e:
      raise errors.GraphError(
          f"{where}: {path} is not a valid text GraphDef: "
          f"{bounded_read.shorten_message(str(e), 300)}") from e
    except RecursionError as e:
      raise errors.GraphError(
          f"{where}: {path} is not a valid text GraphDef: its messages "
          "are nested too deeply to parse.") from e
  else:
    if _looks_like_text(data):
      raise errors.GraphError(
          f"{where}: {path} holds a text-format GraphDef but does not end in "
          ".pbtxt; rename it to .pbtxt (or convert it to binary).")
    try:
      graph_def.ParseFromString(data)
    except message.DecodeError as e:
      if _is_saved_model(data):
        raise errors.GraphError(
            f"{where}: {path} is a SavedModel (saved_model.pb), not a frozen "
            "GraphDef; freeze the model first (e.g. with "
            "convert_variables_to_constants) and name the frozen .pb.") from e
      raise errors.GraphError(
          f"{where}: {path} is not a binary GraphDef (corrupt or truncated, "
          f"{len(data)} bytes): {bounded_read.shorten_message(str(e), 300)}"
      ) from e
  del data
  if not graph_def.node:
    raise errors.GraphError(
        f"{where}: {path} parsed as a GraphDef with no nodes; the file is "
        "empty, truncated or not a GraphDef.")
  bad = next((n for n in graph_def.node if not n.name or not n.op), None)
  if bad is not None:
    raise errors.GraphError(
        f"{where}: {path} is not a valid GraphDef (a node has an empty "
        f"name or op: {str(bad)[:200]!r}); the file is probably corrupt.")
  return graph_def

