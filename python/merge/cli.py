"""Exit-code conventions shared by the merge binaries.

0 the job succeeded, 1 the job failed (a MergeError: the message goes to
stderr, no traceback), 2 bad usage (unknown or malformed flags, failed flag
validators, app.UsageError). absl's own flag parser exits 1 on bad flags, so
the binaries pass `parse_flags` to `app.run`.
"""

import sys
from typing import Callable, Sequence, TypeVar

from python.common import cli as common_cli
from python.merge import errors

USAGE_EXIT_CODE = common_cli.USAGE_EXIT_CODE
FAILURE_EXIT_CODE = common_cli.FAILURE_EXIT_CODE
parse_flags = common_cli.parse_flags
usage_error = common_cli.usage_error
user_path = common_cli.user_path

_T = TypeVar("_T")


def run_job(job: Callable[[], _T]) -> _T:
  """Runs `job`; on MergeError prints the message to stderr and exits 1."""
  try:
    return job()
  except errors.MergeError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(FAILURE_EXIT_CODE)
