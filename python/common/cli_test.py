"""Tests for python/common/cli.py: bad flags exit 2, not absl's 1."""

import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest

from python.common import cli

_PROGRAM = textwrap.dedent("""
    from absl import app
    from absl import flags
    from python.common import cli

    _COUNT = flags.DEFINE_integer("count", 1, "A positive count.", lower_bound=1)

    def main(argv):
      if len(argv) > 1:
        raise cli.usage_error(f"unexpected arguments: {argv[1:]}")
      print(f"count={_COUNT.value}")

    app.run(main, flags_parser=cli.parse_flags)
""")


class CliTest(absltest.TestCase):

  def _run(self, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROGRAM, *args],
                          capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": ":".join(sys.path)})

  def test_good_flags_run_main(self):
    result = self._run("--count=3")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip(), "count=3")

  def test_unknown_flag_exits_2_and_names_it(self):
    result = self._run("--bogus=1")
    self.assertEqual(result.returncode, cli.USAGE_EXIT_CODE)
    self.assertIn("bogus", result.stderr)

  def test_failed_validator_exits_2(self):
    result = self._run("--count=0")
    self.assertEqual(result.returncode, cli.USAGE_EXIT_CODE)
    self.assertIn("count", result.stderr)

  def test_usage_error_exits_2(self):
    result = self._run("extra")
    self.assertEqual(result.returncode, cli.USAGE_EXIT_CODE)
    self.assertIn("unexpected arguments", result.stderr)


class UserPathTest(absltest.TestCase):

  def test_relative_path_is_resolved_against_bazel_working_directory(self):
    with mock.patch.dict(os.environ, {"BUILD_WORKING_DIRECTORY": "/home/me"}):
      self.assertEqual(cli.user_path("specs/merge.toml"),
                       "/home/me/specs/merge.toml")

  def test_absolute_paths_and_uris_are_kept(self):
    with mock.patch.dict(os.environ, {"BUILD_WORKING_DIRECTORY": "/home/me"}):
      self.assertEqual(cli.user_path("/models/merged"), "/models/merged")
      self.assertEqual(cli.user_path("gs://bucket/m"), "gs://bucket/m")
      self.assertEqual(cli.user_path(""), "")

  def test_relative_path_is_kept_outside_bazel_run(self):
    with mock.patch.dict(os.environ, {}, clear=True):
      self.assertEqual(cli.user_path("merge.toml"), "merge.toml")


if __name__ == "__main__":
  absltest.main()
