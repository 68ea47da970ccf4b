"""Shorter GIL time slices while a version loads, so requests wait less.

CPython hands the GIL from a thread running Python code to a waiting one
every `sys.getswitchinterval()` (5 ms by default). A load runs long stretches
of Python (TensorFlow's SavedModel loader wraps every imported node in a
Python `Operation`), and each request thread needs the GIL several times per
request (parse, plan, respond, and again after each gRPC call that released
it), so during a load every one of those waits can take up to a full slice.
Niceness (model_manager.LOAD_THREAD_NICENESS) lowers the load's share of the
cores but cannot shorten a GIL slice.

`during_load()` sets the interval to `LOAD_SWITCH_INTERVAL_S` while at least
one load runs and puts the previous value back after the last one ends. The
cost is more GIL hand-offs during loads only; steady serving keeps CPython's
default. C++ code that holds the GIL (TensorFlow's GraphDef import does) is
not shortened by this.
"""

import contextlib
import functools
import sys
import threading
from typing import Callable, Iterator, TypeVar

# The GIL slice while a load runs (CPython's default is 0.005 s).
LOAD_SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_active = 0
_saved_interval = None

_F = TypeVar('_F', bound=Callable)


@contextlib.contextmanager
def during_load() -> Iterator[None]:
  """Shortens the GIL slice for the duration; nests and runs concurrently."""
  global _active, _saved_interval
  with _lock:
    if _active == 0:
      _saved_interval = sys.getswitchinterval()
      if _saved_interval > LOAD_SWITCH_INTERVAL_S:
        sys.setswitchinterval(LOAD_SWITCH_INTERVAL_S)
    _active += 1
  try:
    yield
  finally:
    with _lock:
      _active -= 1
      if _active == 0 and _saved_interval > LOAD_SWITCH_INTERVAL_S:
        sys.setswitchinterval(_saved_interval)


def loading(function: _F) -> _F:
  """Decorator: runs `function` inside `during_load()`."""

  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    with during_load():
      return function(*args, **kwargs)

  return wrapped  # type: ignore[return-value]
