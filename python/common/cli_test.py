"""Tests for python/common/cli.py: bad usage exits 2 with one line, --help 0."""

import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest

from python.common import cli

_PROGRAM = textwrap.dedent("""
    \"\"\"A test program.

    Its docstring is long enough that printing it would show: DOCSTRING.
    \"\"\"
    from absl import app
    from absl import flags
    from python.common import cli

    _COUNT = flags.DEFINE_integer("count", 1, "A positive count.", lower_bound=1)
    _MODE = flags.DEFINE_string("mode", "a", "a or b.")

    def main(argv):
      if len(argv) > 1:
        raise cli.usage_error(f"unexpected arguments: {argv[1:]}")
      if _MODE.value == "plain":  # A UsageError without exitcode (1).
        raise app.UsageError("--mode=plain is not a mode;\\n use a or b")
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

  def assert_one_line_usage_error(self, result, message: str) -> None:
    self.assertEqual(result.returncode, cli.USAGE_EXIT_CODE, result.stderr)
    lines = result.stderr.splitlines()
    self.assertLen(lines, 2, result.stderr)
    self.assertStartsWith(lines[0], "error: ")
    self.assertIn(message, lines[0])
    self.assertEqual(lines[1], cli.HELP_POINTER)
    self.assertNotIn("DOCSTRING", result.stderr)  # No help text.
    self.assertNotIn("--count", result.stderr.replace(lines[0], ""))
    self.assertEqual(result.stdout, "")

  def test_unknown_flag_exits_2_in_one_line(self):
    self.assert_one_line_usage_error(self._run("--bogus=1"), "bogus")

  def test_failed_validator_exits_2_in_one_line(self):
    self.assert_one_line_usage_error(self._run("--count=0"), "count")

  def test_usage_error_from_main_exits_2_in_one_line(self):
    self.assert_one_line_usage_error(self._run("extra"),
                                     "unexpected arguments: ['extra']")

  def test_plain_usage_error_exits_2_and_is_joined_into_one_line(self):
    self.assert_one_line_usage_error(
        self._run("--mode=plain"), "--mode=plain is not a mode; use a or b")

  def test_help_flags_print_help_and_exit_0(self):
    for flag in ("--help", "-?", "--helpshort", "--helpfull"):
      result = self._run(flag)
      self.assertEqual(result.returncode, 0, f"{flag}: {result.stderr}")
      self.assertIn("DOCSTRING", result.stdout, flag)
      self.assertIn("--count", result.stdout, flag)
      self.assertNotIn("count=", result.stdout, flag)  # main did not run.

  def test_helpxml_exits_0(self):
    result = self._run("--helpxml")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("<name>count</name>", result.stdout)

  def test_usage_error_text_is_one_line_and_a_pointer(self):
    self.assertEqual(cli.usage_error_text("bad\n  thing"),
                     f"error: bad thing\n{cli.HELP_POINTER}\n")


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
