"""Exit-code and usage conventions shared by every binary of the toolkit.

0 the job succeeded, 1 the job failed, 2 bad usage (unknown or malformed flags,
failed flag validators, app.UsageError); `--help` exits 0. absl's own parser
exits 1 on a bad flag and on --help, which a script cannot tell from a failed
job, and prints the whole help above the one line that says what is wrong.
Binaries call

  app.run(main, flags_parser=cli.parse_flags)

and get, for any usage error (from the parser or an app.UsageError raised by
main), one line on stderr and a pointer to --help:

  error: --port=70000 is not in [0, 65535].
  Run with --help to see the flags.
"""

import functools
import os
import sys
from typing import Sequence

from absl import app
from absl import flags

USAGE_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1
HELP_POINTER = "Run with --help to see the flags."

_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml")


def usage_error_text(message: object) -> str:
  """The two lines printed for a usage error: the message on one line, then
  the pointer to --help."""
  one_line = " ".join(str(message).split())
  return f"error: {one_line}\n{HELP_POINTER}\n"


def _exit_with_usage_error(message: object) -> None:
  sys.stderr.write(usage_error_text(message))
  sys.stderr.flush()
  sys.exit(USAGE_EXIT_CODE)


def _help_exits_0(parse, argument):
  """A help flag's parse(): absl prints the help and exits 1; we exit 0."""
  try:
    parse(argument)
  except SystemExit as e:
    if e.code not in (None, 0, 1):
      raise
    sys.stdout.flush()
    sys.exit(0)


def _usage_in_one_line(usage, shorthelp=False, writeto_stdout=False,
                       detailed_error=None, exitcode=None):
  """absl's app.usage, except for a main()'s UsageError: one line, exit 2."""
  if detailed_error is None:
    return usage(shorthelp=shorthelp, writeto_stdout=writeto_stdout,
                 exitcode=exitcode)
  _exit_with_usage_error(detailed_error)


def _install_usage_conventions() -> None:
  """Makes --help exit 0 and app.run report UsageErrors in one line.

  app.run prints a UsageError raised by main with `app.usage(shorthelp=True,
  detailed_error=...)`, i.e. the module docstring and every flag before the
  message; app.usage is wrapped so that only that case changes. Idempotent.
  """
  for name in _HELP_FLAGS:
    if name in flags.FLAGS:
      flag = flags.FLAGS[name]
      if not isinstance(flag.parse, functools.partial):
        flag.parse = functools.partial(_help_exits_0, flag.parse)
  if not isinstance(app.usage, functools.partial):
    app.usage = functools.partial(_usage_in_one_line, app.usage)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses flags like absl does, with the toolkit's usage conventions.

  A bad flag (unknown, malformed, failing a validator) prints one line and
  the pointer to --help and exits 2; --help, --helpshort, --helpfull and
  --helpxml print the help and exit 0; an app.UsageError raised later by
  main() prints one line and exits 2 (whatever its exitcode).

  Args:
    argv: the command line, program name first.

  Returns:
    The arguments that are not flags, program name first.
  """
  _install_usage_conventions()
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit_with_usage_error(e)


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
