"""Tests for storage_path_source: a model's aspired versions from its base path.

Listing rules are in model_manager_test (ListVersionsTest, through the name
model_manager keeps); s3:// listing and downloads in object_store_cache_test.
"""

import os

from absl.testing import absltest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from python.serve import storage_path_source


def _config(text: str) -> model_server_config_pb2.ModelConfig:
  return text_format.Parse(text, model_server_config_pb2.ModelConfig())


class StoragePathSourceTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.source = storage_path_source.StoragePathSource()
    self.addCleanup(self.source.close)
    self.base = self.create_tempdir()
    for name in ('1', '3', '7', '.staging-8-x'):
      self.base.mkdir(name)

  def test_the_version_policy_picks_the_aspired_versions(self):
    base = self.base.full_path
    self.assertEqual(
        self.source.aspired_versions(
            'm', _config(f'name: "m" base_path: "{base}"')),
        {7: os.path.join(base, '7')})
    self.assertEqual(
        sorted(self.source.aspired_versions('m', _config(
            f'name: "m" base_path: "{base}" model_version_policy '
            '{ all {} }'))), [1, 3, 7])

  def test_a_missing_base_path_is_tf_servings_error(self):
    missing = os.path.join(self.base.full_path, 'nope')
    with self.assertRaisesRegex(
        storage_path_source.BasePathError,
        rf'^Could not find base path {missing} for servable m: '):
      self.source.aspired_versions(
          'm', _config(f'name: "m" base_path: "{missing}"'))

  def test_no_versions_is_no_error(self):
    empty = self.create_tempdir().full_path
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(self.source.aspired_versions(
          'm', _config(f'name: "m" base_path: "{empty}"')), {})
    self.assertIn('No versions of servable m found under base path',
                  logs.output[0])

  def test_local_versions_load_where_they_are(self):
    path = os.path.join(self.base.full_path, '3')
    self.assertEqual(self.source.local_copy(path), path)
    self.source.evict(path)  # Nothing to delete: the version stays.
    self.assertTrue(os.path.isdir(path))


if __name__ == '__main__':
  absltest.main()
