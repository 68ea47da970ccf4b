"""Publishing a version into `s3://bucket/prefix` (publish.py's S3 branch).

S3 has no directory rename, so a version cannot appear atomically; the order
below makes it appear complete to every poller that, like TF Serving and
python/serve, only loads a version once its `saved_model.pb` exists:

1. write the bundle into a local temporary directory and run the check there
   (nothing is uploaded for a bundle that fails it);
2. claim the version number with an S3 conditional write: create
   `<prefix>/.versions/<N>` with `If-None-Match: *`. Exactly one merge can
   create it, so concurrent merges never take the same number; a merge that
   loses tries N+1 (or, with an explicit version, fails). While it publishes,
   the merge rewrites its marker every few seconds (a heartbeat);
3. upload every file under the non-numeric staging prefix
   `<prefix>/.staging-<N>-<pid>-<time>-<random>/` (multipart with retries for
   large shards);
4. copy the staged objects server-side to `<prefix>/<N>/`, every object
   before `saved_model.pb`, which goes last, so the window between a
   version's first and last object is a few server-side copies;
5. delete the staging objects; mark the claim `published`;
6. update `current_version` and `exported_models` with `If-Match` on the
   ETag read (optimistic concurrency: a concurrent merge's update is re-read
   and kept, never lost);
7. with keep_versions, delete the oldest complete versions (their
   `saved_model.pb` first), never the new one.

On an error the message names the object that failed, and the partial copy
under `<N>/` is deleted before the error is raised. A merge killed in step 3
leaves only staging objects; one killed in step 4 can leave a numeric prefix
without `saved_model.pb`, which pollers ignore. Either is removed by the next
merge into the base once the dead merge's heartbeat is older than
`TFSM_S3_STALE_SECONDS` (default 300); the number stays claimed, so it is
never reused.
"""

import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from absl import logging

from python.common import object_store
from python.merge import errors

CURRENT_VERSION_FILE = "current_version"
EXPORTED_MODELS_FILE = "exported_models"
VERSIONS_DIR = ".versions"
_STAGING_PREFIX = ".staging-"
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_VERSION_RE = re.compile(r"^[0-9]+$")
_STAGING_RE = re.compile(r"^\.staging-([0-9]+)-")
_DEFAULT_STALE_SECONDS = 300
_MAX_CLAIM_ATTEMPTS = 1000
_MAX_HISTORY_ATTEMPTS = 50
_COPY_THREADS = 8


def stale_seconds() -> float:
  """Age after which a publishing merge's silent claim counts as dead."""
  value = os.environ.get("TFSM_S3_STALE_SECONDS", "").strip()
  try:
    return max(1.0, float(value)) if value else _DEFAULT_STALE_SECONDS
  except ValueError:
    return _DEFAULT_STALE_SECONDS


class _Base:
  """One `s3://bucket/prefix` base and its layout."""

  def __init__(self, base_uri: str, store: Optional[object_store.S3Store]):
    self.uri = base_uri.rstrip("/")
    try:
      self.bucket, self.prefix = object_store.split(self.uri)
    except object_store.ObjectStoreError as e:
      raise errors.PublishError(f"--output_base={base_uri!r}: {e}") from e
    self.store = store or object_store.S3Store()

  def key(self, *parts: str) -> str:
    return object_store.join(self.prefix, *parts)

  def rel(self, key: str) -> str:
    return key[len(self.prefix) + 1:] if self.prefix else key

  def version_uri(self, version: int) -> str:
    return object_store.uri(self.bucket, self.key(str(version)))

  def scan(self) -> "_Scan":
    """Lists every object of the base once."""
    base = self.prefix + "/" if self.prefix else ""
    scan = _Scan()
    for info in self.store.list_objects(self.bucket, base):
      rel = self.rel(info.key)
      top, _, rest = rel.partition("/")
      if _VERSION_RE.match(top) and rest:
        v = int(top)
        scan.numeric.setdefault(v, []).append(info)
        if rest in _SAVED_MODEL_FILES:
          scan.complete.add(v)
      elif top == VERSIONS_DIR and _VERSION_RE.match(rest):
        scan.markers[int(rest)] = info
      else:
        match = _STAGING_RE.match(top)
        if match and rest:
          scan.staging.setdefault(top, []).append(info)
    return scan


class _Scan:
  """What one listing of the base found."""

  def __init__(self):
    self.numeric: Dict[int, List[object_store.ObjectInfo]] = {}
    self.complete: Set[int] = set()
    self.markers: Dict[int, object_store.ObjectInfo] = {}
    self.staging: Dict[str, List[object_store.ObjectInfo]] = {}

  def highest_taken(self) -> int:
    taken = set(self.numeric) | set(self.markers)
    return max(taken) if taken else 0


def _guard(call):
  """Runs `call`, turning ObjectStoreError into PublishError."""
  try:
    return call()
  except object_store.ObjectStoreError as e:
    raise errors.PublishError(str(e)) from e


def list_versions(base_uri: str,
                  store: Optional[object_store.S3Store] = None) -> List[int]:
  """The complete versions (numeric prefixes holding saved_model.pb)."""
  base = _Base(base_uri, store)
  return sorted(_guard(base.scan).complete)


def next_version(base_uri: str,
                 store: Optional[object_store.S3Store] = None) -> int:
  """The number a merge would claim: highest version or claim + 1."""
  base = _Base(base_uri, store)
  return _guard(base.scan).highest_taken() + 1


def read_history(base_uri: str,
                 store: Optional[object_store.S3Store] = None
                ) -> Tuple[List[str], List[str]]:
  """(current_version lines, exported_models signatures) of the base."""
  base = _Base(base_uri, store)
  current = _guard(lambda: base.store.read(base.bucket,
                                           base.key(CURRENT_VERSION_FILE)))
  exported = _guard(lambda: base.store.read(base.bucket,
                                            base.key(EXPORTED_MODELS_FILE)))
  return _lines(current), _lines(exported)


def _lines(found: Optional[Tuple[bytes, str]]) -> List[str]:
  if found is None:
    return []
  return [l for l in found[0].decode("utf-8").splitlines() if l.strip()]


class _Claim:
  """A claimed version number: the marker object and its heartbeat."""

  def __init__(self, base: _Base, version: int):
    self.base = base
    self.version = version
    self.key = base.key(VERSIONS_DIR, str(version))
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._started = time.time()

  def body(self, state: str) -> bytes:
    return json.dumps({
        "version": self.version, "state": state, "host": socket.gethostname(),
        "pid": os.getpid(), "started": int(self._started),
        "updated": int(time.time())}).encode()

  def try_create(self) -> bool:
    try:
      self.base.store.put(self.base.bucket, self.key, self.body("publishing"),
                          if_none_match=True)
      return True
    except object_store.PreconditionFailedError:
      return False

  def start_heartbeat(self) -> None:
    interval = max(0.2, stale_seconds() / 5)

    def beat():
      while not self._stop.wait(interval):
        try:
          self.base.store.put(self.base.bucket, self.key,
                              self.body("publishing"))
        except object_store.ObjectStoreError as e:
          logging.warning("Heartbeat of the claim %s failed: %s", self.key, e)

    self._thread = threading.Thread(target=beat, name="claim-heartbeat",
                                    daemon=True)
    self._thread.start()

  def finish(self, state: str) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      self.base.store.put(self.base.bucket, self.key, self.body(state))
    except object_store.ObjectStoreError as e:
      logging.warning("Could not mark the claim %s %s: %s", self.key, state, e)


def publish(output_base: str,
            write: Callable[[str], object],
            *,
            signatures: Sequence[str],
            version: Optional[int],
            message: Optional[str],
            check: Optional[Callable[[str], None]],
            keep_versions: Optional[int],
            allow_removed_signatures: bool = False,
            check_written: Optional[Callable[[object, Optional[str]],
                                             None]] = None,
            store: Optional[object_store.S3Store] = None,
            removable: Sequence[str] = ()):
  """Publishes a bundle written by `write` as `<output_base>/<version>`.

  Same contract as publish.publish() (which calls this for s3:// bases).
  `check_written` is called with the written result and None: the newest
  version's manifest is in the bucket, not on disk, so the same-content
  refusal does not apply on S3. The refusals are publish.plan()'s, taken
  after the check; the version is the one the claim gets.

  Returns:
    (version, path, new_signatures, deleted_versions, written,
    removed_signatures).
  """
  from python.merge import publish as publish_lib  # pylint: disable=g-import-not-at-top
  base = _Base(output_base, store)
  _guard(lambda: _check_bucket(base))
  _guard(lambda: _remove_leftovers(base))
  tmp = tempfile.mkdtemp(prefix="tfsm-s3-publish-")
  try:
    local = os.path.join(tmp, "bundle")
    logging.info("Writing the bundle into %s before uploading it", local)
    written = write(local)
    if not os.path.isdir(local):
      raise errors.PublishError(
          f"the bundle writer did not create the staging directory "
          f"{local!r}; nothing to publish.")
    if check_written is not None:
      check_written(written, None)
    if check is not None:
      logging.info("Checking staged bundle %s", local)
      check(local)
    scan = _guard(base.scan)
    _, exported = read_history(output_base, base.store)
    the_plan = publish_lib.plan_from_listing(
        base.uri, signatures, version, versions=sorted(scan.complete),
        exported=exported, default_version=scan.highest_taken() + 1,
        exists=None, newest=None,
        allow_removed_signatures=allow_removed_signatures,
        removable=removable)
    if the_plan.refusals:
      raise the_plan.refusals[0]
    removed = the_plan.removed_signatures
    claim = _claim(base, version, publish_lib)
    try:
      _upload_and_copy(base, local, claim.version)
    except BaseException:
      claim.finish("failed")
      raise
    claim.finish("published")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  final = base.version_uri(claim.version)
  logging.info("Published version %d at %s", claim.version, final)
  new_signatures = _guard(lambda: _update_history(
      base, claim.version, tuple(signatures), message, publish_lib))
  deleted = _guard(lambda: _apply_keep_versions(base, claim.version,
                                                keep_versions))
  return claim.version, final, new_signatures, deleted, written, removed


def _check_bucket(base: _Base) -> None:
  try:
    base.store.client.head_bucket(Bucket=base.bucket)
  except object_store.ObjectStoreError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if object_store.error_code(e) in ("404", "NoSuchBucket"):
      raise object_store.ObjectStoreError(
          f"cannot publish to {base.uri}: NoSuchBucket: the bucket "
          f"{base.bucket!r} does not exist. Create the bucket or fix the "
          "URI.") from e
    raise base.store._error(  # pylint: disable=protected-access
        "use the bucket of", base.bucket, base.prefix, e) from e


def _claim(base: _Base, version: Optional[int], publish_lib) -> _Claim:
  """Claims `version` (or the next free number) with If-None-Match."""
  scan = _guard(base.scan)
  if version is not None:
    if version in scan.numeric or version in scan.markers:
      if version in scan.complete or version not in scan.markers:
        raise publish_lib.version_exists_error(base.uri, version,
                                               sorted(scan.complete))
      raise _claimed_error(base, version)
    claim = _Claim(base, version)
    if not _guard(claim.try_create):
      raise _claimed_error(base, version)
    if scan.complete and version < max(scan.complete):
      logging.warning(
          "Publishing version %d below the highest existing version %d: "
          "TensorFlow Serving keeps serving version %d.", version,
          max(scan.complete), max(scan.complete))
  else:
    candidate = scan.highest_taken() + 1
    for _ in range(_MAX_CLAIM_ATTEMPTS):
      claim = _Claim(base, candidate)
      if _guard(claim.try_create):
        break
      logging.info("Version %d was claimed by another merge; trying %d",
                   candidate, candidate + 1)
      candidate += 1
    else:
      raise errors.PublishError(
          f"could not claim a version number in {base.uri} after "
          f"{_MAX_CLAIM_ATTEMPTS} attempts (other merges kept taking them).")
  logging.info("Claimed version %d (%s)", claim.version,
               object_store.uri(base.bucket, claim.key))
  claim.start_heartbeat()
  return claim


def _claimed_error(base: _Base, version: int) -> errors.PublishError:
  marker = object_store.uri(base.bucket, base.key(VERSIONS_DIR, str(version)))
  return errors.PublishError(
      f"version {version} of --output_base={base.uri!r} is claimed by another "
      f"merge ({marker} exists) and is published or being published; "
      "version numbers are never reused. Omit --version to publish the next "
      "free number, or pick an unused one.")


def _upload_and_copy(base: _Base, local: str, version: int) -> None:
  staging_name = (f"{_STAGING_PREFIX}{version}-{os.getpid()}-"
                  f"{int(time.time())}-{secrets.token_hex(4)}")
  staging = base.key(staging_name)
  final = base.key(str(version))
  files = []
  for root, _, names in os.walk(local):
    for name in names:
      path = os.path.join(root, name)
      files.append(os.path.relpath(path, local).replace(os.sep, "/"))
  files.sort(key=lambda rel: (rel in _SAVED_MODEL_FILES, rel))
  copied: List[str] = []
  try:
    logging.info("Uploading %d files to %s", len(files),
                 object_store.uri(base.bucket, staging))
    _guard(lambda: _parallel(
        lambda rel: base.store.upload_file(
            os.path.join(local, *rel.split("/")), base.bucket,
            f"{staging}/{rel}"), files))
    last = [rel for rel in files if rel in _SAVED_MODEL_FILES]
    first = [rel for rel in files if rel not in _SAVED_MODEL_FILES]

    def copy(rel):
      base.store.copy(base.bucket, f"{staging}/{rel}", f"{final}/{rel}")
      copied.append(rel)

    logging.info("Copying the staged objects to %s (saved_model.pb last)",
                 object_store.uri(base.bucket, final))
    _guard(lambda: _parallel(copy, first))
    for rel in last:
      _guard(lambda rel=rel: copy(rel))
  except BaseException as e:
    if copied or isinstance(e, errors.PublishError):
      with contextlib.suppress(object_store.ObjectStoreError):
        # saved_model.pb first, so pollers drop the version at once.
        base.store.delete_prefix(base.bucket, final, first=_SAVED_MODEL_FILES)
    raise
  finally:
    with contextlib.suppress(object_store.ObjectStoreError):
      base.store.delete_prefix(base.bucket, staging)


def _parallel(call, items) -> None:
  """Runs `call(item)` for every item on a small pool; first error wins."""
  items = list(items)
  if not items:
    return
  with concurrent.futures.ThreadPoolExecutor(
      min(_COPY_THREADS, len(items))) as pool:
    futures = [pool.submit(call, item) for item in items]
    error = None
    for future in futures:
      exc = future.exception()
      if exc is not None and error is None:
        error = exc
        for other in futures:
          other.cancel()
    if error is not None:
      raise error


def _remove_leftovers(base: _Base) -> None:
  """Removes what merges killed mid-publish left (see the module doc)."""
  scan = base.scan()
  # version -> (prefixes to remove, their objects)
  candidates: Dict[int, Tuple[List[str], List[object_store.ObjectInfo]]] = {}
  for version, objects in scan.numeric.items():
    if version not in scan.complete:
      entry = candidates.setdefault(version, ([], []))
      entry[0].append(base.key(str(version)))
      entry[1].extend(objects)
  for name, objects in scan.staging.items():
    version = int(_STAGING_RE.match(name).group(1))
    entry = candidates.setdefault(version, ([], []))
    entry[0].append(base.key(name))
    entry[1].extend(objects)
  if not candidates:
    return
  now = base.store.server_time(base.bucket)
  stale = datetime.timedelta(seconds=stale_seconds())
  for version, (prefixes, objects) in sorted(candidates.items()):
    marker = scan.markers.get(version)
    if marker is not None:
      found = base.store.read(base.bucket, marker.key)
      state = "publishing"
      if found is not None:
        with contextlib.suppress(ValueError, AttributeError):
          state = json.loads(found[0]).get("state", "publishing")
      alive = state == "publishing" and now - marker.last_modified < stale
    else:
      newest = max(info.last_modified for info in objects)
      alive = now - newest < stale
    if alive:
      continue
    for prefix in prefixes:
      logging.info("Removing %s left by an interrupted merge",
                   object_store.uri(base.bucket, prefix))
      base.store.delete_prefix(base.bucket, prefix, first=_SAVED_MODEL_FILES)
  base.store.abort_multipart_uploads(
      base.bucket, base.key(_STAGING_PREFIX), now - stale)


def _history_version(line: str) -> int:
  head = line.split("\t", 1)[0]
  return int(head) if head.isdigit() else -1


def _update_history(base: _Base, version: int, signatures: Tuple[str, ...],
                    message: Optional[str], publish_lib) -> Tuple[str, ...]:
  """Adds this version to current_version/exported_models (If-Match)."""
  cv_key = base.key(CURRENT_VERSION_FILE)
  em_key = base.key(EXPORTED_MODELS_FILE)
  for _ in range(_MAX_HISTORY_ATTEMPTS):
    current = base.store.read(base.bucket, cv_key)
    exported = base.store.read(base.bucket, em_key)
    lines = _lines(current)
    previous = set(_lines(exported))
    new_signatures = tuple(s for s in signatures if s not in previous)
    removed = tuple(s for s in _lines(exported) if s not in set(signatures))
    line = publish_lib.format_history_line(version, new_signatures, message,
                                           removed)
    if not any(_history_version(l) == version for l in lines):
      at = next((i for i, l in enumerate(lines)
                 if _history_version(l) < version), len(lines))
      lines.insert(at, line)
    newest = max((_history_version(l) for l in lines), default=version)
    try:
      base.store.put(base.bucket, cv_key,
                     "".join(f"{l}\n" for l in lines).encode("utf-8"),
                     if_match=current[1] if current else None,
                     if_none_match=current is None)
      if version >= newest:
        base.store.put(base.bucket, em_key,
                       "".join(f"{s}\n" for s in signatures).encode("utf-8"),
                       if_match=exported[1] if exported else None,
                       if_none_match=exported is None)
      return new_signatures
    except object_store.PreconditionFailedError:
      logging.info("History of %s changed concurrently; re-reading it",
                   base.uri)
      time.sleep(0.05 + secrets.randbelow(100) / 1000)
  raise errors.PublishError(
      f"could not update {object_store.uri(base.bucket, cv_key)}: other "
      f"merges kept changing it ({_MAX_HISTORY_ATTEMPTS} attempts). Version "
      f"{version} is published; rerun to retry the history.")


def _apply_keep_versions(base: _Base, version: int,
                         keep_versions: Optional[int]) -> Tuple[int, ...]:
  if keep_versions is None:
    return ()
  versions = sorted(base.scan().complete | {version})
  keep = set(versions[-keep_versions:]) | {version}
  deleted = tuple(v for v in versions if v not in keep)
  for v in deleted:
    logging.info("Deleting version %d (--keep_versions=%d)", v, keep_versions)
    base.store.delete_prefix(base.bucket, base.key(str(v)),
                             first=_SAVED_MODEL_FILES)
  return deleted

