"""Which parts of a version load run below the serving priority.

A load competes with serving for two things: the cores and the GIL. Running
the whole load in a niced thread gives the cores to serving, but it inverts
the GIL: a niced thread that holds the GIL (running Python, or in one of
TensorFlow's C++ calls that keep it, such as the GraphDef import or the
freeing of an unloaded session) is the first thread the kernel takes off a
busy core, and every request thread then waits for the GIL until the
scheduler gives the niced thread a turn again. hotswap_bench showed it: with
niced load and unload threads, the ~7 ms the free of an unloaded version
holds the GIL stalled every request for 0.4 to 0.6 s, and the ~15 ms import
for 70 to 110 ms.

So loads run at the serving priority, except for the steps that are long,
native and release the GIL: building a version's session callables
(`Session::MakeCallable` prunes, optimizes and instantiates the graph for
each signature: ~0.4 CPU-seconds on a 16 MiB merged bundle of four models,
most of a load). Those run in one niced worker thread (`run_niced`) that
only ever runs such calls; the load thread waits for them without the GIL.
"""

import concurrent.futures
import os
import threading
from typing import Callable, Optional, TypeVar

from absl import logging

# Niceness of the worker running the GIL-free steps of loads.
NICENESS = 10

_T = TypeVar('_T')

_lock = threading.Lock()
_worker: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _lower_thread_priority() -> None:
  """Lowers the calling thread's CPU priority (Linux: per-thread nice)."""
  try:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                   min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS))
  except (AttributeError, OSError) as e:  # Not Linux, or not permitted.
    logging.info('Loads keep the normal priority: %s', e)


def start() -> None:
  """Starts the niced worker (once per process; later calls do nothing)."""
  global _worker
  with _lock:
    if _worker is None:
      _worker = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix='load_niced',
          initializer=_lower_thread_priority)


def worker_native_id() -> Optional[int]:
  """The niced worker's native thread id (None before `start`)."""
  if _worker is None:
    return None
  return _worker.submit(threading.get_native_id).result()


def run_niced(fn: Callable[..., _T], *args) -> _T:
  """Runs a long GIL-releasing native call in the niced worker; waits for it.

  Before `start` (tests, tools), runs it in the calling thread.
  """
  if _worker is None:
    return fn(*args)
  return _worker.submit(fn, *args).result()
