"""Exit-code conventions shared by the merge binaries.

0 the job succeeded, 1 the job failed (a MergeError: the message goes to
stderr, no traceback), 2 bad usage (unknown or malformed flags, failed flag
validators, app.UsageError). absl's own flag parser exits 1 on bad flags, so
the binaries pass `parse_flags` to `app.run`.

No traceback ever reaches a user: an exception that is not a MergeError (a
bug, or a library failing in a way nobody foresaw) is printed as one line
too, and the traceback goes to the log only with --verbosity=1.
"""

import os
import sys
import traceback
from typing import Callable, Sequence, TypeVar

from absl import logging

from python.common import bounded_read
from python.common import cli as common_cli
from python.merge import errors

USAGE_EXIT_CODE = common_cli.USAGE_EXIT_CODE
FAILURE_EXIT_CODE = common_cli.FAILURE_EXIT_CODE
parse_flags = common_cli.parse_flags
usage_error = common_cli.usage_error
user_path = common_cli.user_path

_T = TypeVar("_T")


_MAX_MESSAGE_CHARS = 2000


def _fail(message: str, abandoned: bool = False) -> None:
  sys.stderr.write(
      f"error: {bounded_read.shorten_message(message, _MAX_MESSAGE_CHARS)}\n")
  sys.stderr.flush()
  if abandoned:
    # A graph run that cannot be stopped still holds a TensorFlow session;
    # a normal exit would wait for it. Everything is cleaned up already
    # (staging removed, lock released), so leave at once.
    sys.stdout.flush()
    os._exit(FAILURE_EXIT_CODE)  # pylint: disable=protected-access
  sys.exit(FAILURE_EXIT_CODE)


def run_job(job: Callable[[], _T]) -> _T:
  """Runs `job`; on any error prints one line to stderr and exits 1."""
  try:
    return job()
  except errors.MergeError as e:
    _fail(str(e), abandoned=getattr(e, "abandoned", False))
  except (KeyboardInterrupt, SystemExit):
    raise
  except RecursionError:
    _fail("the input is nested too deeply to process; it is corrupt or "
          "hostile.")
  except MemoryError:
    _fail("out of memory; the input is too large for this machine (lower "
          "--max_input_bytes to refuse such inputs early).")
  except Exception as e:  # pylint: disable=broad-except
    logging.vlog(1, "%s", traceback.format_exc())
    _fail(f"unexpected {type(e).__name__}: {e} (this is a bug in the merge "
          "tools; rerun with --verbosity=1 for the traceback and report it).")
