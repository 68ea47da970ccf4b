"""Exit-code conventions shared by the merge binaries.

0 the job succeeded, 1 the job failed (a MergeError: the message goes to
stderr, no traceback), 2 bad usage (unknown or malformed flags, failed flag
validators, app.UsageError). absl's own flag parser exits 1 on bad flags, so
the binaries pass `parse_flags` to `app.run`.
"""

import sys
from typing import Callable, Sequence, TypeVar

from absl import app
from absl import flags

from python.merge import errors

USAGE_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1

_T = TypeVar("_T")


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses flags like absl does, but exits 2 (bad usage) on errors."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(USAGE_EXIT_CODE)


def usage_error(message: str) -> app.UsageError:
  """Returns an app.UsageError that makes app.run exit 2."""
  return app.UsageError(message, exitcode=USAGE_EXIT_CODE)


def run_job(job: Callable[[], _T]) -> _T:
  """Runs `job`; on MergeError prints the message to stderr and exits 1."""
  try:
    return job()
  except errors.MergeError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(FAILURE_EXIT_CODE)
