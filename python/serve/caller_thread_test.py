"""Tests of which runs stay in the caller's thread, and that answers agree."""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from python.serve import caller_thread
from python.serve import servable as servable_lib
from tests.testdata import tf_serving_models


def _meta_graph(build) -> tf.compat.v1.MetaGraphDef:
  """A MetaGraphDef of `build()`'s graph, with its signatures."""
  graph = tf.Graph()
  with graph.as_default():
    signatures = build()
    meta = tf.compat.v1.train.export_meta_graph(graph=graph)
    for key, (inputs, outputs) in signatures.items():
      meta.signature_def[key].CopyFrom(
          tf.compat.v1.saved_model.predict_signature_def(inputs, outputs))
  return meta


def _chain(length: int):
  x = tf.compat.v1.placeholder(tf.float32, [None], name='x')
  y = x
  for _ in range(length):
    y = y + 1.0
  return {'chain': ({'x': x}, {'y': y})}


class SimpleRunsTest(absltest.TestCase):

  def test_small_signature_runs_in_caller_thread(self):
    meta = _meta_graph(lambda: _chain(3))
    runs = caller_thread.simple_runs(meta)
    self.assertEqual(list(runs), [('x:0',)])
    output = meta.signature_def['chain'].outputs['y'].name
    self.assertTrue(caller_thread.in_caller_thread(runs, ('x:0',), [output]))
    self.assertFalse(caller_thread.in_caller_thread(runs, ('z:0',), [output]))
    self.assertFalse(caller_thread.in_caller_thread(runs, ('x:0',),
                                                    [output, 'other:0']))

  def test_large_signature_keeps_the_pool(self):
    meta = _meta_graph(lambda: _chain(caller_thread.MAX_NODES))
    self.assertEqual(caller_thread.simple_runs(meta), {})
    # The same graph is simple under a higher limit.
    self.assertLen(caller_thread.simple_runs(meta, max_nodes=1000), 1)

  def test_only_the_pruned_run_counts(self):
    # A merged bundle: a large signature next to a small one. The small one's
    # run does not execute the large one's nodes.
    def build():
      signatures = _chain(caller_thread.MAX_NODES * 2)
      small = tf.compat.v1.placeholder(tf.float32, [None], name='small')
      signatures['small'] = ({'s': small}, {'t': small * 2.0})
      return signatures
    runs = caller_thread.simple_runs(_meta_graph(build))
    self.assertEqual(list(runs), [('small:0',)])

  def test_blocking_op_keeps_the_pool(self):
    def build():
      x = tf.compat.v1.placeholder(tf.float32, [], name='x')
      queue = tf.queue.FIFOQueue(2, [tf.float32])
      with tf.control_dependencies([queue.enqueue([x])]):
        y = queue.dequeue() + 1.0
      return {'queued': ({'x': x}, {'y': y})}
    self.assertEqual(caller_thread.simple_runs(_meta_graph(build)), {})

  def test_function_bodies_count(self):
    def build(width):
      @tf.function
      def body(v):
        for _ in range(width):
          v = v * 1.5
        return v
      x = tf.compat.v1.placeholder(tf.float32, [None], name='x')
      graph = tf.compat.v1.get_default_graph()
      body_fn = body.get_concrete_function(
          tf.TensorSpec([None], tf.float32))
      body_fn.add_to_graph(graph)
      y = tf.raw_ops.PartitionedCall(args=[x], Tout=[tf.float32],
                                     f=body_fn.function_def.signature.name)
      return {'f': ({'x': x}, {'y': y[0]})}
    self.assertLen(caller_thread.simple_runs(_meta_graph(lambda: build(3))),
                   1)
    self.assertEqual(
        caller_thread.simple_runs(
            _meta_graph(lambda: build(caller_thread.MAX_NODES))), {})

  def test_session_pools_are_kept(self):
    self.assertFalse(caller_thread.pool_configured(None))
    self.assertFalse(caller_thread.pool_configured(config_pb2.ConfigProto()))
    self.assertTrue(caller_thread.pool_configured(
        config_pb2.ConfigProto(inter_op_parallelism_threads=2)))
    config = config_pb2.ConfigProto()
    config.session_inter_op_thread_pool.add().num_threads = 1
    self.assertTrue(caller_thread.pool_configured(config))


class ServableTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.path = tf_serving_models.write_half_plus_two(
        os.path.join(tempfile.mkdtemp(), 'half_plus_two'))

  def _callable_pools(self, servable):
    # The RunOptions the callable of serving_default was built with.
    signature = servable.signatures['serving_default']
    feeds = (signature.inputs['x'].name,)
    fetches = (signature.outputs['y'].name,)
    return servable.in_caller_thread(feeds, fetches), feeds, fetches

  def test_half_plus_two_answers_alike_in_caller_thread_and_pool(self):
    inline = servable_lib.load('m', 1, self.path, ['serve'])
    pooled = servable_lib.load(
        'm', 1, self.path, ['serve'],
        session_config=config_pb2.ConfigProto(inter_op_parallelism_threads=1))
    try:
      in_caller, feeds, fetches = self._callable_pools(inline)
      self.assertTrue(in_caller)
      self.assertFalse(self._callable_pools(pooled)[0])
      x = np.array([[1.0], [2.0], [-7.5]], np.float32)
      for timeout_s in (None, 5.0):
        got = inline.run_sorted(feeds, [x], fetches, timeout_s)
        want = pooled.run_sorted(feeds, [x], fetches, timeout_s)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[0], x * 0.5 + 2.0)
    finally:
      inline.close()
      pooled.close()


if __name__ == '__main__':
  absltest.main()
