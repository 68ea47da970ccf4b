"""Tests of the GIL slice kept short while loads run."""

import sys
import threading

from absl.testing import absltest

from python.serve import gil_slices


class DuringLoadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self._default = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    self.addCleanup(sys.setswitchinterval, self._default)

  def test_shortens_and_restores(self):
    with gil_slices.during_load():
      self.assertEqual(sys.getswitchinterval(),
                       gil_slices.LOAD_SWITCH_INTERVAL_S)
    self.assertEqual(sys.getswitchinterval(), 0.005)

  def test_overlapping_loads_restore_after_the_last(self):
    first_in = threading.Event()
    second_done = threading.Event()
    seen = []

    def second():
      first_in.wait()
      with gil_slices.during_load():
        pass
      seen.append(sys.getswitchinterval())  # The first load still runs.
      second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with gil_slices.during_load():
      first_in.set()
      second_done.wait(10)
    thread.join()
    self.assertEqual(seen, [gil_slices.LOAD_SWITCH_INTERVAL_S])
    self.assertEqual(sys.getswitchinterval(), 0.005)

  def test_restores_after_an_error(self):

    @gil_slices.loading
    def failing_load():
      self.assertEqual(sys.getswitchinterval(),
                       gil_slices.LOAD_SWITCH_INTERVAL_S)
      raise ValueError('bad bundle')

    with self.assertRaises(ValueError):
      failing_load()
    self.assertEqual(sys.getswitchinterval(), 0.005)

  def test_never_lengthens_a_shorter_interval(self):
    sys.setswitchinterval(0.0001)
    short = sys.getswitchinterval()  # CPython keeps whole microseconds.
    with gil_slices.during_load():
      self.assertEqual(sys.getswitchinterval(), short)
    self.assertEqual(sys.getswitchinterval(), short)


if __name__ == '__main__':
  absltest.main()
