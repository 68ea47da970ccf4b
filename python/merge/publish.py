"""Crash-safe publishing of a SavedModel as a numbered version directory.

TensorFlow Serving watches `model_base_path` and loads the highest numeric
subdirectory, ignoring every other name. `publish()` relies on that:

1. take an exclusive lock on `<output_base>/.merge.lock` (local paths), so
   concurrent merges into one base are serialized, and remove what crashed
   runs left behind (`.staging-*`, `.trash-*`, `.tmp-*`);
2. choose the version (`version` or highest numeric subdirectory + 1) and
   refuse one that already exists;
3. let the caller write the bundle into `<output_base>/.staging-<N>-...`;
4. fsync every file and directory of the staged copy, run the caller's check
   on it;
5. `rename()` the staged directory to `<output_base>/<N>` and fsync the base,
   so the version appears atomically, complete, or not at all;
6. replace the history files `current_version` (newest first,
   `N<TAB>new signatures<TAB>"message"`) and `exported_models` (one signature
   per line) atomically (temporary file + rename);
7. with `keep_versions`, retire the oldest versions (rename to a non-numeric
   name, then delete), never the new one.

A SIGKILL at any point leaves previously published versions untouched and no
numeric directory half-written; the next run cleans up.

`output_base` may also be a URI. `file://` URIs are handled as local paths.
`s3://bucket/prefix` goes through boto3 (TensorFlow 2.21's gfile has no S3):
see `s3_publish.py` for its order of uploads, server-side copies and
conditional writes. Other `tf.io.gfile` schemes (`gs://`, `ram://`, ...) have
no atomic directory rename, so the staged copy is copied into `<N>` with
`saved_model.pb` written last (TF Serving only considers a version once its
`saved_model.pb` exists). Merges into such a base are serialized within one
process only; run one merge per base at a time there.
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
from typing import Callable, Generic, Iterator, Optional, Sequence, TypeVar

from absl import logging
import tensorflow as tf

from python.common import object_store
from python.merge import errors
from python.merge import s3_publish

CURRENT_VERSION_FILE = "current_version"
EXPORTED_MODELS_FILE = "exported_models"
LOCK_FILE = ".merge.lock"
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
_TMP_PREFIX = ".tmp-"
_LEFTOVER_PREFIXES = (_STAGING_PREFIX, _TRASH_PREFIX, _TMP_PREFIX)
# Leftovers in object stores are only removed once this old, since merges in
# other processes cannot be excluded there.
_REMOTE_LEFTOVER_AGE_SECONDS = 24 * 3600
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_VERSION_RE = re.compile(r"^[0-9]+$")
_MAX_VERSION = (1 << 63) - 1

_T = TypeVar("_T")

# Serializes merges into non-local bases within this process.
_REMOTE_LOCKS: dict[str, threading.Lock] = {}
_REMOTE_LOCKS_GUARD = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Publication(Generic[_T]):
  """What `publish()` did.

  Attributes:
    version: the published version number.
    path: the published version directory (`<output_base>/<version>`).
    new_signatures: signatures of this version absent from the previous
      `exported_models`, in the given order.
    deleted_versions: versions removed because of `keep_versions`, ascending.
    written: what the `write` callable returned.
  """
  version: int
  path: str
  new_signatures: tuple[str, ...]
  deleted_versions: tuple[int, ...]
  written: _T


def is_local(path: str) -> bool:
  """Returns whether `path` is a local filesystem path (incl. `file://`)."""
  return "://" not in path or path.startswith("file://")


def _local_path(path: str) -> str:
  if path.startswith("file://"):
    path = path[len("file://"):]
  return os.path.abspath(path)


def _join(base: str, name: str) -> str:
  return base.rstrip("/") + "/" + name if "://" in base else os.path.join(
      base, name)


def list_versions(output_base: str) -> list[int]:
  """Returns the numeric version subdirectories of `output_base`, ascending.

  Args:
    output_base: a local path or `tf.io.gfile` URI; missing means no versions.

  Raises:
    errors.PublishError: `output_base` exists but cannot be listed.
  """
  if object_store.is_s3(output_base):
    return s3_publish.list_versions(output_base)
  base = _local_path(output_base) if is_local(output_base) else output_base
  try:
    if is_local(output_base):
      if not os.path.exists(base):
        return []
      names = os.listdir(base)
      return sorted(
          int(n) for n in names
          if _VERSION_RE.match(n) and os.path.isdir(os.path.join(base, n)))
    if not tf.io.gfile.exists(base):
      return []
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(base)]
    return sorted(
        int(n) for n in names
        if _VERSION_RE.match(n) and tf.io.gfile.isdir(_join(base, n)))
  except (OSError, tf.errors.OpError) as e:
    raise errors.PublishError(
        f"cannot list --output_base={output_base!r}: {_reason(e)}. "
        "Pass a directory you can read and write.") from e


def next_version(output_base: str) -> int:
  """Returns the version a merge would publish: highest numeric + 1, or 1."""
  if object_store.is_s3(output_base):
    return s3_publish.next_version(output_base)
  versions = list_versions(output_base)
  return versions[-1] + 1 if versions else 1


def validate_version(version: Optional[int]) -> None:
  """Raises PublishError unless `version` is None or a valid version number."""
  if version is None:
    return
  if (isinstance(version, bool) or not isinstance(version, int) or
      not 0 <= version <= _MAX_VERSION):
    raise errors.PublishError(
        f"version={version!r} is not a valid version number: TensorFlow "
        f"Serving versions are integers from 0 to {_MAX_VERSION}. Omit it to "
        "publish the highest existing version + 1.")


def validate_keep_versions(keep_versions: Optional[int]) -> None:
  """Raises PublishError unless `keep_versions` is None or a positive int."""
  if keep_versions is None:
    return
  if (isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or
      keep_versions < 1):
    raise errors.PublishError(
        f"keep_versions={keep_versions!r} must be a positive integer (the "
        "number of newest versions to keep, including the new one); omit it "
        "to keep every version.")


def read_history(output_base: str) -> tuple[list[str], list[str]]:
  """Reads the history files of `output_base`.

  Args:
    output_base: a local path or `tf.io.gfile` URI.

  Returns:
    (lines of `current_version` newest first, signatures of
    `exported_models`); empty lists when the files do not exist.
  """
  if object_store.is_s3(output_base):
    return s3_publish.read_history(output_base)
  base = _local_path(output_base) if is_local(output_base) else output_base
  current = _read_lines(_join(base, CURRENT_VERSION_FILE))
  exported = _read_lines(_join(base, EXPORTED_MODELS_FILE))
  return current, exported


def version_exists_error(output_base: str, version: int,
                         existing: Sequence[int]) -> errors.PublishError:
  """The error for publishing over an existing version."""
  return errors.PublishError(
      f"version {version} already exists in --output_base={output_base!r} "
      f"(existing versions: {_format_versions(existing)}); published "
      "versions are never overwritten. Omit --version to publish "
      f"{(max(existing) + 1) if existing else 1}, or pick an unused number.")


def format_history_line(version: int, new_signatures: Sequence[str],
                        message: Optional[str]) -> str:
  """Returns one `current_version` line (without the newline).

  The message is written as a JSON string, so it is always double-quoted and a
  tab, newline or quote inside it cannot break the line format.
  """
  return "\t".join((str(version), ",".join(new_signatures),
                    json.dumps(message or "", ensure_ascii=False)))


def publish(output_base: str,
            write: Callable[[str], _T],
            *,
            signatures: Sequence[str],
            version: Optional[int] = None,
            message: Optional[str] = None,
            check: Optional[Callable[[str], None]] = None,
            keep_versions: Optional[int] = None) -> Publication[_T]:
  """Publishes a bundle written by `write` as `<output_base>/<version>`.

  Args:
    output_base: the model base path TF Serving watches: a local directory
      (created if missing) or a `tf.io.gfile` URI.
    write: called with the staging directory (which does not exist yet) to
      write the complete SavedModel into; its result is returned in
      `Publication.written`. Exceptions propagate after the staging directory
      is removed.
    signatures: the signature names the bundle exports, for the history.
    version: the version to publish; default highest numeric version + 1, or
      1 for an empty or missing base.
    message: recorded in `current_version`.
    check: called with the staged directory after it is flushed and before it
      is published; raise (e.g. errors.VerifyError) to abort publishing.
    keep_versions: if set, keep only this many newest versions (the new one
      always stays) and delete the older ones.

  Returns:
    A Publication.

  Raises:
    errors.PublishError: the base is not writable, the version exists or the
      bundle cannot be moved into place. Nothing is published.
    Whatever `write` or `check` raise; nothing is published then either.
  """
  validate_version(version)
  validate_keep_versions(keep_versions)
  if not isinstance(output_base, str) or not output_base.strip():
    raise errors.PublishError(
        f"output_base={output_base!r} must name a directory or URI, e.g. "
        "/models/merged.")
  if object_store.is_s3(output_base):
    # Delimited S3 branch: local staging, conditional-write version claims,
    # server-side copy with saved_model.pb last (s3_publish.py).
    (published, path, new_signatures, deleted,
     written) = s3_publish.publish(
         output_base, write, signatures=tuple(signatures), version=version,
         message=message, check=check, keep_versions=keep_versions)
    return Publication(version=published, path=path,
                       new_signatures=new_signatures,
                       deleted_versions=deleted, written=written)
  if is_local(output_base):
    return _LocalPublisher(_local_path(output_base)).run(
        write, signatures=tuple(signatures), version=version,
        message=message, check=check, keep_versions=keep_versions)
  return _RemotePublisher(output_base.rstrip("/")).run(
      write, signatures=tuple(signatures), version=version, message=message,
      check=check, keep_versions=keep_versions)


class _Publisher:
  """Steps shared by local and remote publishing; subclasses do the I/O."""

  def __init__(self, base: str):
    self.base = base

  # --- I/O primitives, overridden per filesystem kind. ---
  def prepare_base(self) -> None:
    raise NotImplementedError

  def lock(self) -> contextlib.AbstractContextManager[None]:
    raise NotImplementedError

  def remove_leftovers(self) -> None:
    raise NotImplementedError

  def exists(self, path: str) -> bool:
    raise NotImplementedError

  def flush(self, staging: str) -> None:
    raise NotImplementedError

  def move_into_place(self, staging: str, final: str) -> None:
    raise NotImplementedError

  def remove_tree(self, path: str) -> None:
    raise NotImplementedError

  def retire(self, path: str, version: int) -> None:
    raise NotImplementedError

  def replace_file(self, path: str, text: str) -> None:
    raise NotImplementedError

  # --- The recipe. ---
  def run(self, write: Callable[[str], _T], *, signatures: tuple[str, ...],
          version: Optional[int], message: Optional[str],
          check: Optional[Callable[[str], None]],
          keep_versions: Optional[int]) -> Publication[_T]:
    """Runs every publishing step under the lock; see publish()."""
    self.prepare_base()
    with self.lock():
      self.remove_leftovers()
      existing = list_versions(self.base)
      if version is None:
        version = existing[-1] + 1 if existing else 1
      final = _join(self.base, str(version))
      if version in existing or self.exists(final):
        raise version_exists_error(self.base, version, existing)
      if existing and version < existing[-1]:
        logging.warning(
            "Publishing version %d below the highest existing version %d: "
            "TensorFlow Serving keeps serving version %d.", version,
            existing[-1], existing[-1])
      staging = _join(
          self.base,
          f"{_STAGING_PREFIX}{version}-{os.getpid()}-{int(time.time())}-"
          f"{secrets.token_hex(4)}")
      try:
        logging.info("Writing version %d into %s", version, staging)
        written = write(staging)
        if not self.exists(staging):
          raise errors.PublishError(
              f"the bundle writer did not create the staging directory "
              f"{staging!r}; nothing to publish.")
        self.flush(staging)
        if check is not None:
          logging.info("Checking staged bundle %s", staging)
          check(staging)
        self.move_into_place(staging, final)
      finally:
        if self.exists(staging):
          self.remove_tree(staging)
      logging.info("Published version %d at %s", version, final)
      new_signatures = self._update_history(version, signatures, message)
      deleted = self._apply_keep_versions(version, keep_versions)
    return Publication(version=version, path=final,
                       new_signatures=new_signatures,
                       deleted_versions=deleted, written=written)

  def _update_history(self, version: int, signatures: tuple[str, ...],
                      message: Optional[str]) -> tuple[str, ...]:
    current, exported = read_history(self.base)
    previous = set(exported)
    new_signatures = tuple(s for s in signatures if s not in previous)
    line = format_history_line(version, new_signatures, message)
    self.replace_file(_join(self.base, CURRENT_VERSION_FILE),
                      "".join(f"{l}\n" for l in [line] + current))
    self.replace_file(_join(self.base, EXPORTED_MODELS_FILE),
                      "".join(f"{s}\n" for s in signatures))
    return new_signatures

  def _apply_keep_versions(self, version: int,
                           keep_versions: Optional[int]) -> tuple[int, ...]:
    if keep_versions is None:
      return ()
    versions = list_versions(self.base)
    keep = set(versions[-keep_versions:]) | {version}
    deleted = tuple(v for v in versions if v not in keep)
    for v in deleted:
      logging.info("Deleting version %d (--keep_versions=%d)", v,
                   keep_versions)
      self.retire(_join(self.base, str(v)), v)
    return deleted


class _LocalPublisher(_Publisher):
  """Publishing into a local directory: flock, fsync, atomic rename."""

  def prepare_base(self) -> None:
    try:
      os.makedirs(self.base, exist_ok=True)
    except OSError as e:
      raise errors.PublishError(
          f"cannot create --output_base={self.base!r}: {_reason(e)}. Pass a "
          "directory you can write to.") from e
    if not os.access(self.base, os.W_OK | os.X_OK):
      raise errors.PublishError(
          f"--output_base={self.base!r} is not writable. Pass a directory "
          "you can write to, or fix its permissions.")

  @contextlib.contextmanager
  def lock(self) -> Iterator[None]:
    path = os.path.join(self.base, LOCK_FILE)
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise errors.PublishError(
          f"cannot create the lock file {path!r}: {_reason(e)}. Pass an "
          "--output_base you can write to.") from e
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
        logging.info(
            "Waiting for another merge into %s to finish (lock %s held by "
            "%s)", self.base, path, holder or "an unknown process")
        fcntl.flock(fd, fcntl.LOCK_EX)
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
      yield
    finally:
      os.close(fd)  # Releases the flock.

  def remove_leftovers(self) -> None:
    # Every staging directory is written under the lock we hold, so whatever
    # exists now was left by a run that died.
    for name in os.listdir(self.base):
      if name.startswith(_LEFTOVER_PREFIXES):
        path = os.path.join(self.base, name)
        logging.info("Removing %s left by an interrupted merge", path)
        self.remove_tree(path)

  def exists(self, path: str) -> bool:
    return os.path.lexists(path)

  def flush(self, staging: str) -> None:
    try:
      for root, _, files in os.walk(staging, topdown=False):
        for name in files:
          _fsync_path(os.path.join(root, name), os.O_RDONLY)
        _fsync_path(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
      raise errors.PublishError(
          f"cannot flush the staged bundle {staging!r} to disk: "
          f"{_reason(e)}.") from e

  def move_into_place(self, staging: str, final: str) -> None:
    # Under the lock nobody else creates `final`; the check above refused an
    # existing one (rename() would silently replace an empty directory).
    try:
      os.rename(staging, final)
      _fsync_path(self.base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
      raise errors.PublishError(
          f"cannot rename the staged bundle {staging!r} to {final!r}: "
          f"{_reason(e)}.") from e

  def remove_tree(self, path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)

  def retire(self, path: str, version: int) -> None:
    # Rename first so TF Serving sees the version vanish at once, never a
    # half-deleted numeric directory.
    trash = os.path.join(
        self.base, f"{_TRASH_PREFIX}{version}-{os.getpid()}-"
        f"{secrets.token_hex(4)}")
    try:
      os.rename(path, trash)
      _fsync_path(self.base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
      raise errors.PublishError(
          f"cannot delete old version {path!r} for --keep_versions: "
          f"{_reason(e)}.") from e
    self.remove_tree(trash)

  def replace_file(self, path: str, text: str) -> None:
    tmp = os.path.join(
        self.base, f"{_TMP_PREFIX}{os.path.basename(path)}-{os.getpid()}-"
        f"{secrets.token_hex(4)}")
    try:
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
      _fsync_path(self.base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise errors.PublishError(
          f"cannot write the history file {path!r}: {_reason(e)}.") from e


class _RemotePublisher(_Publisher):
  """Publishing into a tf.io.gfile URI without atomic directory rename."""

  def prepare_base(self) -> None:
    try:
      tf.io.gfile.makedirs(self.base)
    except tf.errors.OpError as e:
      raise errors.PublishError(
          f"cannot create --output_base={self.base!r}: {_reason(e)}. Pass a "
          "URI you can write to.") from e

  @contextlib.contextmanager
  def lock(self) -> Iterator[None]:
    with _REMOTE_LOCKS_GUARD:
      lock = _REMOTE_LOCKS.setdefault(self.base, threading.Lock())
    with lock:
      yield

  def remove_leftovers(self) -> None:
    now = time.time()
    for name in tf.io.gfile.listdir(self.base):
      name = name.rstrip("/")
      if not name.startswith(_LEFTOVER_PREFIXES):
        continue
      # Names end in -<pid>-<unix time>-<random> (staging) so age is known
      # without stat(), which object stores do not offer for directories.
      match = re.match(r"^.*-(\d+)-(\d+)-[0-9a-f]+$", name)
      if match and now - int(match.group(2)) < _REMOTE_LEFTOVER_AGE_SECONDS:
        continue
      path = _join(self.base, name)
      logging.info("Removing %s left by an interrupted merge", path)
      self.remove_tree(path)

  def exists(self, path: str) -> bool:
    return tf.io.gfile.exists(path)

  def flush(self, staging: str) -> None:
    del staging  # Object stores persist each file when it is closed.

  def move_into_place(self, staging: str, final: str) -> None:
    try:
      files = []
      for root, _, names in tf.io.gfile.walk(staging):
        for name in names:
          rel = _join(root, name)[len(staging) + 1:]
          files.append(rel)
      # TF Serving ignores a version until its saved_model.pb exists, so
      # everything else goes first.
      files.sort(key=lambda rel: (rel in _SAVED_MODEL_FILES, rel))
      for rel in files:
        dst = _join(final, rel)
        tf.io.gfile.makedirs(dst.rsplit("/", 1)[0])
        tf.io.gfile.copy(_join(staging, rel), dst, overwrite=False)
    except tf.errors.OpError as e:
      raise errors.PublishError(
          f"cannot copy the staged bundle {staging!r} to {final!r}: "
          f"{_reason(e)}. Remove the partial copy {final!r} (it has no "
          "saved_model.pb, so TF Serving ignores it).") from e

  def remove_tree(self, path: str) -> None:
    with contextlib.suppress(tf.errors.NotFoundError):
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)

  def retire(self, path: str, version: int) -> None:
    del version
    # Remove saved_model.pb first so TF Serving stops considering the version
    # before its other files go.
    for name in _SAVED_MODEL_FILES:
      with contextlib.suppress(tf.errors.NotFoundError):
        tf.io.gfile.remove(_join(path, name))
    self.remove_tree(path)

  def replace_file(self, path: str, text: str) -> None:
    tmp = _join(
        self.base, f"{_TMP_PREFIX}{path.rsplit('/', 1)[-1]}-{os.getpid()}-"
        f"{int(time.time())}-{secrets.token_hex(4)}")
    try:
      with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
      tf.io.gfile.rename(tmp, path, overwrite=True)
    except tf.errors.OpError as e:
      with contextlib.suppress(tf.errors.OpError):
        tf.io.gfile.remove(tmp)
      raise errors.PublishError(
          f"cannot write the history file {path!r}: {_reason(e)}.") from e


def _fsync_path(path: str, flags: int) -> None:
  fd = os.open(path, flags)
  try:
    os.fsync(fd)
  except OSError as e:
    # Some filesystems refuse fsync on directories; the data is still there.
    if e.errno not in (errno.EINVAL, errno.EBADF):
      raise
  finally:
    os.close(fd)


def _read_lines(path: str) -> list[str]:
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      text = f.read()
  except tf.errors.NotFoundError:
    return []
  except tf.errors.OpError as e:
    raise errors.PublishError(
        f"cannot read the history file {path!r}: {_reason(e)}.") from e
  return [line for line in text.splitlines() if line.strip()]


def _format_versions(versions: Sequence[int]) -> str:
  if not versions:
    return "none"
  if len(versions) > 10:
    return ", ".join(map(str, versions[:3])) + ", ..., " + ", ".join(
        map(str, versions[-3:]))
  return ", ".join(map(str, versions))


def _reason(e: Exception) -> str:
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  if isinstance(e, tf.errors.OpError):
    return e.message
  return str(e)
