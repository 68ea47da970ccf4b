"""One reader of saved_model.pb(txt) for the check, inspect and incremental.

The merge's check (`bundle_check`), `inspect --dir` (`inspect_lib`) and
incremental deploys (`incremental`, reading a base version) all read a
SavedModel proto that may come from anywhere: as a regular file of bounded
size (no FIFO, device or endless file), a text proto checked for nesting
before it is parsed, and errors that quote at most a short excerpt. Each
caller wraps `SavedModelReadError` into its own error type and wording.
"""

from google.protobuf import message as proto_message
from google.protobuf import text_format
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from python.common import bounded_read

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"


class SavedModelReadError(Exception):
  """The directory holds no readable SavedModel; the message says why."""


def read_saved_model(export_dir: str,
                     max_bytes: int = bounded_read.DEFAULT_MAX_INPUT_BYTES,
                     flag: str = "") -> saved_model_pb2.SavedModel:
  """Reads and parses `export_dir`'s saved_model.pb (or .pbtxt).

  Args:
    export_dir: a version directory, local or a tf.io.gfile URI.
    max_bytes: a larger file is refused.
    flag: how the user named the directory, e.g. "--dir=": messages say
      `--dir=/models/m` and suggest `--dir=/models/m/3`.

  Returns:
    The SavedModel, with at least one MetaGraphDef.

  Raises:
    SavedModelReadError: not a directory, no saved_model.pb(txt) (a model
      base path is named with its newest version), not a regular file, too
      large, nested too deeply, corrupt, or without MetaGraphDef.
  """
  base = export_dir.rstrip("/")
  pb, pbtxt = f"{base}/{SAVED_MODEL_PB}", f"{base}/{SAVED_MODEL_PBTXT}"
  try:
    if not tf.io.gfile.isdir(export_dir):
      raise SavedModelReadError(
          f"{flag}{export_dir} does not exist or is not a directory; pass "
          "a SavedModel version directory such as /models/merged/1.")
    if tf.io.gfile.exists(pb):
      path, text = pb, False
    elif tf.io.gfile.exists(pbtxt):
      path, text = pbtxt, True
    else:
      versions = sorted(
          int(n.rstrip("/")) for n in tf.io.gfile.listdir(export_dir)
          if n.rstrip("/").isdigit())
      hint = (f"; it looks like a model base path with versions {versions}: "
              f"pass {flag}{base}/{versions[-1]}" if versions else "")
      raise SavedModelReadError(
          f"{flag}{export_dir} has no {SAVED_MODEL_PB} or "
          f"{SAVED_MODEL_PBTXT}{hint}.")
    data = bounded_read.read_regular_file(path, max_bytes)
    if text:
      bounded_read.check_text_nesting(data)
  except tf.errors.OpError as e:
    raise SavedModelReadError(
        f"{flag}{export_dir}: cannot read: "
        f"{bounded_read.excerpt(e.message, 300)}") from e
  except bounded_read.InputFileError as e:
    raise SavedModelReadError(f"{e}.") from e
  proto = saved_model_pb2.SavedModel()
  try:
    if text:
      text_format.Parse(data.decode("utf-8", "replace"), proto)
    else:
      proto.ParseFromString(data)
  except (proto_message.DecodeError, text_format.ParseError,
          RecursionError) as e:
    raise SavedModelReadError(
        f"{path} is corrupt: not a valid SavedModel proto (truncated or "
        f"damaged, {len(data)} bytes): "
        f"{bounded_read.shorten_message(str(e), 300)}"
    ) from e
  if not proto.meta_graphs:
    raise SavedModelReadError(f"{path} holds no MetaGraphDef.")
  return proto
