"""Turns SIGINT/SIGTERM into events that the main thread waits for.

CPython runs a Python signal handler in the main thread, between two bytecodes
of whatever that thread was doing. Real work in a handler (logging, taking a
lock, starting or joining a thread, calling `stop()`) can therefore deadlock
on a lock the interrupted code holds, raise into arbitrary code, or race with
the code it interrupted. `SignalWaiter` installs handlers that do nothing:
Python's C-level handler writes each signal number to a socket
(`signal.set_wakeup_fd`), whichever thread the kernel delivered the signal
to, and the main thread reads the numbers with `wait()` and does the real
work itself, in order.

  with signal_waiter.SignalWaiter() as signals:
    start_something_in_a_thread(on_done=signals.wake)
    signum = signals.wait(timeout=1.0)  # a signal number, or None
"""

import collections
import select
import signal
import socket
import threading
import types
from typing import Deque, Dict, List, Optional, Sequence

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WAKE_BYTE = b'\0'  # Not a signal number: written by wake().


def _record_nothing(signum: int, frame: Optional[types.FrameType]) -> None:
  """The Python-level handler: deliberately empty.

  Python's C-level handler has already written `signum` to the wakeup socket
  before this runs, which is all `SignalWaiter.wait()` needs. Doing nothing
  here means the handler cannot block, raise or reorder anything in the code
  it interrupts (and SIGINT no longer raises KeyboardInterrupt).

  Args:
    signum: The signal number (unused).
    frame: The interrupted frame (unused).
  """
  del signum, frame


class SignalWaiter:
  """Delivers signals to the main thread through `wait()`.

  Install it from the main thread (Python only lets the main thread set
  signal handlers); `wait()` is meant for that thread too, `wake()` may be
  called from any thread. Only one waiter may be installed at a time, as the
  process has a single wakeup fd.
  """

  def __init__(self, signums: Sequence[int] = DEFAULT_SIGNALS):
    """Configures (does not install) the waiter.

    Args:
      signums: The signals to catch, e.g. (SIGINT, SIGTERM).
    """
    self._signums = tuple(signums)
    self._pending: Deque[int] = collections.deque()
    self._received: List[int] = []
    self._previous_handlers: Dict[int, object] = {}
    self._previous_wakeup_fd: Optional[int] = None
    self._reader: Optional[socket.socket] = None
    self._writer: Optional[socket.socket] = None

  @property
  def received(self) -> List[int]:
    """Every signal `wait()` has returned so far, oldest first."""
    return list(self._received)

  def install(self) -> 'SignalWaiter':
    """Starts catching the signals.

    Returns:
      self.

    Raises:
      RuntimeError: not called from the main thread, or already installed.
    """
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError(
          'SignalWaiter.install() must run in the main thread (Python '
          'delivers signals only there); it ran in '
          f'{threading.current_thread().name}.')
    if self._reader is not None:
      raise RuntimeError('SignalWaiter is already installed.')
    self._reader, self._writer = socket.socketpair()
    self._reader.setblocking(False)
    self._writer.setblocking(False)
    # The wakeup fd first, so that no signal can slip in between the two.
    self._previous_wakeup_fd = signal.set_wakeup_fd(
        self._writer.fileno(), warn_on_full_buffer=False)
    for signum in self._signums:
      self._previous_handlers[signum] = signal.signal(signum, _record_nothing)
    return self

  def uninstall(self) -> None:
    """Restores the previous handlers and wakeup fd (main thread only)."""
    if self._reader is None:
      return
    for signum, handler in self._previous_handlers.items():
      signal.signal(signum, handler)
    self._previous_handlers.clear()
    signal.set_wakeup_fd(self._previous_wakeup_fd)
    self._reader.close()
    self._writer.close()
    self._reader = self._writer = None

  def wait(self, timeout: Optional[float] = None) -> Optional[int]:
    """Returns the next caught signal, oldest first.

    Args:
      timeout: Seconds to wait for one; None waits until a signal or
        `wake()`.

    Returns:
      The signal number, or None when `timeout` passed or `wake()` was
      called first.

    Raises:
      RuntimeError: the waiter is not installed.
    """
    if self._reader is None:
      raise RuntimeError('SignalWaiter.wait() called before install().')
    if not self._pending:
      readable, _, _ = select.select([self._reader], [], [], timeout)
      if readable:
        self._drain_socket()
    if not self._pending:
      return None
    signum = self._pending.popleft()
    self._received.append(signum)
    return signum

  def _drain_socket(self) -> None:
    while True:
      try:
        data = self._reader.recv(512)
      except (BlockingIOError, InterruptedError):
        return
      if not data:
        return
      self._pending.extend(b for b in data if b != _WAKE_BYTE[0])

  def wake(self) -> None:
    """Makes a pending or the next `wait()` return (thread-safe)."""
    writer = self._writer
    if writer is None:
      return
    try:
      writer.send(_WAKE_BYTE)
    except (BlockingIOError, OSError):
      pass  # Full (a wakeup is pending anyway) or closed by uninstall().

  def __enter__(self) -> 'SignalWaiter':
    return self.install()

  def __exit__(self, *unused_exc) -> None:
    self.uninstall()
