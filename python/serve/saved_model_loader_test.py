"""Tests for saved_model_loader: TensorFlow's C++ load steps, no wrappers.

Every bundle is loaded twice, by `saved_model_loader.load` and by
TensorFlow's Python v1 loader, and both sessions must answer the same:
TF1 bundles shaped like TF Serving's testdata (variables, a main op, an
asset), a TF1 vocabulary table filled from an asset by the main op, TF2
exports (init op signature, TF2 checkpoint), a Keras model and the stateful
counter. Then the errors TensorFlow's loader gives.
"""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import saved_model_pb2

from python.serve import saved_model_loader
from python.serve.testdata import models
from tests.testdata import tf_serving_models

_v1 = tf.compat.v1
_SERVE = ['serve']


def _write_vocab_model(export_dir: str) -> str:
  """TF1: a table filled from an asset by the main op; the asset's path kept.

  `lookup`: word string[?] -> id int64[?] (-1 if unknown); `asset_seen`
  (no inputs) -> the path the main op was fed for the asset.
  """
  source_dir = export_dir + '.src'
  os.makedirs(source_dir)
  source = os.path.join(source_dir, 'vocab.txt')
  with open(source, 'w', encoding='utf-8') as f:
    f.write('apple\nbanana\ncherry\n')
  graph = tf.Graph()
  with graph.as_default():
    asset = tf.constant(source, name='vocab_path')
    _v1.add_to_collection(_v1.GraphKeys.ASSET_FILEPATHS, asset)
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER), -1)
    seen = _v1.Variable('', name='asset_seen', trainable=False,
                        collections=[], use_resource=False)
    word = _v1.placeholder(tf.string, [None], name='word')
    ids = tf.identity(table.lookup(word), name='ids')
    seen_value = tf.identity(seen, name='seen_value')
    main_op = tf.group(_v1.tables_initializer(), seen.assign(asset))
    info = _v1.saved_model.utils.build_tensor_info
    signatures = {
        'lookup': _v1.saved_model.signature_def_utils.build_signature_def(
            {'word': info(word)}, {'id': info(ids)}, 'tensorflow/serving/predict'),
        'asset_seen': _v1.saved_model.signature_def_utils.build_signature_def(
            {}, {'path': info(seen_value)}, 'tensorflow/serving/predict'),
    }
    with _v1.Session(graph=graph) as session:
      builder = _v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          session, _SERVE, signature_def_map=signatures,
          assets_collection=_v1.get_collection(_v1.GraphKeys.ASSET_FILEPATHS),
          main_op=main_op)
      builder.save()
  os.remove(source)  # Only the bundle's copy is left.
  os.rmdir(source_dir)
  return export_dir


def _run_names(session, feeds, fetches):
  """Runs by tensor names through a callable, as the server does.

  (`Session.run` needs Python graph elements, which the fast load does not
  make.)
  """
  names = sorted(feeds)
  options = config_pb2.CallableOptions(feed=names, fetch=list(fetches))
  run = session._make_callable_from_options(options)  # pylint: disable=protected-access
  return run(*[feeds[n] for n in names])


def _run(session, meta_graph_def, signature, inputs):
  """Runs a signature by its aliases; returns alias -> value."""
  signature_def = meta_graph_def.signature_def[signature]
  aliases = sorted(signature_def.outputs)
  fetches = [signature_def.outputs[a].name for a in aliases]
  feeds = {signature_def.inputs[a].name: v for a, v in inputs.items()}
  return dict(zip(aliases, _run_names(session, feeds, fetches)))


def _example(**features) -> bytes:
  example = tf.train.Example()
  for key, values in features.items():
    example.features.feature[key].float_list.value.extend(values)
  return example.SerializeToString()


class SavedModelLoaderTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    join = lambda name: os.path.join(cls.root, name)
    cls.paths = {
        'half_plus_two': tf_serving_models.write_half_plus_two(
            join('half_plus_two')),
        'half_plus_two_tf2': tf_serving_models.write_half_plus_two_tf2(
            join('half_plus_two_tf2')),
        'counter': tf_serving_models.write_counter(join('counter')),
        'tf2_save': tf_serving_models.write_tf_saved_model_save(
            join('tf2_save')),
        'keras': tf_serving_models.write_keras_sequential(join('keras')),
        'vocab': _write_vocab_model(join('vocab')),
        'tf1_model': models.write_tf1_model(join('tf1_model'), scale=2.0),
    }

  def _both(self, key):
    """(fast, python) loads of one bundle; both closed at test end."""
    path = self.paths[key]
    fast = saved_model_loader.load(path, _SERVE)
    python = (saved_model_loader._load_python(path, _SERVE, None),  # pylint: disable=protected-access
              fast[1])
    for session, _ in (fast, python):
      self.addCleanup(session.close)
    return fast, python

  def _assert_same(self, key, requests):
    """Each (signature, inputs) answers the same under both loaders."""
    fast, python = self._both(key)
    answers = []
    for signature, inputs in requests:
      got = _run(*fast, signature, inputs)
      want = _run(*python, signature, inputs)
      self.assertEqual(sorted(got), sorted(want), signature)
      for alias in want:
        np.testing.assert_array_equal(got[alias], want[alias],
                                      err_msg=f'{key} {signature} {alias}')
      answers.append(got)
    return answers

  def test_tf1_half_plus_two_with_variables_main_op_and_asset(self):
    examples = np.array([_example(x=[4.0]), _example(x=[1.0], x2=[2.0])])
    answers = self._assert_same('half_plus_two', [
        ('serving_default', {'x': np.array([[2.0], [6.0]], np.float32)}),
        ('classify_x_to_y', {'inputs': examples}),
        ('regress_x_to_y2', {'inputs': examples}),
        ('regress_x2_to_y3', {'inputs': np.array([[2.0]], np.float32)}),
    ])
    np.testing.assert_allclose(answers[0]['y'], [[3.0], [5.0]])
    np.testing.assert_allclose(answers[2]['outputs'], [[5.0], [3.5]])
    np.testing.assert_allclose(answers[3]['outputs'], [[4.0]])

  def test_the_main_op_is_fed_the_bundles_own_asset_path(self):
    answers = self._assert_same('vocab', [
        ('lookup', {'word': np.array([b'cherry', b'apple', b'kiwi'])}),
        ('asset_seen', {}),
    ])
    np.testing.assert_array_equal(answers[0]['id'], [2, 0, -1])
    self.assertEqual(
        answers[1]['path'],
        os.fsencode(os.path.join(self.paths['vocab'], 'assets', 'vocab.txt')))

  def test_tf2_exports_run_the_init_op_signature_and_restore(self):
    answers = self._assert_same('tf2_save', [
        ('serving_default', {'x': np.array([[1.0, 2.0]], np.float32)}),
    ])
    np.testing.assert_allclose(answers[0]['y'], [[6.0, 12.0]])
    example = np.array([_example(x=[8.0])])
    answers = self._assert_same('half_plus_two_tf2', [
        ('serving_default', {'x': np.array([2.0], np.float32)}),
        ('regress_x_to_y', {'inputs': example}),
    ])
    np.testing.assert_allclose(answers[0]['y'], [3.0])
    np.testing.assert_allclose(answers[1]['outputs'], [[6.0]])

  def test_keras_and_the_servers_own_test_model(self):
    answers = self._assert_same('keras', [
        ('serving_default', {'inputs': np.array([[7.0]], np.float32)}),
    ])
    np.testing.assert_allclose(answers[0]['output_0'], [[7.0]])
    answers = self._assert_same('tf1_model', [
        ('serving_default', {'x': np.array([[1.0, 2.0, 3.0]], np.float32)}),
    ])
    np.testing.assert_allclose(answers[0]['total'], [12.0])

  def test_a_stateful_model_starts_from_its_restored_state(self):
    fast, python = self._both('counter')
    for loaded in (fast, python):
      counts = [
          _run(*loaded, 'incr_counter', {})['output'] for _ in range(3)]
      self.assertEqual(counts, [1.0, 2.0, 3.0])
      by = _run(*loaded, 'incr_counter_by', {'delta': np.float32(10)})
      self.assertEqual(by['output'], 13.0)

  def test_no_python_operation_is_made_for_the_graphs_nodes(self):
    # What the loader is for: the Python loader wraps every node.
    (fast_session, meta_graph_def), (python_session, _) = self._both(
        'half_plus_two')
    self.assertNotEmpty(meta_graph_def.graph_def.node)
    self.assertEmpty(fast_session.graph.get_operations())
    self.assertLen(python_session.graph.get_operations(),
                   len(meta_graph_def.graph_def.node))
    self.assertTrue(fast_session.graph.finalized)

  def _edited_copy(self, key, edit):
    """A copy of a bundle whose saved_model.pb `edit(saved_model)` changed."""
    path = os.path.join(tempfile.mkdtemp(dir=self.root), key)
    tf.io.gfile.makedirs(path)
    source = self.paths[key]
    for name in tf.io.gfile.listdir(source):
      name = name.rstrip('/')
      if tf.io.gfile.isdir(os.path.join(source, name)):
        tf.io.gfile.makedirs(os.path.join(path, name))
        for inner in tf.io.gfile.listdir(os.path.join(source, name)):
          tf.io.gfile.copy(os.path.join(source, name, inner),
                           os.path.join(path, name, inner))
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(source, 'saved_model.pb'), 'rb') as f:
      saved_model.ParseFromString(f.read())
    edit(saved_model)
    with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
      f.write(saved_model.SerializeToString())
    return path

  def test_missing_bundle_and_tags_fail_with_tensorflows_messages(self):
    with self.assertRaisesRegex(OSError, 'SavedModel file does not exist'):
      saved_model_loader.load(os.path.join(self.root, 'nothing'), _SERVE)
    with self.assertRaisesRegex(RuntimeError,
                                r"'gpu' could not be found.*\{'serve'\}"):
      saved_model_loader.load(self.paths['keras'], ['gpu'])

  def test_an_unregistered_op_is_not_found(self):

    def edit(saved_model):
      node = saved_model.meta_graphs[0].graph_def.node.add()
      node.name = 'custom'
      node.op = 'NoSuchCustomOp'

    with self.assertRaisesRegex(tf.errors.NotFoundError, 'NoSuchCustomOp'):
      saved_model_loader.load(self._edited_copy('half_plus_two', edit), _SERVE)

  def test_constants_without_a_value_or_size_are_refused(self):

    def no_value(saved_model):
      node = saved_model.meta_graphs[0].graph_def.node.add()
      node.name, node.op = 'empty_const', 'Const'

    def unknown_size(saved_model):
      node = saved_model.meta_graphs[0].graph_def.node.add()
      node.name, node.op = 'unsized', 'Const'
      node.attr['value'].tensor.dtype = tf.float32.as_datatype_enum
      node.attr['value'].tensor.tensor_shape.dim.add().size = -1
      node.attr['dtype'].type = tf.float32.as_datatype_enum

    with self.assertRaisesRegex(tf.errors.FailedPreconditionError,
                                '"empty_const" which is a constant tensor'):
      saved_model_loader.load(self._edited_copy('half_plus_two', no_value),
                              _SERVE)
    with self.assertRaisesRegex(tf.errors.FailedPreconditionError,
                                '"unsized" .*-1 elements'):
      saved_model_loader.load(self._edited_copy('half_plus_two', unknown_size),
                              _SERVE)

  def test_the_init_op_is_found_as_tensorflows_loader_finds_it(self):
    meta_graph_def = tf.compat.v1.MetaGraphDef()
    self.assertEqual(saved_model_loader.init_op_name(meta_graph_def), '')
    meta_graph_def.collection_def['legacy_init_op'].node_list.value.append(
        'legacy')
    self.assertEqual(saved_model_loader.init_op_name(meta_graph_def), 'legacy')
    meta_graph_def.collection_def[
        'saved_model_main_op'].node_list.value.append('main')
    self.assertEqual(saved_model_loader.init_op_name(meta_graph_def), 'main')
    meta_graph_def.signature_def['__saved_model_init_op'].outputs[
        '__saved_model_init_op'].name = 'NoOp'
    self.assertEqual(saved_model_loader.init_op_name(meta_graph_def), 'NoOp')
    del meta_graph_def.signature_def['__saved_model_init_op']
    meta_graph_def.collection_def[
        'saved_model_main_op'].node_list.value.append('second')
    with self.assertRaisesRegex(tf.errors.FailedPreconditionError,
                                'exactly one main op.*found 2'):
      saved_model_loader.init_op_name(meta_graph_def)

  def test_variables_without_a_saver_def_use_the_python_loader(self):
    # TensorFlow's Python loader builds a Saver from the variables collection
    # there; the C++ loader has no restore op to run.
    path = self._edited_copy(
        'half_plus_two',
        lambda saved_model: saved_model.meta_graphs[0].ClearField('saver_def'))
    session, _ = saved_model_loader.load(path, _SERVE)
    self.addCleanup(session.close)
    self.assertNotEmpty(session.graph.get_operations())
    self.assertEqual(
        _run_names(session, {'x:0': np.array([[2.0]], np.float32)},
                   ['y:0'])[0].tolist(), [[3.0]])


if __name__ == '__main__':
  absltest.main()
