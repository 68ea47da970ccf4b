"""Exit-code conventions shared by every binary of the toolkit.

0 the job succeeded, 1 the job failed, 2 bad usage (unknown or malformed flags,
failed flag validators, app.UsageError). absl's own flag parser exits 1 on a
bad flag, which a script cannot tell from a failed job, so binaries call

  app.run(main, flags_parser=cli.parse_flags)
"""

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
