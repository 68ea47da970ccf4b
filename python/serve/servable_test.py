"""Tests for servable: loading a version, session callables, reference counts.

On the TF1 test model of python/serve/testdata (x float[?,3] -> y = x*scale,
total = sum(y)).
"""

import os
import subprocess
import sys
import textwrap
import threading

from absl.testing import absltest
import grpc
import numpy as np

from python.serve import servable as servable_lib
from python.serve import serving_error
from python.serve.testdata import models


class ServableTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.path = models.write_tf1_model(
        os.path.join(absltest.get_default_test_tmpdir(), 'm', '3'),
        scale=3.0, warmup=False)

  def _load(self, **options):
    servable = servable_lib.load(
        'm', 3, self.path, ['serve'],
        options=servable_lib.RuntimeOptions(**options))
    self.addCleanup(servable.close, 10)
    return servable

  def test_load_keeps_the_signatures_and_trims_the_meta_graph(self):
    servable = self._load()
    self.assertEqual((servable.name, servable.version, servable.path),
                     ('m', 3, self.path))
    self.assertIn('serving_default', servable.signatures)
    self.assertEqual(servable.signatures['classify'].method_name,
                     'tensorflow/serving/classify')
    self.assertFalse(servable.meta_graph_def.HasField('graph_def'))
    self.assertEmpty(servable.meta_graph_def.meta_info_def.stripped_op_list
                     .op)
    untrimmed = self._load(remove_unused_fields_from_bundle_metagraph=False)
    self.assertTrue(untrimmed.meta_graph_def.HasField('graph_def'))

  def test_run_feeds_shapes_the_placeholder_does_not_declare(self):
    servable = self._load()
    y, total = servable.run({'x:0': np.array([[1, 2, 3]], np.float32)},
                            ['y:0', 'total:0'])
    np.testing.assert_array_equal(y, [[3, 6, 9]])
    np.testing.assert_array_equal(total, [18])
    # Rank 3 into a [?, 3] placeholder: the executor decides, as in TF
    # Serving (here the op accepts it).
    (y,) = servable.run({'x:0': np.ones((1, 1, 3), np.float32)}, ['y:0'])
    self.assertEqual(y.shape, (1, 1, 3))

  def test_runtime_errors_carry_tensorflows_code(self):
    servable = self._load()
    with self.assertRaises(serving_error.ServingError) as raised:
      servable.run({'x:0': np.array([['a', 'b', 'c']], object)}, ['y:0'])
    self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    with self.assertRaises(serving_error.ServingError) as raised:
      servable.run({'examples:0': np.array([b'not an example'], object)},
                   ['scores:0'])
    self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
    self.assertIn('Could not parse example input', str(raised.exception))

  def test_callables_are_cached_per_feeds_fetches_and_deadline_bucket(self):
    servable = self._load()
    first = servable.callable_for(('x:0',), ('y:0',))
    self.assertIs(servable.callable_for(('x:0',), ('y:0',)), first)
    self.assertIsNot(servable.callable_for(('x:0',), ('total:0',)), first)
    # 3 ms and 4 ms share the 4 ms bucket; 5 ms takes the 8 ms one.
    bucket = servable.callable_for(('x:0',), ('y:0',), 0.003)
    self.assertIs(servable.callable_for(('x:0',), ('y:0',), 0.004), bucket)
    self.assertIsNot(servable.callable_for(('x:0',), ('y:0',), 0.005),
                     bucket)
    self.assertIsNot(bucket, first)

  def test_prebuild_builds_deadlines_of_sets_built_at_load_only(self):
    servable = self._load()
    servable.callable_for(('x:0',), ('y:0',))
    keys = [(('x:0',), ('y:0',), 64), (('x:0',), ('y:0',), 128),
            (('x:0',), ('total:0',), 64),  # No deadline-free callable.
            (('x:0',), ('y:0',), 256)]
    self.assertEqual(servable.prebuild(keys, limit=2), 2)
    self.assertEqual(servable.deadline_callables(), keys[:2])
    self.assertEqual(servable.prebuild(keys), 1)  # Only the one left.
    self.assertEqual(servable.deadline_callables(), [keys[0], keys[1],
                                                     keys[3]])

  def test_the_oldest_callable_is_released_past_the_limit(self):
    servable = self._load()
    with absltest.mock.patch.object(servable_lib, 'MAX_CALLABLES', 2):
      oldest = servable.callable_for(('x:0',), ('y:0',))
      servable.callable_for(('x:0',), ('total:0',))
      servable.callable_for(('x:0',), ('y:0', 'total:0'))
      self.assertIsNot(servable.callable_for(('x:0',), ('y:0',)), oldest)

  def test_close_waits_for_the_requests_holding_it(self):
    servable = self._load()
    servable.acquire()
    self.assertEqual(servable.in_use, 1)
    self.assertFalse(servable.close(0.05))
    # Still open: a request holding it keeps running.
    servable.run({'x:0': np.zeros((1, 3), np.float32)}, ['y:0'])
    closed = []
    closer = threading.Thread(target=lambda: closed.append(servable.close()))
    closer.start()
    servable.release()
    closer.join(30)
    self.assertEqual(closed, [True])
    self.assertEqual(servable.in_use, 0)
    self.assertTrue(servable.close(0))  # Closing twice is fine.

  def test_load_errors_name_the_version_and_keep_a_status_code(self):
    with self.assertRaises(servable_lib.LoadError) as raised:
      servable_lib.load('m', 7, '/nonexistent/m/7', ['serve'])
    self.assertRegex(
        str(raised.exception),
        r'^Failed to load servable \{name: m version: 7\} from '
        r'/nonexistent/m/7 with tags \{serve\}: ')
    self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
    with self.assertRaises(servable_lib.LoadError) as raised:
      servable_lib.load('m', 3, self.path, ['gpu', 'serve'])
    self.assertIn('with tags {gpu,serve}', str(raised.exception))
    self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)


class ThreadPoolsTest(absltest.TestCase):

  # Run in a new process: TensorFlow's pools exist once per process.
  _SCRIPT = textwrap.dedent("""
      import os, sys, threading
      import tensorflow as tf
      from python.serve import servable
      if sys.argv[1] == 'start':
        servable.start_thread_pools()

      def niced_first_session():
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        graph = tf.Graph()
        with graph.as_default():
          tf.constant(1.0, name='c')
        with tf.compat.v1.Session(graph=graph) as session:
          session.run('c:0')

      thread = threading.Thread(target=niced_first_session)
      thread.start()
      thread.join()
      for tid in os.listdir('/proc/self/task'):
        with open(f'/proc/self/task/{tid}/comm') as f:
          if f.read().strip() == 'tf_Compute':
            print('tf_Compute', os.getpriority(os.PRIO_PROCESS, int(tid)))
      """)

  def _pool_priorities(self, mode):
    result = subprocess.run(
        [sys.executable, '-c', self._SCRIPT, mode], capture_output=True,
        text=True, timeout=120, check=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return [int(line.split()[1]) for line in result.stdout.splitlines()
            if line.startswith('tf_Compute ')]

  def test_the_pools_keep_the_priority_of_the_thread_that_started_them(self):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    started = self._pool_priorities('start')
    self.assertNotEmpty(started)
    self.assertEqual(set(started), {base})
    # Without it, the first (niced) session's thread gives its priority to
    # the pools every later run uses.
    self.assertEqual(set(self._pool_priorities('no_start')),
                     {min(19, base + 10)})


if __name__ == '__main__':
  absltest.main()
