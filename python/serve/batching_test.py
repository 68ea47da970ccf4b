"""Tests of TF Serving's batching semantics on a fake session (no TensorFlow).

The "session" is numpy: y = 2 * x + row, so every answer depends on its own
row only and the tests can tell batched answers from unbatched ones.
"""

import threading
import time

from absl.testing import absltest
from absl.testing import parameterized
import grpc
import numpy as np

from python.serve import batching
from python.serve import serving_error


def _params(text: str):
  return batching.parse_batching_parameters(text, 'test.pbtxt')


def _options(text: str) -> batching.QueueOptions:
  return batching.queue_options(_params(text), 'test.pbtxt')


class _FakeSession:
  """Records each batched run; can hold the first run until released."""

  def __init__(self, hold_first: bool = False):
    self.batches = []
    self.lock = threading.Lock()
    self.started = threading.Event()
    self.release = threading.Event()
    if not hold_first:
      self.release.set()

  def run(self, feeds, values, fetches, unused_timeout_s):
    with self.lock:
      self.batches.append([v.shape for v in values])
    self.started.set()
    self.release.wait(10)
    x = values[0]
    if fetches == ('scalar',):
      return [np.float32(1.0)]
    return [x * 2 + 1 for _ in fetches]


class ParametersTest(parameterized.TestCase):

  def test_text_format_with_wrappers(self):
    params = _params('max_batch_size { value: 8 }\n'
                     'batch_timeout_micros { value: 500 }\n'
                     'max_enqueued_batches { value: 3 }\n'
                     'num_batch_threads { value: 4 }\n'
                     'thread_pool_name { value: "pool" }\n'
                     'allowed_batch_sizes: 2 allowed_batch_sizes: 8\n'
                     'pad_variable_length_inputs: true\n')
    self.assertEqual(
        batching.queue_options(params),
        batching.QueueOptions(max_batch_size=8, batch_timeout_micros=500,
                              max_enqueued_batches=3,
                              allowed_batch_sizes=(2, 8),
                              pad_variable_length_inputs=True,
                              max_execution_batch_size=8))
    self.assertEqual(batching.scheduler_options(params),
                     batching.SchedulerOptions(4, 'pool'))

  def test_defaults_are_tf_servings(self):
    options = _options('')
    self.assertEqual((options.max_batch_size, options.batch_timeout_micros,
                      options.max_enqueued_batches), (1000, 0, 10))
    self.assertEqual(
        batching.scheduler_options(
            batching.default_batching_parameters()).thread_pool_name,
        'model_server_batch_threads')

  def test_unknown_field_names_the_fields(self):
    with self.assertRaisesRegex(
        batching.BatchingConfigError,
        r"Error parsing text-format tensorflow.serving.BatchingParameters: "
        r".*max_batch_sise.*Invalid protobuf file: 'test.pbtxt'. Fields: "
        r"max_batch_size, "):
      _params('max_batch_sise { value: 8 }')

  def test_unwrapped_value_is_a_parse_error(self):
    with self.assertRaisesRegex(batching.BatchingConfigError,
                                r'written `max_batch_size \{ value: 128 \}`'):
      _params('max_batch_size: 8')

  @parameterized.named_parameters(
      ('last_allowed_not_max',
       'max_batch_size { value: 16 } allowed_batch_sizes: 4 '
       'allowed_batch_sizes: 8',
       r'Last entry in allowed_batch_sizes must match max_batch_size; last '
       r'entry was 8; expected 16'),
      ('last_allowed_not_default_max', 'allowed_batch_sizes: 8',
       r'Last entry .* last entry was 8; expected 1000'),
      ('not_increasing',
       'max_batch_size { value: 8 } allowed_batch_sizes: 4 '
       'allowed_batch_sizes: 4 allowed_batch_sizes: 8',
       r'allowed_batch_sizes entries must be monotonically increasing'),
      ('non_positive_max', 'max_batch_size { value: 0 }',
       r'max_batch_size must be positive; was 0'),
      ('negative_timeout', 'batch_timeout_micros { value: -1 }',
       r'batch_timeout_micros must be non-negative; was -1'),
      ('negative_queue', 'max_enqueued_batches { value: -2 }',
       r'max_enqueued_batches must be non-negative; was -2'),
  )
  def test_invalid_queue_options(self, text, message):
    with self.assertRaisesRegex(batching.BatchingConfigError,
                                r'^test.pbtxt: ' + message):
      _options(text)

  def test_threads_must_be_positive(self):
    with self.assertRaisesRegex(batching.BatchingConfigError,
                                r'num_batch_threads must be positive; was 0'):
      batching.scheduler_options(_params('num_batch_threads { value: 0 }'))

  def test_per_model_file(self):
    common = _params('max_batch_size { value: 4 }')
    version_dir = self.create_tempdir()
    self.assertIs(batching.per_model_batching_parameters(
        version_dir.full_path, common, False), common)
    self.assertIsNone(batching.per_model_batching_parameters(
        version_dir.full_path, common, True))
    version_dir.create_file(batching.PER_MODEL_FILENAME,
                            'max_batch_size { value: 10 }')
    params = batching.per_model_batching_parameters(
        version_dir.full_path, common, True)
    self.assertEqual(batching.queue_options(params).max_batch_size, 10)


class BatchingSessionTest(absltest.TestCase):

  def _session(self, text: str, fake: _FakeSession, threads: int = 1):
    scheduler = batching.SharedBatchScheduler(
        batching.SchedulerOptions(num_batch_threads=threads))
    self.addCleanup(scheduler.stop)
    session = batching.BatchingSession(scheduler, _options(text), fake.run)
    self.addCleanup(session.close)
    return session

  def _run_all(self, session, inputs, fetches=('y',)):
    """Runs each input from its own thread; returns results or errors."""
    results = [None] * len(inputs)

    def call(i):
      try:
        results[i] = session.run(('x',), [inputs[i]], fetches, 10)
      except serving_error.ServingError as e:
        results[i] = e

    threads = [threading.Thread(target=call, args=(i,))
               for i in range(len(inputs))]
    for t in threads:
      t.start()
    for t in threads:
      t.join(20)
    return results

  def _held_batch(self, session, fake, inputs):
    """Runs a first call that holds the batch thread, then `inputs`."""
    first = threading.Thread(
        target=lambda: session.run(('x',), [np.zeros([1, 1], np.float32)],
                                   ('y',), 10))
    first.start()
    self.assertTrue(fake.started.wait(10))
    results = [None] * len(inputs)

    def call(i):
      try:
        results[i] = session.run(('x',), [inputs[i]], ('y',), 10)
      except serving_error.ServingError as e:
        results[i] = e

    threads = [threading.Thread(target=call, args=(i,))
               for i in range(len(inputs))]
    for t in threads:
      t.start()
    deadline = time.monotonic() + 10
    while (time.monotonic() < deadline and
           self._queued(session) + sum(r is not None for r in results) <
           len(inputs)):
      time.sleep(0.01)
    fake.release.set()
    first.join(10)
    for t in threads:
      t.join(10)
    return results

  @staticmethod
  def _queued(session) -> int:
    queue = next(iter(session._queues.values()))  # pylint: disable=protected-access
    return sum(len(b.tasks) for b in queue._batches)  # pylint: disable=protected-access

  def test_queued_calls_share_one_run_and_get_their_own_rows(self):
    fake = _FakeSession(hold_first=True)
    session = self._session('max_batch_size { value: 8 }', fake)
    inputs = [np.full([n, 1], float(i), np.float32)
              for i, n in enumerate([1, 2, 1, 3])]
    results = self._held_batch(session, fake, inputs)
    for x, result in zip(inputs, results):
      np.testing.assert_array_equal(result[0], x * 2 + 1)
    # The first call ran alone; the four queued ones in one batch of 7 rows.
    self.assertEqual(fake.batches, [[(1, 1)], [(7, 1)]])

  def test_padding_to_allowed_batch_sizes(self):
    fake = _FakeSession(hold_first=True)
    session = self._session(
        'max_batch_size { value: 8 } allowed_batch_sizes: 4 '
        'allowed_batch_sizes: 8', fake)
    inputs = [np.full([n, 1], float(i + 1), np.float32)
              for i, n in enumerate([2, 3])]
    results = self._held_batch(session, fake, inputs)
    self.assertEqual(fake.batches, [[(4, 1)], [(8, 1)]])
    for x, result in zip(inputs, results):
      np.testing.assert_array_equal(result[0], x * 2 + 1)

  def test_full_queue_answers_unavailable(self):
    fake = _FakeSession(hold_first=True)
    session = self._session(
        'max_batch_size { value: 1 } max_enqueued_batches { value: 1 }',
        fake)
    inputs = [np.ones([1, 1], np.float32) for _ in range(2)]
    results = self._held_batch(session, fake, inputs)
    errors = [r for r in results if isinstance(r, serving_error.ServingError)]
    self.assertLen(errors, 1)
    self.assertEqual(errors[0].code, grpc.StatusCode.UNAVAILABLE)
    self.assertEqual(errors[0].message, batching.QUEUE_FULL_MESSAGE)

  def test_task_larger_than_max_batch_size(self):
    session = self._session('max_batch_size { value: 2 }', _FakeSession())
    with self.assertRaisesRegex(serving_error.ServingError,
                                'Task size 3 is larger than maximum batch '
                                'size 2'):
      session.run(('x',), [np.ones([3], np.float32)], ('y',))

  def test_large_batch_splitting(self):
    fake = _FakeSession()
    session = self._session(
        'max_batch_size { value: 8 } enable_large_batch_splitting '
        '{ value: true } max_execution_batch_size { value: 2 }', fake)
    x = np.arange(5, dtype=np.float32).reshape([5, 1])
    [y] = session.run(('x',), [x], ('y',))
    np.testing.assert_array_equal(y, x * 2 + 1)
    self.assertTrue(all(shape[0][0] <= 2 for shape in fake.batches))

  def test_tf_servings_input_errors(self):
    session = self._session('', _FakeSession())
    for values, message in (
        ([], 'must have at least one input tensor'),
        ([np.ones([])], 'input tensors must have at least one dimension'),
        ([np.ones([1]), np.ones([2])],
         'input tensors must have equal 0th-dimension size')):
      with self.subTest(message):
        with self.assertRaisesRegex(serving_error.ServingError,
                                    'Batching Run\\(\\) ' + message) as cm:
          session.run(tuple('ab'[:len(values)]), values, ('y',))
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

  def test_scalar_output_fails_precondition(self):
    session = self._session('', _FakeSession())
    with self.assertRaisesRegex(serving_error.ServingError,
                                'Batched output tensor has 0 dimensions'):
      session.run(('x',), [np.ones([1])], ('scalar',))

  def test_shapes_that_do_not_merge_run_alone(self):
    fake = _FakeSession(hold_first=True)
    session = self._session('max_batch_size { value: 8 }', fake)
    inputs = [np.ones([1, 2], np.float32), np.ones([1, 3], np.float32)]
    results = self._held_batch(session, fake, inputs)
    for x, result in zip(inputs, results):
      np.testing.assert_array_equal(result[0], x * 2 + 1)
    self.assertCountEqual(fake.batches[1:], [[(1, 2)], [(1, 3)]])

  def test_pad_variable_length_inputs_pads_with_the_first_value(self):
    fake = _FakeSession(hold_first=True)
    session = self._session(
        'max_batch_size { value: 8 } pad_variable_length_inputs: true', fake)
    inputs = [np.array([[5.0, 6.0]], np.float32),
              np.array([[7.0, 8.0, 9.0]], np.float32)]
    results = self._held_batch(session, fake, inputs)
    self.assertEqual(fake.batches[1], [(2, 3)])
    by_first = {float(r[0][0, 0]): r[0] for r in results}
    np.testing.assert_array_equal(by_first[11.0], [[11.0, 13.0, 11.0]])
    np.testing.assert_array_equal(by_first[15.0], [[15.0, 17.0, 19.0]])

  def test_expired_in_queue_is_resource_exhausted(self):
    fake = _FakeSession(hold_first=True)
    session = self._session('', fake)
    first = threading.Thread(
        target=lambda: session.run(('x',), [np.ones([1])], ('y',), 10))
    first.start()
    self.assertTrue(fake.started.wait(10))
    result = []

    def late():
      try:
        session.run(('x',), [np.ones([1])], ('y',), 0.05)
      except serving_error.ServingError as e:
        result.append(e)

    thread = threading.Thread(target=late)
    thread.start()
    time.sleep(0.3)
    fake.release.set()
    thread.join(10)
    first.join(10)
    self.assertLen(result, 1)
    self.assertEqual(result[0].code, grpc.StatusCode.RESOURCE_EXHAUSTED)
    self.assertIn('timeout exceeded while waiting in batching queue',
                  result[0].message)

  def test_batch_timeout_waits_for_more_tasks(self):
    fake = _FakeSession()
    session = self._session(
        'max_batch_size { value: 4 } batch_timeout_micros { value: 2000000 }',
        fake)
    inputs = [np.full([1, 1], float(i), np.float32) for i in range(4)]
    start = time.monotonic()
    results = self._run_all(session, inputs)
    # Four tasks fill the batch before the 2 s timeout closes it.
    self.assertLess(time.monotonic() - start, 1.9)
    self.assertEqual(fake.batches, [[(4, 1)]])
    for x, result in zip(inputs, results):
      np.testing.assert_array_equal(result[0], x * 2 + 1)

  def test_queues_per_signature_share_the_pool(self):
    fake = _FakeSession()
    scheduler = batching.SharedBatchScheduler(
        batching.SchedulerOptions(num_batch_threads=2))
    sessions = [batching.BatchingSession(scheduler, _options(''), fake.run)
                for _ in range(2)]
    sessions[0].add_signature(('x',), ('y',))
    sessions[0].add_signature(('x',), ('y', 'z'))
    sessions[1].add_signature(('x',), ('y',))
    self.assertEqual(scheduler.num_queues, 3)
    y, z = sessions[0].run(('x',), [np.ones([1])], ('y', 'z'))
    np.testing.assert_array_equal(y, [3.0])
    np.testing.assert_array_equal(z, [3.0])
    for session in sessions:
      session.close()
    self.assertEqual(scheduler.num_queues, 0)
    scheduler.stop()
    with self.assertRaisesRegex(serving_error.ServingError, 'being unloaded'):
      sessions[0].run(('q',), [np.ones([1])], ('y',))


if __name__ == '__main__':
  absltest.main()
