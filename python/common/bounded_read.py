"""Reading untrusted input files: regular files only, with a size bound.

Frozen graphs, specs and vocabulary files come from other teams and the
internet. A FIFO given as a frozen graph would block `open()` forever, and
`/dev/zero` would be read without end, so every input goes through
`read_regular_file`:

1. `os.stat` the path (following symlinks) before opening it and refuse
   anything but a regular file (directory, FIFO, socket, device) with one line
   saying what it is;
2. refuse a file larger than `max_bytes`;
3. open it with `O_NONBLOCK` (a FIFO swapped in after the stat cannot block
   the open), `fstat` the open descriptor to make sure it is still the same
   regular file, and read at most `max_bytes + 1` bytes.

URIs (`gs://`, `s3://`, `ram://` ...) have no FIFOs or devices; they are read
through `tf.io.gfile` with the same size bound.

`excerpt()` shortens text quoted in error messages (a 50 MB junk line is never
echoed whole), and `check_text_nesting()` refuses text protos nested so deep
that protobuf's recursive text parser would overflow the Python stack.
"""

import os
import re
import stat
from typing import Union

DEFAULT_MAX_INPUT_BYTES = 2 << 30  # Protobuf's limit for a binary GraphDef.
DEFAULT_MAX_TEXT_NESTING = 100  # Protobuf's default recursion limit.
_EXCERPT_CHARS = 120
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_READ_CHUNK = 64 << 20


class InputFileError(Exception):
  """An input file is not a regular file, too large or unreadable.

  The message names the file and the problem (not the context: callers add
  the spec, model and key).
  """


def is_uri(path: str) -> bool:
  """True for URIs such as gs://b/x or ram://x (file:// included)."""
  return _URI_RE.match(path) is not None


def _kind(mode: int) -> str:
  if stat.S_ISDIR(mode):
    return "a directory"
  if stat.S_ISFIFO(mode):
    return "a FIFO (named pipe)"
  if stat.S_ISSOCK(mode):
    return "a socket"
  if stat.S_ISCHR(mode):
    return "a character device"
  if stat.S_ISBLK(mode):
    return "a block device"
  return "not a regular file"


def human_bytes(n: int) -> str:
  """1536 -> '1.5 KiB'."""
  value = float(n)
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if value < 1024 or unit == "TiB":
      return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
    value /= 1024
  return f"{n} B"


def check_regular_file(path: str, max_bytes: int) -> int:
  """Returns the size of the regular file `path`, without opening it.

  Args:
    path: a local path (`file://` prefix allowed) or URI.
    max_bytes: the largest size accepted.

  Raises:
    InputFileError: missing, not a regular file, or larger than max_bytes.
  """
  if is_uri(path) and not path.startswith("file://"):
    return _uri_size(path, max_bytes)
  local = path[len("file://"):] if path.startswith("file://") else path
  try:
    st = os.stat(local)
  except FileNotFoundError as e:
    raise InputFileError(f"{path} does not exist") from e
  except OSError as e:
    raise InputFileError(f"cannot read {path}: {e.strerror or e}") from e
  if not stat.S_ISREG(st.st_mode):
    raise InputFileError(
        f"{path} is {_kind(st.st_mode)}, not a regular file; only regular "
        "files are read")
  _check_size(path, st.st_size, max_bytes)
  return st.st_size


def _check_size(path: str, size: int, max_bytes: int) -> None:
  if size > max_bytes:
    raise InputFileError(
        f"{path} is {human_bytes(size)}, over the limit of "
        f"{human_bytes(max_bytes)} ({max_bytes} bytes); raise the limit "
        "(--max_input_bytes) if the file is meant to be this large")


def _uri_size(path: str, max_bytes: int) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if not tf.io.gfile.exists(path):
      raise InputFileError(f"{path} does not exist")
    if tf.io.gfile.isdir(path):
      raise InputFileError(f"{path} is a directory, not a regular file")
    size = tf.io.gfile.stat(path).length
  except tf.errors.OpError as e:
    raise InputFileError(f"cannot read {path}: {excerpt(e.message)}") from e
  _check_size(path, size, max_bytes)
  return size


def read_regular_file(path: str, max_bytes: int = DEFAULT_MAX_INPUT_BYTES
                      ) -> bytes:
  """Reads a regular file of at most `max_bytes` bytes; see the module doc.

  Args:
    path: a local path (`file://` prefix allowed) or URI.
    max_bytes: the largest size accepted.

  Returns:
    The file's contents.

  Raises:
    InputFileError: missing, not a regular file, too large or unreadable.
  """
  if is_uri(path) and not path.startswith("file://"):
    return _read_uri(path, max_bytes)
  check_regular_file(path, max_bytes)
  local = path[len("file://"):] if path.startswith("file://") else path
  try:
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
  except OSError as e:
    raise InputFileError(f"cannot read {path}: {e.strerror or e}") from e
  try:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # Swapped after the stat above.
      raise InputFileError(
          f"{path} is {_kind(st.st_mode)}, not a regular file; only regular "
          "files are read")
    _check_size(path, st.st_size, max_bytes)
    # One read of the whole file (one buffer, no copies: inputs are large);
    # more only if the kernel returns less (files past ~2 GiB) or it grew.
    first = os.read(fd, min(st.st_size, max_bytes) + 1)
    chunks, total = [first], len(first)
    while first and total <= max_bytes:
      chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
      if not chunk:
        break
      chunks.append(chunk)
      total += len(chunk)
    if total > max_bytes:  # The file grew while being read.
      _check_size(path, total, max_bytes)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
  except OSError as e:
    raise InputFileError(f"cannot read {path}: {e.strerror or e}") from e
  finally:
    os.close(fd)


def _read_uri(path: str, max_bytes: int) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _uri_size(path, max_bytes)
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read(max_bytes + 1)
  except tf.errors.OpError as e:
    raise InputFileError(f"cannot read {path}: {excerpt(e.message)}") from e
  _check_size(path, len(data), max_bytes)
  return data


def excerpt(text: Union[str, bytes], limit: int = _EXCERPT_CHARS) -> str:
  """`text` on one line, cut to about `limit` characters for a message."""
  if isinstance(text, bytes):
    text = text[:limit * 4].decode("utf-8", "replace")
  else:
    text = text[:limit * 4]
  text = " ".join(text.split())
  if len(text) > limit:
    text = text[:limit] + "..."
  return text


def shorten_message(message: str, limit: int = 600) -> str:
  """Cuts every run of more than `limit` non-space characters.

  Library error messages (protobuf's, TensorFlow's) quote the input they
  choke on; this keeps them readable whatever the input holds.
  """
  def cut(match):
    return match.group(0)[:limit // 4] + "...(cut)"
  message = re.sub(r"\S{%d,}" % (limit // 2), cut, message)
  if len(message) > limit * 4:
    message = message[:limit * 4] + "...(cut)"
  return message


# Tokens of the protobuf text format that matter for nesting: quoted strings
# (which may hold braces), comments, and the message delimiters.
_TEXT_TOKEN = re.compile(
    rb"\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?|#[^\n]*|[{}<>]")


def check_text_nesting(data: bytes,
                       limit: int = DEFAULT_MAX_TEXT_NESTING) -> None:
  """Refuses a text proto whose messages nest deeper than `limit`.

  Protobuf's Python text parser recurses once per level, so a deeply
  nested file raises RecursionError; this scan finds the depth first.

  Args:
    data: the text proto's bytes.
    limit: the deepest nesting accepted.

  Raises:
    InputFileError: nested deeper than `limit` (the message gives the line).
  """
  if data.count(b"{") + data.count(b"<") <= limit:
    return
  depth = 0
  for match in _TEXT_TOKEN.finditer(data):
    token = match.group(0)
    if token in (b"{", b"<"):
      depth += 1
      if depth > limit:
        line = data.count(b"\n", 0, match.start()) + 1
        raise InputFileError(
            f"messages are nested more than {limit} levels deep (line "
            f"{line}); no real graph nests this deep, so the file is "
            "corrupt or hostile")
    elif token in (b"}", b">"):
      depth = max(depth - 1, 0)
