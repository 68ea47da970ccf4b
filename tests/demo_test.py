"""Runs //:demo end to end (with --quick) and checks what it reports.

The demo builds the examples, merges, verifies with //cc/verify, serves,
queries every signature, switches versions under load, and stops the server,
with a report on stdout free of log lines (those go to <work_dir>/demo.log).
"""

import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_command() -> list:
  """The //:demo binary (Bazel runfiles), else its script on this Python."""
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir:
    binary = os.path.join(srcdir, "tf_serving_merge", "examples", "demo")
    if os.path.exists(binary):
      return [binary]
  command = [sys.executable, os.path.join(_REPO_ROOT, "examples", "demo.py")]
  built = os.path.join(_REPO_ROOT, "bazel-bin", "cc", "verify", "verify")
  if not os.path.exists(built):
    command.append("--verify_binary=")  # Outside Bazel, before a build.
  return command


class DemoTest(absltest.TestCase):

  def test_demo_runs_the_whole_chain(self):
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    output_base = os.path.join(tmp, "models", "merged")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # As a user runs it (.bazelrc sets it).
    env["PYTHONPATH"] = os.pathsep.join(
        [_REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                        if p])
    done = subprocess.run(
        demo_command() + ["--quick", f"--output_base={output_base}",
                          f"--work_dir={tmp}/work"],
        capture_output=True, text=True, env=env, timeout=1200, check=False)
    out = done.stdout
    self.assertEqual(done.returncode, 0, out[-4000:] + done.stderr[-4000:])

    # The header names the version it publishes (2 on a fresh base).
    self.assertRegex(out, r"(?m)^== \d+\. publish version 2 \(adds hyaudio_2\) "
                          r"under load")
    # The client step read the classify/regress features from the bundle.
    self.assertRegex(out, r"features .* from the warmup records of "
                          + re.escape(os.path.join(output_base, "1")))
    # Versions 1 and 2 were published.
    self.assertEqual(
        sorted(d for d in os.listdir(output_base) if d.isdigit()), ["1", "2"])
    # Every signature answered, the digits error rate is reported and low.
    self.assertRegex(out, r"(\d+) of \1 signature\(s\) answered")
    rates = re.search(r"digits: inference error rate ([\d.]+)% via Predict, "
                      r"([\d.]+)% via Classify", out)
    self.assertIsNotNone(rates, out)
    self.assertLess(float(rates.group(1)), 10.0)
    self.assertEqual(rates.group(1), rates.group(2))
    self.assertRegex(out, r"diabetes: RMSE [\d.]+ via Regress")
    # The version switch under load: both versions answered, none failed.
    switch = re.search(r"background load: (\d+) requests .* by version: "
                       r"v1: (\d+), v2: (\d+); failed: (\d+)", out)
    self.assertIsNotNone(switch, out)
    self.assertGreater(int(switch.group(2)), 0)
    self.assertGreater(int(switch.group(3)), 0)
    self.assertEqual(switch.group(4), "0")
    self.assertIn("hyaudio_2: version 2", out)
    # The summary names the paths, and the server is gone.
    self.assertIn(f"model base path:   {output_base} (versions 1, 2)", out)
    pid = int(re.search(r"at 127\.0\.0\.1:\d+, pid (\d+)", out).group(1))
    self.assertFalse(os.path.exists(f"/proc/{pid}"),
                     f"server pid {pid} is still running")
    # The report is clean: the logs (absl, TensorFlow's Python and C++) went
    # to the demo log named in the summary, not to the terminal.
    self.assertIn(f"demo log:          {tmp}/work/demo.log", out)
    with open(os.path.join(tmp, "work", "demo.log"), encoding="utf-8") as f:
      log = f.read()
    self.assertRegex(log, r"(?m)^I\d{4} .*publish\.py.*Writing version 1 into")
    for stream, text in (("stdout", out), ("stderr", done.stderr)):
      self.assertNotRegex(text, r"(?m)^[IWEF]\d{4} ", stream)
      self.assertNotIn("cuInit", text, stream)
      self.assertNotIn("INFO:tensorflow", text, stream)
      self.assertNotIn("WARNING:tensorflow", text, stream)


if __name__ == "__main__":
  absltest.main()
