"""Where each model's versions are: listing base paths, local copies.

TF Serving's FileSystemStoragePathSource: every poll, a model's `base_path`
is listed; only names TF Serving parses as numbers are versions (staging
folders such as `.tmp-3` are ignored), and the model's version policy
(`version_policy.aspired_versions`) picks the aspired ones. An `s3://` base
path is listed through boto3 instead (a version counts once its
`saved_model.pb` exists), and a version is downloaded into a local cache
before it is loaded and deleted from it once unloaded
(object_store_cache.py); local and `tf.io.gfile` versions are loaded where
they are.
"""

import threading
from typing import Dict, Optional

from absl import logging
import grpc
import tensorflow as tf
from tensorflow_serving.config import model_server_config_pb2

from python.common import object_store
from python.common import versions as versions_lib
from python.serve import object_store_cache
from python.serve import servable as servable_lib
from python.serve import version_policy


class BasePathError(Exception):
  """A model's base path cannot be listed; the message is TF Serving's."""


def list_versions(base_path: str) -> Dict[int, str]:
  """Lists the numeric version directories under a base path.

  Args:
    base_path: A local path or tf.io.gfile URI.

  Returns:
    Version number -> version directory path.

  Raises:
    FileNotFoundError: the base path does not exist.
  """
  if not tf.io.gfile.isdir(base_path):
    raise FileNotFoundError(base_path)
  versions = {}
  for child in sorted(tf.io.gfile.listdir(base_path)):
    child = child.rstrip('/')
    version = versions_lib.parse_version_name(child)  # As TF Serving: 010.
    if version is not None and version not in versions:
      path = base_path.rstrip('/') + '/' + child
      if tf.io.gfile.isdir(path):
        versions[version] = path
  return versions


class StoragePathSource:
  """Lists base paths (local, gfile or s3://) and provides loadable copies.

  Thread-safe: loads of several models may fetch copies at once.
  """

  def __init__(self, model_cache_dir: str = ''):
    """Creates the source.

    Args:
      model_cache_dir: --model_cache_dir, where versions of s3:// base paths
        are downloaded ('' = a temporary directory removed by `close()`).
    """
    self._model_cache_dir = model_cache_dir
    self._cache: Optional[object_store_cache.VersionCache] = None
    self._cache_lock = threading.Lock()

  def list_versions(self, base_path: str) -> Dict[int, str]:
    """Version -> path under `base_path` (see the module docstring).

    Raises:
      FileNotFoundError, tf.errors.OpError, object_store.ObjectStoreError,
      object_store_cache.CacheError: the base path cannot be listed.
    """
    if object_store.is_s3(base_path):
      return self._version_cache().list_versions(base_path)
    return list_versions(base_path)

  def aspired_versions(self, name: str,
                       config: model_server_config_pb2.ModelConfig
                      ) -> Dict[int, str]:
    """The versions of model `name` its version policy wants served.

    Raises:
      BasePathError: the base path cannot be listed (logged too).
    """
    try:
      on_disk = self.list_versions(config.base_path)
    except (FileNotFoundError, tf.errors.OpError,
            object_store.ObjectStoreError,
            object_store_cache.CacheError) as e:
      message = (f'Could not find base path {config.base_path} for servable '
                 f'{name}: {e}')
      logging.error(message)
      raise BasePathError(message) from e
    if not on_disk:
      logging.warning('No versions of servable %s found under base path %s. '
                      'Did you forget to name your leaf directory as a '
                      'number (eg. \'/1/\')?', name, config.base_path)
    return version_policy.aspired_versions(config, on_disk)

  def local_copy(self, path: str) -> str:
    """The directory to load version `path` from (downloaded for s3://).

    Raises:
      servable_lib.LoadError: the download failed.
    """
    if not object_store.is_s3(path):
      return path
    try:
      return self._version_cache().fetch(path)
    except (object_store.ObjectStoreError,
            object_store_cache.CacheError) as e:
      raise servable_lib.LoadError(
          f'Failed to download {path} to the model cache: {e}',
          grpc.StatusCode.UNAVAILABLE) from e
    except OSError as e:
      raise servable_lib.LoadError(
          f'Failed to download {path} to the model cache: {e}. Check the '
          'free space of --model_cache_dir.') from e

  def evict(self, path: str) -> None:
    """Deletes the local copy of version `path`, if one was made."""
    if object_store.is_s3(path) and self._cache is not None:
      self._cache.evict(path)

  def close(self) -> None:
    """Removes the cache of s3:// versions (if it is temporary)."""
    with self._cache_lock:
      if self._cache is not None:
        self._cache.close()
        self._cache = None

  def _version_cache(self) -> object_store_cache.VersionCache:
    with self._cache_lock:
      if self._cache is None:
        self._cache = object_store_cache.VersionCache(self._model_cache_dir)
        logging.info('Caching versions of s3:// base paths in %s',
                     self._cache.directory)
      return self._cache
