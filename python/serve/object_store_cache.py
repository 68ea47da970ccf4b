"""`s3://` model base paths: version discovery and a local download cache.

TensorFlow 2.21 cannot read `s3://` paths, so the model manager asks this
module instead of `tf.io.gfile` for base paths that are S3 URIs:

* `list_versions(base_uri)` lists the prefix in one paginated request and
  returns the numeric child prefixes that hold `saved_model.pb`. python/merge
  copies `saved_model.pb` last, so such a version is complete; a prefix
  still being copied (or left by a killed merge) is not a version yet.
* `fetch(version_uri)` downloads the version into
  `<cache_dir>/<bucket>/<prefix>/<N>` (into a hidden `.partial-` directory
  first, renamed when complete) and returns that local path, which TensorFlow
  loads as usual.
* `evict(version_uri)` deletes the local copy once the version is unloaded
  (or failed to load).

The cache directory is `--model_cache_dir`, or a fresh temporary directory
removed at shutdown. One server owns it (a lock file refuses a second one);
what a previous owner left there is removed at start.
"""

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import threading
from typing import Dict, Optional

from absl import logging

from python.common import object_store

_VERSION_RE = re.compile(r'^([0-9]+)/saved_model\.pb(?:txt)?$')
_LOCK_FILE = '.lock'


class CacheError(RuntimeError):
  """The cache directory cannot be used."""


class VersionCache:
  """Local copies of the S3 versions a server loads."""

  def __init__(self, cache_dir: str = '',
               store: Optional[object_store.S3Store] = None):
    self._owned = not cache_dir
    self._dir = os.path.abspath(cache_dir) if cache_dir else tempfile.mkdtemp(
        prefix='tfsm-model-cache-')
    self._store = store or object_store.S3Store()
    self._lock = threading.Lock()
    self._lock_fd = None
    self._claim_dir()

  @property
  def directory(self) -> str:
    return self._dir

  def _claim_dir(self) -> None:
    try:
      os.makedirs(self._dir, exist_ok=True)
      fd = os.open(os.path.join(self._dir, _LOCK_FILE),
                   os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise CacheError(
          f'cannot use --model_cache_dir={self._dir}: {e.strerror}. Pass a '
          'directory this server can write.') from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      os.close(fd)
      raise CacheError(
          f'--model_cache_dir={self._dir} is used by another running server; '
          'give each server its own cache directory.') from e
    self._lock_fd = fd
    for name in os.listdir(self._dir):
      if name != _LOCK_FILE:
        _remove(os.path.join(self._dir, name))

  def close(self) -> None:
    """Releases the directory (and deletes it when it was a temporary one)."""
    if self._owned:
      shutil.rmtree(self._dir, ignore_errors=True)
    if self._lock_fd is not None:
      os.close(self._lock_fd)
      self._lock_fd = None

  def list_versions(self, base_uri: str) -> Dict[int, str]:
    """Complete versions under `base_uri`: number -> `s3://.../<N>`.

    Raises:
      FileNotFoundError: nothing is stored under the base path.
      object_store.ObjectStoreError: the listing failed.
    """
    bucket, prefix = object_store.split(base_uri)
    base = prefix + '/' if prefix else ''
    versions = {}
    anything = False
    for info in self._store.list_objects(bucket, base):
      anything = True
      match = _VERSION_RE.match(info.key[len(base):])
      if match:
        versions[int(match.group(1))] = object_store.uri(
            bucket, object_store.join(prefix, match.group(1)))
    if not anything:
      raise FileNotFoundError(
          f'{base_uri} (no objects under s3://{bucket}/{base})')
    return versions

  def local_path(self, version_uri: str) -> str:
    bucket, key = object_store.split(version_uri)
    return os.path.join(self._dir, bucket, *key.split('/'))

  def fetch(self, version_uri: str) -> str:
    """Downloads a version (unless cached) and returns its local directory.

    Raises:
      object_store.ObjectStoreError: a download failed (names the object).
    """
    target = self.local_path(version_uri)
    if os.path.isdir(target):
      return target
    bucket, key = object_store.split(version_uri)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f'.partial-{name}-{secrets.token_hex(4)}')
    try:
      size = self._store.download_tree(bucket, key, partial)
      if not any(os.path.isfile(os.path.join(partial, f))
                 for f in ('saved_model.pb', 'saved_model.pbtxt')):
        raise object_store.ObjectStoreError(
            f'{version_uri}/saved_model.pb disappeared during the download '
            '(the version was deleted)')
      with self._lock:
        if os.path.isdir(target):
          _remove(partial)
        else:
          os.rename(partial, target)
    except BaseException:
      _remove(partial)
      raise
    logging.info('Downloaded %s (%d bytes) to %s', version_uri, size, target)
    return target

  def evict(self, version_uri: str) -> None:
    """Deletes the local copy of a version, if any."""
    target = self.local_path(version_uri)
    if os.path.exists(target):
      logging.info('Evicting cached %s (%s)', version_uri, target)
      _remove(target)


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
