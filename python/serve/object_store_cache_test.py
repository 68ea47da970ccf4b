"""Tests of s3:// version discovery and the download cache, against moto's
S3 server on loopback."""

import os

from absl.testing import absltest

from python.common import moto_server
from python.common import object_store
from python.serve import object_store_cache

_BUCKET = 'replicas'


class VersionCacheTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.moto = moto_server.MotoServer().start()
    cls.moto.install_env()
    cls.moto.create_bucket(_BUCKET)
    client = cls.moto.client()
    for key in ('m/1/saved_model.pb', 'm/1/variables/variables.index',
                'm/2/variables/variables.index',  # Still being copied.
                'm/.staging-3-1-2-ab/saved_model.pb', 'm/10/saved_model.pb',
                'm/current_version', 'other/5/saved_model.pb'):
      client.put_object(Bucket=_BUCKET, Key=key, Body=key.encode())

  @classmethod
  def tearDownClass(cls):
    cls.moto.stop()
    super().tearDownClass()

  def cache(self, directory=''):
    cache = object_store_cache.VersionCache(directory)
    self.addCleanup(cache.close)
    return cache

  def test_versions_are_numeric_prefixes_with_saved_model_pb(self):
    self.assertEqual(self.cache().list_versions(f's3://{_BUCKET}/m/'), {
        1: f's3://{_BUCKET}/m/1', 10: f's3://{_BUCKET}/m/10'})

  def test_empty_prefix_is_not_found(self):
    with self.assertRaisesRegex(FileNotFoundError, 'no objects under'):
      self.cache().list_versions(f's3://{_BUCKET}/missing')

  def test_fetch_and_evict(self):
    directory = self.create_tempdir().full_path
    cache = self.cache(directory)
    path = cache.fetch(f's3://{_BUCKET}/m/1')
    self.assertEqual(path, os.path.join(directory, _BUCKET, 'm', '1'))
    with open(os.path.join(path, 'variables', 'variables.index')) as f:
      self.assertEqual(f.read(), 'm/1/variables/variables.index')
    self.assertEqual(cache.fetch(f's3://{_BUCKET}/m/1'), path)  # Cached.
    self.assertEqual(os.listdir(os.path.dirname(path)), ['1'])  # No partial.
    cache.evict(f's3://{_BUCKET}/m/1')
    self.assertFalse(os.path.exists(path))

  def test_fetch_of_incomplete_version_fails_and_leaves_nothing(self):
    directory = self.create_tempdir().full_path
    cache = self.cache(directory)
    with self.assertRaisesRegex(object_store.ObjectStoreError,
                                'm/2/saved_model.pb disappeared'):
      cache.fetch(f's3://{_BUCKET}/m/2')
    self.assertEqual(os.listdir(os.path.join(directory, _BUCKET, 'm')), [])

  def test_one_server_per_directory_and_leftovers_removed(self):
    directory = self.create_tempdir().full_path
    os.makedirs(os.path.join(directory, _BUCKET, 'm', '.partial-1-ab'))
    cache = self.cache(directory)
    self.assertEqual(os.listdir(directory), ['.lock'])
    with self.assertRaisesRegex(object_store_cache.CacheError,
                                'used by another running server'):
      object_store_cache.VersionCache(directory)
    cache.close()
    self.cache(directory)  # Free again.

  def test_temporary_directory_is_removed_at_close(self):
    cache = object_store_cache.VersionCache()
    self.assertTrue(os.path.isdir(cache.directory))
    cache.close()
    self.assertFalse(os.path.exists(cache.directory))


if __name__ == '__main__':
  absltest.main()
