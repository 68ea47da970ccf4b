"""Tests for loader_harness: one version's load (retries, warmup) and unload.

On the TF1 test model of python/serve/testdata, whose warmup file replays
`bump` (a counter `count` reads), so a test sees whether warmup ran.
"""

import os
import threading
import time

from absl.testing import absltest
import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from python.serve import loader_harness
from python.serve import storage_path_source
from python.serve.testdata import models

State = loader_harness.State
_BOUND_S = 30.0


def _request(signature: str) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'm'
  request.model_spec.signature_name = signature
  return request


class _Metrics:
  """Records what the loader reports (python/serve/metrics.Metrics' API)."""

  def __init__(self):
    self.calls = []

  def record_load(self, path, ok, seconds):
    del seconds
    self.calls.append(('load', os.path.basename(path), ok))

  def record_warmup(self, path, code, seconds):
    del seconds
    self.calls.append(('warmup', os.path.basename(path), code))


class _Source(storage_path_source.StoragePathSource):
  """The real source, recording evictions."""

  def __init__(self):
    super().__init__()
    self.evicted = []

  def evict(self, path):
    self.evicted.append(path)
    super().evict(path)


class LoaderTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = os.path.join(absltest.get_default_test_tmpdir(), 'm')
    cls.good = models.write_tf1_model(os.path.join(cls.base, '1'))

  def _loader(self, stopping=None, **options):
    self.metrics = _Metrics()
    self.source = _Source()
    self.addCleanup(self.source.close)
    options.setdefault('load_retry_interval_seconds', 0.0)
    return loader_harness.Loader(
        loader_harness.LoadOptions(metrics=self.metrics, **options),
        self.source, None, stopping or threading.Event())

  def _count(self, servable) -> int:
    (count,) = servable.run({}, ['count:0'])
    return int(count)

  def test_a_loaded_version_is_prepared_and_warmed_up(self):
    loaded, error = self._loader().load('m', 1, self.good)
    self.addCleanup(loaded.close, 10)
    self.assertIsNone(error)
    self.assertEqual((loaded.name, loaded.version), ('m', 1))
    self.assertEqual(self._count(loaded), models.WARMUP_RECORDS)
    self.assertIn('serving_default', loaded.plans)  # inference.prepare ran.
    self.assertEqual(self.metrics.calls, [('load', '1', True),
                                          ('warmup', '1', grpc.StatusCode.OK)])

  def test_warmup_can_be_off(self):
    loaded, _ = self._loader(enable_model_warmup=False).load('m', 1,
                                                             self.good)
    self.addCleanup(loaded.close, 10)
    self.assertEqual(self._count(loaded), 0)
    self.assertEqual(self.metrics.calls, [('load', '1', True)])

  def test_the_replaced_versions_deadline_callables_are_built_at_load(self):
    old, _ = self._loader(enable_model_warmup=False).load('m', 1, self.good)
    self.addCleanup(old.close, 10)
    old.run({'x:0': np.ones((1, 3), np.float32)}, ['total:0', 'y:0'],
            timeout_s=2.0)
    asked = old.deadline_callables()
    self.assertEqual(asked, [(('x:0',), ('total:0', 'y:0'), 2048)])
    new, _ = self._loader(enable_model_warmup=False).load(
        'm', 2, self.good, asked)
    self.addCleanup(new.close, 10)
    self.assertEqual(new.deadline_callables(), asked)

  def test_a_failing_load_is_retried_then_reported(self):
    bad = os.path.join(self.create_tempdir().full_path, '4')
    os.makedirs(bad)
    with open(os.path.join(bad, 'saved_model.pb'), 'wb') as f:
      f.write(b'garbage')
    loaded, error = self._loader(max_num_load_retries=2).load('m', 4, bad)
    self.assertIsNone(loaded)
    self.assertRegex(error.message,
                     r'^Failed to load servable \{name: m version: 4\} from ')
    self.assertEqual(self.metrics.calls, [('load', '4', False)] * 3)
    self.assertEqual(self.source.evicted, [bad] * 3)

  def test_a_failing_warmup_fails_the_load(self):
    path = models.write_tf1_model(
        os.path.join(self.create_tempdir().full_path, '2'), warmup=False)
    models.write_warmup_file(path, [_request('no_such')])
    loaded, error = self._loader(max_num_load_retries=0).load('m', 2, path)
    self.assertIsNone(loaded)
    self.assertEqual(error.code, grpc.StatusCode.FAILED_PRECONDITION)
    self.assertRegex(error.message,
                     r'^Failed to warm up \{name: m version: 2\}: Warmup '
                     r'record 0')
    self.assertEqual(self.metrics.calls,
                     [('load', '2', True),
                      ('warmup', '2', grpc.StatusCode.FAILED_PRECONDITION)])

  def test_stopping_ends_the_retries(self):
    stopping = threading.Event()
    loader = self._loader(stopping, max_num_load_retries=100,
                          load_retry_interval_seconds=3600)
    timer = threading.Timer(0.2, stopping.set)
    timer.start()
    self.addCleanup(timer.cancel)
    start = time.monotonic()
    loaded, error = loader.load('m', 9, '/nonexistent/m/9')
    self.assertLess(time.monotonic() - start, _BOUND_S)
    self.assertIsNone(loaded)
    self.assertEqual(error.code, grpc.StatusCode.NOT_FOUND)
    self.assertLen(self.metrics.calls, 1)

  def test_unload_closes_the_version_and_deletes_its_copy(self):
    loader = self._loader()
    loaded, _ = loader.load('m', 1, self.good)
    harness = loader_harness.LoaderHarness(
        version=1, path=self.good, state=State.UNLOADING, servable=loaded)
    loaded.acquire()
    closer = threading.Thread(target=loader.unload, args=(harness,))
    closer.start()
    closer.join(0.1)
    self.assertTrue(closer.is_alive())  # Waits for the request holding it.
    loaded.release()
    closer.join(_BOUND_S)
    self.assertFalse(closer.is_alive())
    self.assertEqual(self.source.evicted, [self.good])
    self.assertTrue(loaded.close(0))


if __name__ == '__main__':
  absltest.main()
