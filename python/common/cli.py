"""Exit-code conventions shared by every binary of the toolkit.

0 the job succeeded, 1 the job failed, 2 bad usage (unknown or malformed flags,
failed flag validators, app.UsageError). absl's own flag parser exits 1 on a
bad flag, which a script cannot tell from a failed job, so binaries call

  app.run(main, flags_parser=cli.parse_flags)
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

USAGE_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses flags like absl does, but exits 2 (bad usage) on errors.

  Args:
    argv: the command line, program name first.

  Returns:
    The arguments that are not flags, program name first.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(USAGE_EXIT_CODE)


def usage_error(message: str) -> app.UsageError:
  """Returns an app.UsageError that makes app.run exit 2."""
  return app.UsageError(message, exitcode=USAGE_EXIT_CODE)


def user_path(path: str) -> str:
  """Resolves a path the user typed on the command line.

  `bazel run` starts a binary inside its runfiles tree, so a relative path
  such as `--spec=merge.toml` would be looked up there instead of in the
  directory the user ran Bazel from. Bazel names that directory in
  $BUILD_WORKING_DIRECTORY; relative paths are resolved against it. Absolute
  paths, URIs (`gs://...`, `ram://...`) and empty strings are returned as is,
  and so is everything when the binary is not run by `bazel run`.

  Args:
    path: a path or URI from a flag.

  Returns:
    The path to open.
  """
  if not path or os.path.isabs(path) or "://" in path:
    return path
  working_directory = os.environ.get("BUILD_WORKING_DIRECTORY")
  if not working_directory:
    return path
  return os.path.join(working_directory, path)
