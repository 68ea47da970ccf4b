"""Unit tests of version discovery, version policy, config validation, and
of stopping: bounded waits for requests and for start-up."""

import os
import threading
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
from google.protobuf import text_format
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from python.serve import load_priority
from python.serve import model_manager
from python.serve import servable as servable_lib
from python.serve.testdata import models


def _config(text: str) -> model_manager.ModelConfig:
  return text_format.Parse(text, model_manager.ModelConfig())


def _config_list(text: str) -> model_manager.ModelConfigList:
  return text_format.Parse(text, model_manager.ModelConfigList())


_ON_DISK = {1: '/m/1', 2: '/m/2', 5: '/m/5', 10: '/m/10'}


_AVAILABLE = model_manager.State.AVAILABLE
_END = model_manager.State.END
_LOAD = model_manager.LOAD
_UNLOAD = model_manager.UNLOAD


class NextActionTest(parameterized.TestCase):
  """The availability-preserving policy, without loading anything."""

  @parameterized.named_parameters(
      ('first_load_is_the_newest', {1, 2}, {}, (_LOAD, 2)),
      ('then_the_next', {1, 2}, {2: _AVAILABLE}, (_LOAD, 1)),
      ('all_served', {1, 2}, {1: _AVAILABLE, 2: _AVAILABLE}, None),
      ('new_version_loads_before_the_old_unloads', {2}, {1: _AVAILABLE},
       (_LOAD, 2)),
      ('old_version_unloads_once_the_new_serves', {2},
       {1: _AVAILABLE, 2: _AVAILABLE}, (_UNLOAD, 1)),
      ('a_failed_load_keeps_the_old_version', {2},
       {1: _AVAILABLE, 2: _END}, None),
      ('a_removed_model_unloads', set(), {1: _AVAILABLE}, (_UNLOAD, 1)),
      ('of_two_unaspired_the_oldest_unloads', {3},
       {1: _AVAILABLE, 2: _AVAILABLE}, (_UNLOAD, 1)),
      ('a_loading_version_is_not_loaded_again', {2},
       {1: _AVAILABLE, 2: model_manager.State.LOADING}, None),
      ('nothing_to_do', set(), {}, None),
  )
  def test_next_action(self, aspired, states, expected):
    self.assertEqual(model_manager.next_action(aspired, states), expected)


class AspiredVersionsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('default_is_latest_one', 'name: "m" base_path: "/m"', [10]),
      ('latest_two', 'name: "m" base_path: "/m" model_version_policy '
       '{ latest { num_versions: 2 } }', [5, 10]),
      ('all', 'name: "m" base_path: "/m" model_version_policy { all {} }',
       [1, 2, 5, 10]),
      ('specific_present_only', 'name: "m" base_path: "/m" '
       'model_version_policy { specific { versions: 2 versions: 7 } }', [2]),
  )
  def test_policy(self, config_text, expected):
    aspired = model_manager.aspired_versions(_config(config_text), _ON_DISK)
    self.assertEqual(sorted(aspired), expected)
    for version in expected:
      self.assertEqual(aspired[version], _ON_DISK[version])

  def test_latest_of_nothing_is_nothing(self):
    self.assertEqual(
        model_manager.aspired_versions(_config('name: "m"'), {}), {})


class ListVersionsTest(absltest.TestCase):

  def test_only_numeric_directories_are_versions(self):
    # TF Serving's ParseVersionNumber (safe_strto64): 010 is 10, -6 is -6.
    base = self.create_tempdir()
    for name in ('1', '20', '010', '.tmp-3', 'staging_4', '5a', '-6', '+8'):
      base.mkdir(name)
    base.create_file('7')  # A file, not a directory.
    versions = model_manager.list_versions(base.full_path)
    self.assertEqual(versions, {1: os.path.join(base.full_path, '1'),
                                10: os.path.join(base.full_path, '010'),
                                20: os.path.join(base.full_path, '20'),
                                -6: os.path.join(base.full_path, '-6')})

  def test_missing_base_path_raises(self):
    missing = os.path.join(self.create_tempdir().full_path, 'nope')
    with self.assertRaisesRegex(FileNotFoundError, 'nope'):
      model_manager.list_versions(missing)


class ValidateConfigListTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('relative_path', 'config { name: "a" base_path: "models/a" }',
       r'Expected model a to have an absolute path or URI; got '
       r'base_path\(\)=models/a'),
      ('duplicate', 'config { name: "a" base_path: "/a" } '
       'config { name: "a" base_path: "/b" }',
       'Illegal to list model a multiple times in config list'),
      ('no_name', 'config { base_path: "/a" }', "no name.*'/a'"),
      ('other_platform',
       'config { name: "a" base_path: "/a" model_platform: "onnx" }',
       'Model a requested model_platform "onnx"'),
  )
  def test_rejects(self, text, message):
    with self.assertRaisesRegex(model_manager.ConfigError, message):
      model_manager.validate_config_list(_config_list(text))

  def test_accepts_paths_and_uris(self):
    model_manager.validate_config_list(_config_list(
        'config { name: "a" base_path: "/abs/a" model_platform: "tensorflow" }'
        ' config { name: "b" base_path: "gs://bucket/b" }'))


class CheckVersionLabelsTest(parameterized.TestCase):
  """ServerCore::UpdateModelVersionLabelMap's rules; available: 1 and 2."""

  @parameterized.named_parameters(
      ('available', {'stable': 1, 'canary': 2}, {}, False),
      ('new_label_unavailable_allowed', {'canary': 3}, {'stable': 1}, True),
      ('unchanged_label_unavailable_allowed', {'canary': 3}, {'canary': 3},
       True),
      ('moved_label_to_available_allowed', {'stable': 2}, {'stable': 1},
       True),
  )
  def test_accepts(self, labels, current, allow):
    model_manager.check_version_labels('m', labels, current, [1, 2], allow)

  @parameterized.named_parameters(
      ('unavailable', {'canary': 3}, {}, False,
       r'Request to assign label "canary" to version 3 of model m, which is '
       r'not currently available for inference\. Available versions: '
       r'\[1, 2\]\.$'),
      ('moved_label_to_unavailable_even_when_allowed', {'stable': 3},
       {'stable': 1}, True,
       r'label "stable" to version 3 .* Label "stable" is in use \(version '
       r'1\), so --allow_version_labels_for_unavailable_models does not '
       r'apply'),
  )
  def test_rejects(self, labels, current, allow, message):
    with self.assertRaisesRegex(model_manager.ModelsUnavailableError,
                                message):
      model_manager.check_version_labels('m', labels, current, [1, 2], allow)


class StopTest(absltest.TestCase):

  def test_servable_close_waits_for_requests_up_to_timeout(self):
    session = tf.compat.v1.Session(graph=tf.Graph())
    servable = servable_lib.Servable('m', 1, '/m/1', session,
                                     meta_graph_pb2.MetaGraphDef())
    servable.acquire()
    self.assertFalse(servable.close(timeout_s=0.01))
    self.assertEqual(servable.in_use, 1)
    self.assertFalse(session._closed)  # pylint: disable=protected-access
    servable.release()
    self.assertTrue(servable.close(timeout_s=0.01))
    self.assertTrue(session._closed)  # pylint: disable=protected-access
    self.assertTrue(servable.close())  # Again: already closed.

  def test_stop_ends_a_reload_config_waiting_for_versions(self):
    # No version ever appears under the base path, so start-up would wait
    # forever; stop() must end that wait with a clear error.
    base = self.create_tempdir().full_path
    manager = model_manager.ModelManager(model_manager.ManagerOptions(
        file_system_poll_wait_seconds=0.05))
    manager.start()
    errors = []

    def reload():
      try:
        manager.reload_config(
            _config_list(f'config {{ name: "m" base_path: "{base}" }}'))
      except model_manager.ModelsUnavailableError as e:
        errors.append(str(e))

    waiter = threading.Thread(target=reload)
    waiter.start()
    self.addCleanup(waiter.join)
    waiter.join(0.3)
    self.assertTrue(waiter.is_alive(), errors)
    self.assertTrue(manager.stop(timeout_s=30))
    waiter.join(30)
    self.assertFalse(waiter.is_alive())
    self.assertLen(errors, 1)
    self.assertRegex(errors[0], r"Server stopping before models \['m'\]")


class LoadPriorityTest(absltest.TestCase):
  """Loads run at the serving priority; only their GIL-free steps niced."""

  def test_loads_keep_the_priority_and_build_callables_niced(self):
    base_priority = os.getpriority(os.PRIO_PROCESS, 0)
    base = self.create_tempdir().full_path
    models.write_tf1_model(os.path.join(base, '1'), warmup=False)
    niced_calls = []
    run_niced = load_priority.run_niced

    def recording(fn, *args):
      niced_calls.append((getattr(fn, '__name__', ''),
                          threading.get_native_id()))
      return run_niced(fn, *args)

    self.enter_context(mock.patch.object(load_priority, 'run_niced',
                                         recording))
    manager = model_manager.ModelManager(model_manager.ManagerOptions(
        file_system_poll_wait_seconds=0.05, num_load_threads=1))
    manager.start()
    self.addCleanup(manager.stop, 30)
    manager.reload_config(
        _config_list(f'config {{ name: "m" base_path: "{base}" }}'))
    loader = manager._load_pool.submit(threading.get_native_id).result(30)  # pylint: disable=protected-access
    for tid in (loader, manager._thread.native_id, 0):  # pylint: disable=protected-access
      self.assertEqual(os.getpriority(os.PRIO_PROCESS, tid), base_priority)
    # Restore, init op and every signature's callable were built niced,
    # asked for by the load thread.
    names = [name for name, _ in niced_calls]
    self.assertIn('_make_callable_from_options', names)
    self.assertGreaterEqual(len(names), 2)
    self.assertEqual({tid for _, tid in niced_calls}, {loader})
    worker = load_priority.worker_native_id()
    self.assertEqual(os.getpriority(os.PRIO_PROCESS, worker),
                     min(19, base_priority + load_priority.NICENESS))


if __name__ == '__main__':
  absltest.main()
