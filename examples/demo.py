"""The whole chain on the bundled examples, end to end.

Builds the example graphs, merges them into one SavedModel (version 1),
verifies it with the C++ loader, starts tensorflow_model_server (if on PATH)
or the project's server, queries every signature (digits error rate,
diabetes RMSE), publishes version 2 under load with zero failed requests,
stops the server and prints a summary with the paths it used.

Usage:
  bazel run //:demo
  bazel run //:demo -- --output_base=/tmp/models/merged   # keep the bundle

The report goes to stdout; the logs of the demo's own process (merge,
TensorFlow) go to <work_dir>/demo.log and the server's to its own log file,
both named in the summary. --verbose_logs keeps them on stderr instead.
"""

# First, before anything imports TensorFlow: its INFO chatter stays off
# unless --verbose (see python/common/quiet.py).
from python.common import quiet  # pylint: disable=unused-import,g-bad-import-order

import contextlib
import os
import sys
import tempfile
from typing import Any, Dict, Iterator

from absl import app
from absl import flags
from absl import logging

from python.common import cli

_OUTPUT_BASE = flags.DEFINE_string(
    "output_base", None, "Model base path to publish into (kept after the "
    "demo). Default: a new temporary directory.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Where to write example graphs and the server log. "
    "Default: a new temporary directory.")
_VERIFY_BINARY = flags.DEFINE_string(
    "verify_binary", None, "The //cc/verify binary. Default: the one built "
    "with the demo; '' skips the C++ verification.")
_QUICK = flags.DEFINE_boolean(
    "quick", False, "Shorter background load after the version switch (for "
    "tests).")
_VERBOSE_LOGS = flags.DEFINE_boolean(
    "verbose_logs", False, "Leave logs (absl, TensorFlow) on stderr, mixed "
    "with the report, instead of writing them to <work_dir>/demo.log.")
_LOAD_CONCURRENCY = flags.DEFINE_integer(
    "load_concurrency", 2, "Requests in flight during the version switch.",
    lower_bound=1)


@contextlib.contextmanager
def _stderr_to_file(path: str) -> Iterator[None]:
  """Sends this process's stderr (file descriptor 2) to `path` for a while.

  Catches what absl, Python's logging and TensorFlow's C++ runtime write
  (from its import on), so that the report on stdout stays readable;
  restores stderr afterwards, so later errors are still shown.

  Args:
    path: The log file (appended to).

  Yields:
    Nothing.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(path, "ab") as log:
      os.dup2(log.fileno(), 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def _run(options: Dict[str, Any]) -> int:
  """Runs the demo; returns the exit status."""
  # Imported here so that TensorFlow's import-time logs go to the log file.
  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from examples import demo_lib
  from python.merge import merge_lib
  from python.serve import launcher
  try:
    demo_lib.run_demo(demo_lib.DemoOptions(**options))
  except (demo_lib.DemoError, merge_lib.MergeError,
          launcher.LauncherError) as e:
    logging.error("demo failed: %s", e)
    print(f"demo failed: {e}", flush=True)
    return 1
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(
        f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
  work_dir = cli.user_path(_WORK_DIR.value) or tempfile.mkdtemp(
      prefix="tf_serving_merge_demo_")
  os.makedirs(work_dir, exist_ok=True)
  log_path = (None if _VERBOSE_LOGS.value else
              os.path.join(work_dir, "demo.log"))
  options = dict(
      output_base=cli.user_path(_OUTPUT_BASE.value),
      work_dir=work_dir,
      verify_binary=cli.user_path(_VERIFY_BINARY.value),
      load_seconds_after_switch=0.5 if _QUICK.value else 3.0,
      load_concurrency=_LOAD_CONCURRENCY.value,
      log_path=log_path)
  if not log_path:
    return _run(options)
  with _stderr_to_file(log_path):
    code = _run(options)
  if code:
    print(f"logs: {log_path}")
  return code


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
