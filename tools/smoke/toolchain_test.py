"""Checks that Python targets run on the locked virtual environment.

  bazel test //tools/smoke:toolchain_test
"""

import importlib.metadata
import os
import re
import sys

from absl.testing import absltest


def _locked_versions(lock_path: str) -> dict[str, str]:
  versions = {}
  with open(lock_path, encoding="utf-8") as f:
    for line in f:
      match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", line)
      if match:
        versions[match.group(1).lower().replace("_", "-")] = match.group(2)
  return versions


class ToolchainTest(absltest.TestCase):

  def test_interpreter_is_a_virtual_environment_not_the_system_python(self):
    self.assertNotEqual(sys.prefix, sys.base_prefix)
    self.assertIn("python_venv", sys.prefix)

  def test_installed_packages_match_the_lock(self):
    lock = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"],
                        "requirements_lock.txt")
    locked = _locked_versions(lock)
    self.assertIn("tensorflow", locked)
    for name in ("tensorflow", "tensorflow-serving-api", "grpcio", "absl-py",
                 "numpy"):
      with self.subTest(package=name):
        self.assertEqual(importlib.metadata.version(name), locked[name])

  def test_tensorflow_serving_apis_import(self):
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
    self.assertTrue(hasattr(prediction_service_pb2_grpc,
                            "PredictionServiceStub"))


if __name__ == "__main__":
  absltest.main()
