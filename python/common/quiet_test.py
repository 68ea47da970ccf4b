"""Tests for python/common/quiet.py: no TensorFlow chatter unless asked for."""

import os
import re
import subprocess
import sys
import textwrap

from absl.testing import absltest

# A program as the binaries are: quiet first, then TensorFlow, an absl app; it
# makes an eager tensor (which probes the devices), logs through TensorFlow's
# Python logger and reports whether the C++ level reached its environment.
_PROGRAM = textwrap.dedent("""
    import os
    import sys
    from python.common import quiet
    from absl import app
    import tensorflow as tf

    def main(argv):
      del argv
      tf.constant(1.0) + 1.0
      tf.get_logger().info("PYTHON-INFO")
      tf.get_logger().warning("PYTHON-WARNING")
      print("level in environment:", os.environ.get("TF_CPP_MIN_LOG_LEVEL"))

    app.run(main)
""")

# TensorFlow's C++ log lines: severity letter, MMDD (0000 before
# absl::InitializeLog), ..., the C++ file and line.
_CPP_LOG_LINE = re.compile(r"(?m)^[IWEF]\d{4} .* [\w/]+\.(cc|h):\d+\] ")


def _run(*args: str, env_extra=None) -> subprocess.CompletedProcess:
  env = {"PYTHONPATH": os.pathsep.join(sys.path),
         "PATH": os.environ.get("PATH", "")}
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-c", _PROGRAM, *args],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=False)


class QuietTest(absltest.TestCase):

  def test_default_run_prints_no_tensorflow_log_lines(self):
    result = _run()
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertNotRegex(result.stderr, _CPP_LOG_LINE)
    self.assertNotIn("E0000", result.stderr)
    self.assertNotIn("cuInit", result.stderr)
    self.assertNotIn("absl::InitializeLog", result.stderr)
    self.assertNotIn("PYTHON-INFO", result.stderr)
    self.assertIn("PYTHON-WARNING", result.stderr)  # Warnings stay...
    self.assertEqual(result.stderr.count("PYTHON-WARNING"), 1)  # ...once.
    # The level is not handed down to child processes.
    self.assertIn("level in environment: None", result.stdout)

  def test_verbose_leaves_tensorflow_logging_alone(self):
    result = _run("--verbose")
    self.assertEqual(result.returncode, 0, result.stderr)
    # What the default run hides is there (TensorFlow's import-time lines).
    self.assertRegex(result.stderr, _CPP_LOG_LINE)
    # Still once each, in absl's format only.
    self.assertEqual(result.stderr.count("PYTHON-WARNING"), 1)
    self.assertNotIn("WARNING:tensorflow:", result.stderr)

  def test_level_in_environment_is_respected(self):
    result = _run(env_extra={"TF_CPP_MIN_LOG_LEVEL": "0"})
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertRegex(result.stderr, _CPP_LOG_LINE)
    self.assertIn("level in environment: 0", result.stdout)

  def test_failed_import_shows_what_was_hidden(self):
    # A TensorFlow that cannot be imported: its output is not swallowed.
    fake = self.create_tempdir()
    fake.create_file("tensorflow/__init__.py", content=textwrap.dedent("""
        import sys
        sys.stderr.write("FAKE-TF: cannot load libtensorflow\\\\n")
        raise ImportError("broken tensorflow")
    """))
    env = {"PYTHONPATH": os.pathsep.join([fake.full_path] + sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", "from python.common import quiet"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("FAKE-TF: cannot load libtensorflow", result.stderr)
    self.assertIn("ImportError: broken tensorflow", result.stderr)


class VerboseRequestedTest(absltest.TestCase):

  def test_flag_and_environment(self):
    # Imported here: importing quiet configures TensorFlow (harmless here).
    from python.common import quiet  # pylint: disable=g-import-not-at-top
    requested = quiet.verbose_requested
    self.assertFalse(requested(["prog"], {}))
    self.assertFalse(requested(["prog", "--model_name=verbose"], {}))
    self.assertTrue(requested(["prog", "--verbose"], {}))
    self.assertTrue(requested(["prog", "--verbose=true"], {}))
    self.assertFalse(requested(["prog", "--verbose", "--noverbose"], {}))
    self.assertFalse(requested(["prog", "--", "--verbose"], {}))
    self.assertTrue(requested(["prog"], {"TF_CPP_MIN_LOG_LEVEL": "2"}))


if __name__ == "__main__":
  absltest.main()
