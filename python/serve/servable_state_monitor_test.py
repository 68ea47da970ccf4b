"""Tests for servable_state_monitor: version states, GetModelStatus, waits."""

import threading
import time

from absl.testing import absltest
import grpc

from python.serve import servable_state_monitor
from python.serve import serving_error

State = servable_state_monitor.State
_BOUND_S = 30.0


class ServableStateMonitorTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.monitor = servable_state_monitor.ServableStateMonitor()

  def test_last_state_per_version_newest_first(self):
    error = serving_error.ServingError(grpc.StatusCode.NOT_FOUND, 'gone')
    self.monitor.set_state('m', 1, State.LOADING)
    self.monitor.set_state('m', 1, State.AVAILABLE)
    self.monitor.set_state('m', 2, State.LOADING)
    self.monitor.set_state('m', 2, State.END, error)
    self.monitor.set_state('other', 5, State.AVAILABLE)
    self.assertEqual(self.monitor.model_status('m'),
                     [(2, State.END, error), (1, State.AVAILABLE, None)])
    self.assertEqual(self.monitor.model_status('m', 1),
                     [(1, State.AVAILABLE, None)])
    # Kept after unload: GetModelStatus reports what happened.
    self.monitor.set_state('m', 1, State.END)
    self.assertEqual(self.monitor.model_status('m', 1),
                     [(1, State.END, None)])

  def test_unknown_model_or_version_is_not_found(self):
    self.monitor.set_state('m', 3, State.AVAILABLE)
    with self.assertRaises(serving_error.ServingError) as raised:
      self.monitor.model_status('m', 4)
    self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
    self.assertIn('Could not find version 4 of model m. Known versions: [3]',
                  str(raised.exception))
    with self.assertRaisesRegex(
        serving_error.ServingError,
        r"Could not find any versions of model x\. Known models: \['m'\]"):
      self.monitor.model_status('x')

  def test_wait_until_wakes_on_a_state_change(self):
    def available():
      try:
        return self.monitor.model_status('m', 1)[0][1] == State.AVAILABLE
      except serving_error.ServingError:
        return False

    setter = threading.Timer(
        0.1, self.monitor.set_state, ('m', 1, State.AVAILABLE))
    setter.start()
    self.addCleanup(setter.cancel)
    start = time.monotonic()
    # poll_s far above the test's bound: only the notification wakes it.
    self.assertTrue(self.monitor.wait_until(available, poll_s=3600))
    self.assertLess(time.monotonic() - start, _BOUND_S)

  def test_wait_until_times_out_and_passes_errors_on(self):
    start = time.monotonic()
    self.assertFalse(self.monitor.wait_until(lambda: False, timeout_s=0.1))
    self.assertGreaterEqual(time.monotonic() - start, 0.1)

    def failing():
      raise RuntimeError('model failed')

    with self.assertRaisesRegex(RuntimeError, 'model failed'):
      self.monitor.wait_until(failing, timeout_s=_BOUND_S)

  def test_the_manager_shares_its_condition(self):
    condition = threading.Condition()
    monitor = servable_state_monitor.ServableStateMonitor(condition)
    self.assertIs(monitor.condition, condition)
    flag = []
    # A record of the manager changes under the condition, then notify().
    done = threading.Event()

    def wait():
      monitor.wait_until(lambda: done.is_set(), poll_s=3600)
      flag.append('woke')

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    with condition:
      done.set()
    monitor.notify()
    thread.join(_BOUND_S)
    self.assertEqual(flag, ['woke'])


if __name__ == '__main__':
  absltest.main()
