"""Crash-safe publishing of a SavedModel as a numbered version directory.

TensorFlow Serving watches `model_base_path` and loads the highest numeric
subdirectory, ignoring every other name. `publish()` relies on that:

1. take an exclusive lock on `<output_base>/.merge.lock` (local paths), so
   concurrent merges into one base are serialized (waiting at most
   `lock_timeout_seconds`, reporting the holder's pid and whether it still
   runs), and remove what crashed runs left behind (`.staging-*`, `.trash-*`,
   `.tmp-*`), reporting a previous holder that died;
2. repair the history: every published version without its
   `current_version` line (its merge was killed right after the rename) gets
   one, and `exported_models` follows the newest version;
3. choose the version (`version` or highest numeric subdirectory + 1) and
   refuse one that already exists, and refuse to drop signatures the newest
   version serves unless `allow_removed_signatures`;
4. let the caller write the bundle into `<output_base>/.staging-<N>-...`
   (`check_written` may still refuse it, e.g. for identical content);
5. fsync every file and directory of the staged copy, run the caller's check
   on it;
6. `rename()` the staged directory to `<output_base>/<N>`, so the version
   appears atomically, complete, or not at all;
7. replace the history files `current_version` (newest first,
   `N<TAB>new signatures<TAB>"message"`, plus `<TAB>removed signatures` when
   some were removed) and `exported_models` (one signature per line)
   atomically (temporary file + rename);
8. with `keep_versions`, retire the oldest versions (rename to a non-numeric
   name, then delete), never the new one.

Publishing is one transaction: an exception (exit 1 in the binary) means no
new version is visible. Once the rename of step 6 happened, the version is
published: steps 7 and 8 never raise, and what they could not do is returned
in `Publication.warnings` (and repaired by the next run).

Version directories are the names TensorFlow Serving parses as versions
(`strings::safe_strto64`: optional surrounding whitespace and minus sign,
decimal digits), so `010` is version 10 and keep_versions retires it by its
own name.

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
import stat
import threading
import time
from typing import Callable, Generic, Iterator, Optional, Sequence, TypeVar

from absl import logging
import tensorflow as tf

from python.common import object_store
from python.common import versions as versions_lib
from python.common import bounded_read
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
# Written by bundle_writer (MANIFEST_FILE there); read to repair history.
MANIFEST_FILE = "assets.extra/merge_manifest.json"
DEFAULT_LOCK_TIMEOUT_SECONDS = 3600.0
_MAX_HISTORY_BYTES = 64 << 20
_LOCK_POLL_SECONDS = 0.2
_LOCK_REPORT_SECONDS = 30.0
REPAIRED_MESSAGE = ("(line added by a later merge: the merge that published "
                    "this version stopped before recording it)")

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
    removed_signatures: signatures of the previous `exported_models` this
      version does not have.
    warnings: what could not be done after the version was published (history
      not written, old versions not deleted ...) or was repaired before.
  """
  version: int
  path: str
  new_signatures: tuple[str, ...]
  deleted_versions: tuple[int, ...]
  written: _T
  removed_signatures: tuple[str, ...] = ()
  warnings: tuple[str, ...] = ()


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


def version_path(output_base: str, name: str) -> str:
  """`<output_base>/<name>` (absolute for local bases)."""
  base = _local_path(output_base) if is_local(output_base) else output_base
  return _join(base, name)


# TF Serving's version-name rules (python/common/versions.py).
parse_version_name = versions_lib.parse_version_name


def version_dirs(output_base: str) -> dict[int, list[str]]:
  """Version -> names of the directories holding it (`10` and `010`).

  Args:
    output_base: a local path or `tf.io.gfile` URI; missing means no versions.

  Raises:
    errors.PublishError: `output_base` exists but cannot be listed.
  """
  if object_store.is_s3(output_base):
    return {v: [str(v)] for v in s3_publish.list_versions(output_base)}
  base = _local_path(output_base) if is_local(output_base) else output_base
  found: dict[int, list[str]] = {}
  try:
    if is_local(output_base):
      if not os.path.exists(base):
        return {}
      names = os.listdir(base)
      is_dir = lambda n: os.path.isdir(os.path.join(base, n))
    else:
      if not tf.io.gfile.exists(base):
        return {}
      names = [n.rstrip("/") for n in tf.io.gfile.listdir(base)]
      is_dir = lambda n: tf.io.gfile.isdir(_join(base, n))
    for name in sorted(names):
      version = parse_version_name(name)
      if version is not None and is_dir(name):
        found.setdefault(version, []).append(name)
    return dict(sorted(found.items()))
  except (OSError, tf.errors.OpError) as e:
    raise errors.PublishError(
        f"cannot list --output_base={output_base!r}: {_reason(e)}. "
        "Pass a directory you can read and write.") from e


def list_versions(output_base: str) -> list[int]:
  """Returns the versions of `output_base` (see `version_dirs`), ascending.

  Args:
    output_base: a local path or `tf.io.gfile` URI; missing means no versions.

  Raises:
    errors.PublishError: `output_base` exists but cannot be listed.
  """
  return list(version_dirs(output_base))


def next_version(output_base: str) -> int:
  """Returns the version a merge would publish: highest numeric + 1, or 1."""
  if object_store.is_s3(output_base):
    return s3_publish.next_version(output_base)
  return versions_lib.next_version(list_versions(output_base))


def validate_version(version: Optional[int]) -> None:
  """Raises PublishError unless `version` is None or a valid version number."""
  if version is None:
    return
  if (isinstance(version, bool) or not isinstance(version, int) or
      not 0 <= version <= versions_lib.MAX_VERSION):
    raise errors.PublishError(
        f"version={version!r} is not a valid version number: TensorFlow "
        f"Serving versions are integers from 0 to {versions_lib.MAX_VERSION}. Omit it to "
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


def validate_output_base(output_base: str) -> None:
  """Raises PublishError unless `output_base` is a non-blank string."""
  if not isinstance(output_base, str) or not output_base.strip():
    raise errors.PublishError(
        f"output_base={output_base!r} must name a directory or URI, e.g. "
        "/models/merged.")


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
                        message: Optional[str],
                        removed_signatures: Sequence[str] = ()) -> str:
  """Returns one `current_version` line (without the newline).

  `N<TAB>new signatures<TAB>"message"`, plus `<TAB>removed signatures` when
  the version removed some. The message is written as a JSON string, so it is
  always double-quoted and a tab, newline or quote inside it cannot break the
  line format.
  """
  fields = [str(version), ",".join(new_signatures),
            json.dumps(message or "", ensure_ascii=False)]
  if removed_signatures:
    fields.append(",".join(removed_signatures))
  return "\t".join(fields)


def history_line_version(line: str) -> Optional[int]:
  """The version a `current_version` line records, or None."""
  return parse_version_name(line.split("\t", 1)[0])


def removed_signatures_error(output_base: str, version: int,
                             removed: Sequence[str]) -> errors.PublishError:
  """The error for publishing a version that drops signatures."""
  listed = ", ".join(removed[:10]) + (
      f" and {len(removed) - 10} more" if len(removed) > 10 else "")
  return errors.PublishError(
      f"version {version} would remove signature(s) {listed} "
      f"that the newest version in --output_base={output_base!r} serves "
      "(exported_models); their clients would fail once it loads. Add their "
      "models to the spec to keep them, or pass --allow_removed_signatures "
      "to remove them.")


def retired_versions(versions: Sequence[int], version: int,
                     keep_versions: Optional[int]) -> tuple[int, ...]:
  """The versions `keep_versions` retires once `version` is published.

  Args:
    versions: the published versions, with or without `version`.
    version: the new version; it is always kept.
    keep_versions: how many newest versions to keep; None keeps every one.

  Returns:
    The versions to delete, ascending.
  """
  if keep_versions is None:
    return ()
  every = sorted(set(versions) | {version})
  keep = set(every[-keep_versions:]) | {version}
  return tuple(v for v in every if v not in keep)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What publishing a version into a base would do, before anything is written.

  `plan()` computes it from one listing of the base; `publish()` computes it
  under its lock and follows it, and the merge's `--dry_run` reports it.

  Attributes:
    output_base: the base as publishing names it (absolute for local paths).
    version: the version to publish: the given one, or the highest published
      version + 1, or 1 (on s3://, the highest claimed number + 1; the claim
      at publish time may take a higher one if another merge took it).
    path: the version directory `<output_base>/<version>`.
    existing: the published versions, ascending.
    newest: the directory of the newest published version, which the
      same-content refusal compares with; None without versions, and on
      s3:// (the manifest is in the bucket, not on disk).
    signatures: the signatures of the new version, in the given order.
    previous_signatures: the base's `exported_models`.
    new_signatures: `signatures` absent from `previous_signatures`.
    removed_signatures: `previous_signatures` absent from `signatures`.
    retired_versions: what `keep_versions` deletes after publishing.
    refusals: why publishing would be refused (each error `publish()` would
      raise), empty when it would publish.
  """
  output_base: str
  version: int
  path: str
  existing: tuple[int, ...]
  newest: Optional[str]
  signatures: tuple[str, ...]
  previous_signatures: tuple[str, ...]
  new_signatures: tuple[str, ...]
  removed_signatures: tuple[str, ...]
  retired_versions: tuple[int, ...] = ()
  refusals: tuple[errors.PublishError, ...] = ()

  @property
  def below_newest(self) -> bool:
    """Whether the version is below the newest, which TF Serving keeps."""
    return bool(self.existing) and self.version < self.existing[-1]


def plan(output_base: str,
         signatures: Sequence[str],
         version: Optional[int] = None,
         *,
         keep_versions: Optional[int] = None,
         allow_removed_signatures: bool = False,
         removable: Sequence[str] = ()) -> Plan:
  """Plans publishing `signatures` as a new version of `output_base`.

  Reads the base (its versions and `exported_models`) and writes nothing; a
  missing base plans version 1.

  Args:
    output_base: a local path or URI, as for `publish()`.
    signatures: the signature names the new version exports.
    version: the version to publish; default highest version + 1, or 1.
    keep_versions: how many newest versions to keep (for
      `Plan.retired_versions`).
    allow_removed_signatures: dropping signatures of `exported_models` is no
      refusal.
    removable: signatures the caller means to remove (an incremental
      deploy's `remove`); dropping only these is no refusal either.

  Returns:
    A Plan; what publishing would refuse is in `Plan.refusals`.

  Raises:
    errors.PublishError: bad `output_base`, `version` or `keep_versions`, the
      base cannot be listed or its history read, or the version exists
      (published versions are never overwritten).
  """
  validate_version(version)
  validate_keep_versions(keep_versions)
  validate_output_base(output_base)
  s3 = object_store.is_s3(output_base)
  base = (_local_path(output_base) if is_local(output_base) else
          output_base.rstrip("/"))
  dirs = version_dirs(base)
  _, exported = read_history(base)
  if s3:  # The claim at publish time checks the number (s3_publish).
    default, exists, newest = s3_publish.next_version(base), None, None
  else:
    default = versions_lib.next_version(list(dirs))
    exists = os.path.lexists if is_local(base) else tf.io.gfile.exists
    newest = _join(base, dirs[max(dirs)][-1]) if dirs else None
  return plan_from_listing(
      base, signatures, version, versions=list(dirs), exported=exported,
      default_version=default, exists=exists, newest=newest,
      keep_versions=keep_versions,
      allow_removed_signatures=allow_removed_signatures, removable=removable)


def plan_from_listing(base: str, signatures: Sequence[str],
                      version: Optional[int], *, versions: Sequence[int],
                      exported: Sequence[str], default_version: int,
                      exists: Optional[Callable[[str], bool]],
                      newest: Optional[str],
                      keep_versions: Optional[int] = None,
                      allow_removed_signatures: bool = False,
                      removable: Sequence[str] = ()) -> Plan:
  """`plan()` from what was read of the base (s3_publish reads its own).

  Args:
    base: the normalized base (see `Plan.output_base`).
    signatures, version, keep_versions, allow_removed_signatures, removable:
      as for `plan()`.
    versions: the published versions.
    exported: the base's `exported_models`.
    default_version: the version when `version` is None.
    exists: whether a path exists, to refuse a version directory that is
      not listed as one (e.g. a file named `3`); None skips that check.
    newest: `Plan.newest`.

  Returns:
    A Plan.

  Raises:
    errors.PublishError: the version exists.
  """
  existing = tuple(sorted(versions))
  if version is None:
    version = default_version
  validate_version(version)
  path = _join(base, str(version))
  if version in existing or (exists is not None and exists(path)):
    raise version_exists_error(base, version, existing)
  signatures = tuple(signatures)
  new = tuple(s for s in signatures if s not in set(exported))
  removed = tuple(s for s in exported if s not in set(signatures))
  refusals = []
  if removed and not allow_removed_signatures and not set(removed) <= set(
      removable):
    refusals.append(removed_signatures_error(base, version, removed))
  return Plan(output_base=base, version=version, path=path,
              existing=existing, newest=newest, signatures=signatures,
              previous_signatures=tuple(exported), new_signatures=new,
              removed_signatures=removed,
              retired_versions=retired_versions(existing, version,
                                                keep_versions),
              refusals=tuple(refusals))


def publish(output_base: str,
            write: Callable[[str], _T],
            *,
            signatures: Sequence[str],
            version: Optional[int] = None,
            message: Optional[str] = None,
            check: Optional[Callable[[str], None]] = None,
            keep_versions: Optional[int] = None,
            allow_removed_signatures: bool = False,
            check_written: Optional[Callable[[_T, Optional[str]], None]] = None,
            lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
            removable: Sequence[str] = ()
            ) -> Publication[_T]:
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
    allow_removed_signatures: publish even if signatures of the previous
      `exported_models` are missing from `signatures`.
    check_written: called under the lock with what `write` returned and the
      directory of the newest published version (None if there is none);
      raise to abort publishing (e.g. identical content).
    lock_timeout_seconds: how long to wait for another merge's lock.
    removable: signatures the caller means to remove; dropping only these
      needs no `allow_removed_signatures`.

  Returns:
    A Publication.

  Raises:
    errors.PublishError: the base is not writable, the version exists, it
      would remove signatures, or the bundle cannot be moved into place.
      Nothing is published.
    Whatever `write`, `check_written` or `check` raise; nothing is published
      then either.
  """
  validate_version(version)
  validate_keep_versions(keep_versions)
  validate_output_base(output_base)
  if object_store.is_s3(output_base):
    # Delimited S3 branch: local staging, conditional-write version claims,
    # server-side copy with saved_model.pb last (s3_publish.py).
    (published, path, new_signatures, deleted, written,
     removed) = s3_publish.publish(
         output_base, write, signatures=tuple(signatures), version=version,
         message=message, check=check, keep_versions=keep_versions,
         allow_removed_signatures=allow_removed_signatures,
         check_written=check_written, removable=tuple(removable))
    return Publication(version=published, path=path,
                       new_signatures=new_signatures,
                       deleted_versions=deleted, written=written,
                       removed_signatures=removed)
  if is_local(output_base):
    publisher = _LocalPublisher(_local_path(output_base),
                                lock_timeout_seconds)
  else:
    publisher = _RemotePublisher(output_base.rstrip("/"),
                                 lock_timeout_seconds)
  return publisher.run(
      write, signatures=tuple(signatures), version=version, message=message,
      check=check, keep_versions=keep_versions,
      allow_removed_signatures=allow_removed_signatures,
      check_written=check_written, removable=tuple(removable))


def _signatures_of(path: str) -> Optional[list[str]]:
  """The model signatures of a published version, None if unknown.

  From the merge manifest, else from saved_model.pb (without the
  `serving_default` alias when it duplicates another signature).
  """
  try:
    manifest = json.loads(bounded_read.read_regular_file(
        _join(path, MANIFEST_FILE), _MAX_HISTORY_BYTES))
    names = manifest.get("signatures")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
      return names
  except (bounded_read.InputFileError, ValueError, AttributeError):
    pass
  try:
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(bounded_read.read_regular_file(
        _join(path, "saved_model.pb")))
    if not saved_model.meta_graphs:
      return None
    defs = saved_model.meta_graphs[0].signature_def
    names = sorted(n for n in defs if not n.startswith("__"))
    default = defs.get("serving_default")
    if default is not None and any(
        defs[n] == default for n in names if n != "serving_default"):
      names.remove("serving_default")
    return names
  except Exception:  # pylint: disable=broad-except
    return None


class _Publisher:
  """Steps shared by local and remote publishing; subclasses do the I/O."""

  def __init__(self, base: str,
               lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS):
    self.base = base
    self.lock_timeout_seconds = lock_timeout_seconds
    self.warnings: list[str] = []

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

  def sync_base(self) -> None:
    """Makes the rename durable (fsync of the base directory)."""

  def remove_tree(self, path: str) -> None:
    raise NotImplementedError

  def retire(self, path: str, version: int) -> None:
    raise NotImplementedError

  def replace_file(self, path: str, text: str) -> None:
    raise NotImplementedError

  def warn(self, text: str) -> None:
    logging.warning("%s", text)
    self.warnings.append(text)

  # --- The recipe. ---
  def run(self, write: Callable[[str], _T], *, signatures: tuple[str, ...],
          version: Optional[int], message: Optional[str],
          check: Optional[Callable[[str], None]],
          keep_versions: Optional[int],
          allow_removed_signatures: bool = False,
          check_written: Optional[Callable[[_T, Optional[str]], None]] = None,
          removable: tuple[str, ...] = ()
          ) -> Publication[_T]:
    """Runs every publishing step under the lock; see publish()."""
    self.prepare_base()
    with self.lock():
      self.remove_leftovers()
      self._repair_history()
      the_plan = plan(self.base, signatures, version,
                      keep_versions=keep_versions,
                      allow_removed_signatures=allow_removed_signatures,
                      removable=removable)
      version, final = the_plan.version, the_plan.path
      if the_plan.below_newest:
        logging.warning(
            "Publishing version %d below the highest existing version %d: "
            "TensorFlow Serving keeps serving version %d.", version,
            the_plan.existing[-1], the_plan.existing[-1])
      if the_plan.refusals:
        raise the_plan.refusals[0]
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
        if check_written is not None:
          check_written(written, the_plan.newest)
        self.flush(staging)
        if check is not None:
          logging.info("Checking staged bundle %s", staging)
          check(staging)
        self.move_into_place(staging, final)
      finally:
        if self.exists(staging):
          self.remove_tree(staging)
      # Published: from here on nothing raises (exit 1 would be a lie).
      logging.info("Published version %d at %s", version, final)
      self._after_publish(the_plan, message, keep_versions)
      deleted = self._deleted
    return Publication(version=version, path=final,
                       new_signatures=the_plan.new_signatures,
                       deleted_versions=deleted, written=written,
                       removed_signatures=the_plan.removed_signatures,
                       warnings=tuple(self.warnings))

  def _after_publish(self, the_plan: Plan, message: Optional[str],
                     keep_versions: Optional[int]) -> None:
    version = the_plan.version
    self._deleted = ()
    try:
      self.sync_base()
    except Exception as e:  # pylint: disable=broad-except
      self.warn(f"version {version} is published, but flushing "
                f"{self.base!r} failed ({_reason(e)}); a power loss now could "
                "lose the rename.")
    try:
      self._update_history(version, the_plan.signatures,
                           the_plan.new_signatures,
                           the_plan.removed_signatures, message)
    except Exception as e:  # pylint: disable=broad-except
      self.warn(f"version {version} is published, but its history was not "
                f"recorded: {_reason(e)}. The next merge into this base adds "
                "the missing current_version line.")
    try:
      self._deleted = self._apply_keep_versions(version, keep_versions)
    except Exception as e:  # pylint: disable=broad-except
      self.warn(f"version {version} is published, but old versions were not "
                f"deleted for --keep_versions: {_reason(e)}.")

  def _update_history(self, version: int, signatures: tuple[str, ...],
                      new_signatures: tuple[str, ...],
                      removed: tuple[str, ...],
                      message: Optional[str]) -> None:
    current, _ = read_history(self.base)
    line = format_history_line(version, new_signatures, message, removed)
    self.replace_file(_join(self.base, CURRENT_VERSION_FILE),
                      "".join(f"{l}\n" for l in [line] + current))
    self.replace_file(_join(self.base, EXPORTED_MODELS_FILE),
                      "".join(f"{s}\n" for s in signatures))

  def _repair_history(self) -> None:
    """Adds the lines of published versions the history lacks.

    A merge killed (or failing to write) right after its rename leaves a
    version without a `current_version` line and a stale `exported_models`.
    """
    try:
      dirs = version_dirs(self.base)
      current, exported = read_history(self.base)
      recorded = {history_line_version(l) for l in current}
      missing = [v for v in dirs if v not in recorded]
      if not missing:
        return
      known = {v: _signatures_of(_join(self.base, names[-1]))
               for v, names in dirs.items()}
      # exported_models holds the signatures of the newest recorded version.
      last_recorded = max((v for v in recorded if v in dirs), default=None)
      if last_recorded is not None and known[last_recorded] is None:
        known[last_recorded] = list(exported)
      lines = list(current)
      for version in missing:
        below = [v for v in dirs if v < version and known[v] is not None]
        sigs = known[version] or []
        previous = known[below[-1]] if below else []
        new = [s for s in sigs if s not in set(previous)]
        removed = [s for s in previous if s not in set(sigs)]
        line = format_history_line(version, new, REPAIRED_MESSAGE, removed)
        at = next((i for i, l in enumerate(lines)
                   if (history_line_version(l) or 0) < version), len(lines))
        lines.insert(at, line)
      self.replace_file(_join(self.base, CURRENT_VERSION_FILE),
                        "".join(f"{l}\n" for l in lines))
      newest = list(dirs)[-1]
      if newest in missing and known[newest] is not None and (
          known[newest] != exported):
        self.replace_file(_join(self.base, EXPORTED_MODELS_FILE),
                          "".join(f"{s}\n" for s in known[newest]))
      self.warn(
          f"repaired the history of {self.base!r}: version(s) "
          f"{', '.join(map(str, missing))} were published without their "
          "current_version line (an earlier merge stopped after publishing); "
          "added them.")
    except Exception as e:  # pylint: disable=broad-except
      self.warn(f"could not check the history of {self.base!r}: "
                f"{_reason(e)}.")

  def _apply_keep_versions(self, version: int,
                           keep_versions: Optional[int]) -> tuple[int, ...]:
    if keep_versions is None:
      return ()
    # Listed again: the new version is there now (so is, on a remote base,
    # whatever other processes published meanwhile).
    dirs = version_dirs(self.base)
    deleted = []
    for v in retired_versions(list(dirs), version, keep_versions):
      for name in dirs[v]:
        logging.info("Deleting version %d (%s, --keep_versions=%d)", v, name,
                     keep_versions)
        try:
          self.retire(_join(self.base, name), v)
        except errors.PublishError as e:
          self.warn(f"version {version} is published, but {e}")
          break
      else:
        deleted.append(v)
    return tuple(deleted)


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
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
      raise errors.PublishError(
          f"cannot create the lock file {path!r}: {_reason(e)}. Pass an "
          "--output_base you can write to.") from e
    try:
      if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise errors.PublishError(
            f"the lock file {path!r} is not a regular file; remove it (the "
            "merge creates it).")
      self._acquire(fd, path)
      previous = _lock_holder(fd)
      if previous and previous[0] != os.getpid() and not _pid_alive(
          previous[0]):
        self._stale_holder = previous
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()}\nstarted {int(time.time())}\n"
                .encode(), 0)
      try:
        yield
      finally:
        os.ftruncate(fd, 0)  # Ended without dying: no holder to report.
    finally:
      os.close(fd)  # Releases the flock.

  def _acquire(self, fd: int, path: str) -> None:
    """Takes the flock, waiting at most lock_timeout_seconds."""
    start = time.monotonic()
    reported = None
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
      except BlockingIOError:
        pass
      waited = time.monotonic() - start
      holder = _describe_holder(_lock_holder(fd))
      if waited >= self.lock_timeout_seconds:
        raise errors.PublishError(
            f"another merge into {self.base!r} holds the lock {path!r} "
            f"({holder}); gave up after {waited:.0f} s. Wait for it to "
            "finish (or stop it), or raise --lock_timeout_seconds.")
      if reported is None or time.monotonic() - reported >= (
          _LOCK_REPORT_SECONDS):
        logging.warning("Waiting for another merge into %s to finish (lock "
                        "%s held by %s)", self.base, path, holder)
        reported = time.monotonic()
      time.sleep(min(_LOCK_POLL_SECONDS,
                     max(self.lock_timeout_seconds - waited, 0.01)))

  def remove_leftovers(self) -> None:
    # Every staging directory is written under the lock we hold, so whatever
    # exists now was left by a run that died.
    stale = getattr(self, "_stale_holder", None)
    if stale:
      self.warn(
          f"the previous merge into {self.base!r} (pid {stale[0]}) died "
          "while holding the lock (killed or crashed); its lock was "
          "released and its leftovers are removed.")
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
    except OSError as e:
      raise errors.PublishError(
          f"cannot rename the staged bundle {staging!r} to {final!r}: "
          f"{_reason(e)}.") from e

  def sync_base(self) -> None:
    _fsync_path(self.base, os.O_RDONLY | os.O_DIRECTORY)

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


def _lock_holder(fd: int) -> Optional[tuple[int, Optional[int]]]:
  """(pid, start time) recorded in the lock file, if any."""
  try:
    text = os.pread(fd, 256, 0).decode("utf-8", "replace")
  except OSError:
    return None
  pid = re.search(r"^pid (\d+)$", text, re.M)
  started = re.search(r"^started (\d+)$", text, re.M)
  if not pid:
    return None
  return int(pid.group(1)), int(started.group(1)) if started else None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _describe_holder(holder: Optional[tuple[int, Optional[int]]]) -> str:
  if holder is None:
    return "an unknown process"
  pid, started = holder
  since = (f", for {time.time() - started:.0f} s" if started else "")
  if _pid_alive(pid):
    return f"pid {pid}, running{since}"
  return (f"recorded holder pid {pid} is not running{since}; the lock is "
          "held by a process it started or that shares its file")


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
  """The non-blank lines of a history file; [] when it does not exist.

  Read as a bounded regular file: a FIFO or device planted as history must
  not hang the merge.
  """
  try:
    data = bounded_read.read_regular_file(path, _MAX_HISTORY_BYTES)
  except bounded_read.InputFileError as e:
    if str(e).endswith("does not exist"):
      return []
    raise errors.PublishError(
        f"cannot read the history file {path!r}: {e}. Move it away (the "
        "merge writes a new one).") from e
  text = data.decode("utf-8", "replace")
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
