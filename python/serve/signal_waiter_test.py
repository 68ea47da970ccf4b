"""Tests of SignalWaiter with real signals sent to this test process."""

import os
import signal
import threading
import time

from absl.testing import absltest
from absl.testing import parameterized

from python.serve import signal_waiter

# Generous bound for events that take microseconds: a broken waiter fails
# the test at this deadline instead of hanging it.
_BOUND_S = 30.0


class SignalWaiterTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.waiter = signal_waiter.SignalWaiter().install()
    self.addCleanup(self.waiter.uninstall)

  def test_signals_are_returned_in_order_and_sigint_raises_nothing(self):
    # Without the waiter, SIGINT would raise KeyboardInterrupt right here.
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    got = [self.waiter.wait(_BOUND_S) for _ in range(3)]
    self.assertEqual(got, [signal.SIGINT, signal.SIGTERM, signal.SIGINT])
    self.assertEqual(self.waiter.received,
                     [signal.SIGINT, signal.SIGTERM, signal.SIGINT])
    self.assertIsNone(self.waiter.wait(0))

  def test_timeout_without_signal_returns_none(self):
    self.assertIsNone(self.waiter.wait(0.05))
    self.assertEqual(self.waiter.received, [])

  @parameterized.named_parameters(('sigint', signal.SIGINT),
                                  ('sigterm', signal.SIGTERM))
  def test_signal_delivered_to_another_thread_wakes_main_thread(self, signum):
    # The kernel may hand a process signal to any thread; the main thread
    # must hear of it while blocked in wait(), not at its next bytecode.
    blocker = threading.Event()
    worker = threading.Thread(target=blocker.wait, args=(_BOUND_S,))
    worker.start()
    self.addCleanup(worker.join)
    self.addCleanup(blocker.set)
    signal.pthread_kill(worker.ident, signum)
    start = time.monotonic()
    self.assertEqual(self.waiter.wait(_BOUND_S), signum)
    self.assertLess(time.monotonic() - start, _BOUND_S)

  def test_wake_from_another_thread_returns_none_early(self):
    threading.Timer(0.05, self.waiter.wake).start()
    start = time.monotonic()
    self.assertIsNone(self.waiter.wait(_BOUND_S))
    self.assertLess(time.monotonic() - start, _BOUND_S)
    self.assertEqual(self.waiter.received, [])

  def test_signal_is_kept_when_wake_comes_first(self):
    self.waiter.wake()
    os.kill(os.getpid(), signal.SIGTERM)
    results = [self.waiter.wait(_BOUND_S), self.waiter.wait(0)]
    self.assertIn(signal.SIGTERM, results)


class InstallTest(absltest.TestCase):

  def test_uninstall_restores_previous_handlers_and_wakeup_fd(self):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with signal_waiter.SignalWaiter():
      self.assertNotEqual(signal.getsignal(signal.SIGINT),
                          before[signal.SIGINT])
      installed_fd = signal.set_wakeup_fd(-1)  # Reads it (by replacing).
      signal.set_wakeup_fd(installed_fd)
      self.assertNotEqual(installed_fd, -1)
    self.assertEqual(
        {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
        before)
    self.assertEqual(signal.set_wakeup_fd(-1), -1)

  def test_install_outside_main_thread_is_refused(self):
    errors = []

    def install():
      try:
        signal_waiter.SignalWaiter().install()
      except RuntimeError as e:
        errors.append(str(e))

    thread = threading.Thread(target=install, name='not_main')
    thread.start()
    thread.join()
    self.assertLen(errors, 1)
    self.assertRegex(errors[0], r'must run in the main thread.*not_main')

  def test_wait_before_install_is_refused(self):
    with self.assertRaisesRegex(RuntimeError, 'before install'):
      signal_waiter.SignalWaiter().wait(0)


if __name__ == '__main__':
  absltest.main()
