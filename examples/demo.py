"""The whole chain on the bundled examples, end to end.

Builds the example graphs, merges them into one SavedModel (version 1),
verifies it with the C++ loader, starts tensorflow_model_server (if on PATH)
or the project's server, queries every signature (digits error rate,
diabetes RMSE), publishes version 2 under load with zero failed requests,
stops the server and prints a summary with the paths it used.

Usage:
  bazel run //:demo
  bazel run //:demo -- --output_base=/tmp/models/merged   # keep the bundle
"""


from absl import app
from absl import flags
from absl import logging

from examples import demo_lib
from python.common import cli
from python.merge import merge_lib
from python.serve import launcher

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
_LOAD_CONCURRENCY = flags.DEFINE_integer(
    "load_concurrency", 2, "Requests in flight during the version switch.",
    lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(
        f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
  options = demo_lib.DemoOptions(
      output_base=_OUTPUT_BASE.value,
      work_dir=_WORK_DIR.value,
      verify_binary=_VERIFY_BINARY.value,
      load_seconds_after_switch=0.5 if _QUICK.value else 3.0,
      load_concurrency=_LOAD_CONCURRENCY.value)
  try:
    demo_lib.run_demo(options)
  except (demo_lib.DemoError, merge_lib.MergeError,
          launcher.LauncherError) as e:
    logging.error("demo failed: %s", e)
    print(f"demo failed: {e}")
    return 1
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
