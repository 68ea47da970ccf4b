"""Keeps TensorFlow's start-up chatter off the terminal; import it first.

Importing TensorFlow prints lines such as `I0000 ... port.cc] oneDNN custom
operations are on`, `cudart_stub.cc] Could not find cuda drivers` and, on the
first device lookup, `E0000 ... cuda_platform.cc:52] failed call to cuInit`,
on every run, even successful ones. Binaries import this module before
anything that imports TensorFlow:

  from python.common import quiet  # pylint: disable=unused-import  (first)

Unless the user asked for logs (`--verbose` on the command line, or
TF_CPP_MIN_LOG_LEVEL in the environment), it

  * sets TensorFlow's C++ log level to 1 (INFO off; warnings and errors
    stay) for this process, without passing the setting to child processes;
  * imports TensorFlow and looks up its devices with file descriptor 2 sent
    to a temporary file, so the lines printed before TensorFlow reads the log
    level (and the cuInit probe) are dropped; if the import fails, they are
    written to stderr after all, with the exception;
  * sets the `tensorflow` Python logger to WARNING.

With --verbose, TensorFlow's levels are left as they are. Either way, the
`tensorflow` Python logger loses the stream handler TensorFlow gives it when
it is imported before absl's handler exists, so each message is printed once
(by absl's handler under app.run; else by Python's last-resort handler, which
prints warnings and errors), not once in each format. The module defines the
--verbose flag.
"""

import logging
import os
import sys
import tempfile

from absl import flags

_VERBOSE = flags.DEFINE_boolean(
    "verbose", False, "Show TensorFlow's INFO logs (its C++ start-up lines "
    "and Python INFO messages); by default they are off. Setting "
    "TF_CPP_MIN_LOG_LEVEL in the environment also leaves them alone.")

# TensorFlow's C++ levels: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
QUIET_CPP_LOG_LEVEL = "1"
_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def verbose_requested(argv, environ) -> bool:
  """True if the command line or the environment asks for TF's logs.

  The flag is read from argv directly: TensorFlow must be configured before
  it is imported, which is before absl parses the flags.

  Args:
    argv: the command line (sys.argv).
    environ: the environment (os.environ).

  Returns:
    Whether to leave TensorFlow's logging as it is.
  """
  if _LEVEL_VARIABLE in environ:
    return True
  verbose = False
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg in ("--verbose", "--verbose=true", "--verbose=1", "--verbose=True"):
      verbose = True
    elif arg in ("--noverbose", "--verbose=false", "--verbose=0",
                 "--verbose=False"):
      verbose = False
  return verbose


def _import_tensorflow_quietly() -> None:
  os.environ[_LEVEL_VARIABLE] = QUIET_CPP_LOG_LEVEL
  sys.stderr.flush()
  saved = os.dup(2)
  captured = tempfile.TemporaryFile()
  os.dup2(captured.fileno(), 2)
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # The cuInit probe, once, in here.
  except BaseException:
    sys.stderr.flush()
    os.dup2(saved, 2)
    captured.seek(0)
    sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
    raise
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    captured.close()
    # TensorFlow has read the level by now; children choose their own.
    del os.environ[_LEVEL_VARIABLE]
  logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _log_once() -> None:
  """Drops the stream handler of TensorFlow's logger (if TF is imported)."""
  tf = sys.modules.get("tensorflow")
  if tf is None:
    return
  logger = tf.get_logger()  # Creates (once) the handler it would add later.
  for handler in list(logger.handlers):
    logger.removeHandler(handler)


if verbose_requested(sys.argv, os.environ):
  # TensorFlow is not imported here: a binary may import it later on purpose
  # (the demo does, with stderr sent to its log file).
  from absl import app  # pylint: disable=g-import-not-at-top
  app.call_after_init(_log_once)
else:
  _import_tensorflow_quietly()
  _log_once()
