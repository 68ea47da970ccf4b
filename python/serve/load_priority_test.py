"""Tests for load_priority: one niced worker for the GIL-free load steps."""

import os
import threading
from unittest import mock

from absl.testing import absltest

from python.serve import load_priority


class LoadPriorityTest(absltest.TestCase):

  def test_before_start_calls_run_in_the_calling_thread(self):
    with mock.patch.object(load_priority, '_worker', None):
      self.assertEqual(load_priority.run_niced(threading.get_native_id),
                       threading.get_native_id())
      self.assertIsNone(load_priority.worker_native_id())

  def test_the_worker_is_niced_and_the_caller_keeps_its_priority(self):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    load_priority.start()
    load_priority.start()  # Idempotent: still one worker.
    worker = load_priority.worker_native_id()
    self.assertNotEqual(worker, threading.get_native_id())
    self.assertEqual(load_priority.run_niced(threading.get_native_id), worker)
    self.assertEqual(os.getpriority(os.PRIO_PROCESS, worker),
                     min(19, base + load_priority.NICENESS))
    self.assertEqual(os.getpriority(os.PRIO_PROCESS, 0), base)

  def test_results_and_errors_come_back_to_the_caller(self):
    load_priority.start()
    self.assertEqual(load_priority.run_niced(lambda a, b: a + b, 2, 3), 5)
    with self.assertRaisesRegex(ValueError, 'from the worker'):
      load_priority.run_niced(self._fail)

  @staticmethod
  def _fail():
    raise ValueError('from the worker')


if __name__ == '__main__':
  absltest.main()
