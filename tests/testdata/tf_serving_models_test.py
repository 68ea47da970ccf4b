"""The TF-Serving-shaped bundles have the structure and answers documented."""

import os

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tests.testdata import tf_serving_models

_v1 = tf.compat.v1


def _example(**features) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
      for k, v in features.items()
  })).SerializeToString()


class _Loaded:
  """A TF1 bundle loaded under `serve` into its own session."""

  def __init__(self, export_dir):
    self.graph = tf.Graph()
    self.sess = _v1.Session(graph=self.graph)
    self.meta = _v1.saved_model.loader.load(self.sess, ['serve'], export_dir)

  def run(self, signature, outputs, feeds):
    sig = self.meta.signature_def[signature]
    fetches = [sig.outputs[k].name for k in outputs]
    return self.sess.run(
        fetches, {sig.inputs[k].name: v for k, v in feeds.items()})

  def close(self):
    self.sess.close()


class TfServingModelsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.base = absltest.get_default_test_tmpdir()
    cls.h2 = tf_serving_models.write_half_plus_two(
        os.path.join(cls.base, 'half_plus_two'))
    cls.h3 = tf_serving_models.write_half_plus_two(
        os.path.join(cls.base, 'half_plus_three'), b=3.0)
    cls.counter = tf_serving_models.write_counter(
        os.path.join(cls.base, 'counter'))
    cls.tf2 = tf_serving_models.write_half_plus_two_tf2(
        os.path.join(cls.base, 'half_plus_two_tf2'))

  def test_half_plus_two_layout_and_signatures(self):
    self.assertEqual(os.path.basename(self.h2), '00000123')
    self.assertEqual(int(os.path.basename(self.h2)), tf_serving_models.VERSION)
    with open(os.path.join(self.h2, 'assets', 'foo.txt')) as f:
      self.assertEqual(f.read(), tf_serving_models.ASSET_CONTENTS)
    model = _Loaded(self.h2)
    self.addCleanup(model.close)
    self.assertCountEqual(model.meta.signature_def,
                          tf_serving_models.HALF_PLUS_TWO_SIGNATURES)
    ops = {n.op for n in model.meta.graph_def.node}
    self.assertIn('ParseExample', ops)  # the v1 op, keys as Const inputs
    self.assertNotIn('ParseExampleV2', ops)
    self.assertIn('VariableV2', ops)
    x = model.meta.signature_def['serving_default'].inputs['x']
    self.assertEqual([d.size for d in x.tensor_shape.dim], [-1, 1])
    self.assertEqual(model.meta.signature_def['classify_x_to_y'].method_name,
                     tf.saved_model.CLASSIFY_METHOD_NAME)
    # The main op assigned the asset's name.
    self.assertEqual(model.sess.run('filename_tensor:0'), b'foo.txt')

  def test_half_plus_two_answers(self):
    model = _Loaded(self.h2)
    self.addCleanup(model.close)
    (y,) = model.run('serving_default', ['y'], {'x': [[2.0]]})
    np.testing.assert_array_equal(y, [[3.0]])
    examples = [_example(x=[2.0]), _example(x=[4.0], x2=[1.0])]
    (scores,) = model.run('classify_x_to_y', ['scores'], {'inputs': examples})
    np.testing.assert_array_equal(scores, [[3.0], [4.0]])
    (y2,) = model.run('regress_x_to_y2', ['outputs'], {'inputs': examples})
    np.testing.assert_array_equal(y2, [[4.0], [5.0]])
    (y3,) = model.run('regress_x2_to_y3', ['outputs'], {'inputs': [[1.0]]})
    np.testing.assert_array_equal(y3, [[3.5]])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'Feature: x .* is required'):
      model.run('regress_x_to_y', ['outputs'], {'inputs': [_example(x2=[1.0])]})

  def test_half_plus_two_accepts_rank_one_x_without_python_shape_check(self):
    # TF Serving's canonical Predict feeds x=[2.0] of shape [1] into the
    # [None, 1] tensor; the C++ session (here: a callable) does not check it.
    model = _Loaded(self.h2)
    self.addCleanup(model.close)
    from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
    run = model.sess._make_callable_from_options(  # pylint: disable=protected-access
        config_pb2.CallableOptions(feed=['x:0'], fetch=['y:0']))
    (y,) = run(np.array([2.0], np.float32))
    np.testing.assert_array_equal(y, [3.0])

  def test_half_plus_three(self):
    model = _Loaded(self.h3)
    self.addCleanup(model.close)
    (y,) = model.run('serving_default', ['y'], {'x': [[2.0]]})
    np.testing.assert_array_equal(y, [[4.0]])

  def test_counter_is_stateful_and_delta_has_unknown_rank(self):
    model = _Loaded(self.counter)
    self.addCleanup(model.close)
    self.assertCountEqual(model.meta.signature_def,
                          tf_serving_models.COUNTER_SIGNATURES)
    delta = model.meta.signature_def['incr_counter_by'].inputs['delta']
    self.assertTrue(delta.tensor_shape.unknown_rank)
    self.assertEqual(model.run('incr_counter', ['output'], {}), [1.0])
    self.assertEqual(model.run('incr_counter_by', ['output'],
                               {'delta': 2.5}), [3.5])
    self.assertEqual(model.run('get_counter', ['output'], {}), [3.5])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'must be the same size'):
      model.run('incr_counter_by', ['output'], {'delta': [1.0]})
    self.assertEqual(model.run('reset_counter', ['output'], {}), [0.0])

  def test_half_plus_two_tf2(self):
    loaded = tf.saved_model.load(self.tf2)
    self.assertCountEqual(loaded.signatures,
                          tf_serving_models.HALF_PLUS_TWO_TF2_SIGNATURES)
    y = loaded.signatures['serving_default'](x=tf.constant([2.0]))['y']
    np.testing.assert_array_equal(y.numpy(), [3.0])
    scores = loaded.signatures['classify_x_to_y'](
        inputs=tf.constant([_example(x=[2.0])]))['scores']
    np.testing.assert_array_equal(scores.numpy(), [[3.0]])
    out = loaded.signatures['regress_x2_to_y3'](inputs=tf.constant([1.0]))
    np.testing.assert_array_equal(out['outputs'].numpy(), [3.5])

  def test_model_config(self):
    path = tf_serving_models.write_model_config(
        os.path.join(self.base, 'models.config'),
        {'half_plus_two': '/m/h2', 'half_plus_three': '/m/h3'})
    from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
    from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
      text_format.Parse(f.read(), config)
    self.assertEqual([(c.name, c.base_path)
                      for c in config.model_config_list.config],
                     [('half_plus_two', '/m/h2'), ('half_plus_three', '/m/h3')])

  def test_refuses_existing_version(self):
    with self.assertRaises(FileExistsError):
      tf_serving_models.write_counter(os.path.join(self.base, 'counter'))


if __name__ == '__main__':
  absltest.main()
