"""Tests for client/example_features.py on TF-Serving-shaped bundles."""

import os

from absl.testing import absltest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import prediction_log_pb2

from client import example_features
from tests.testdata import tf_serving_models

Feature = example_features.Feature
_MISSING_X = ("Graph execution error:\n\nDetected at node 'ParseExample'\n"
              "Name: <unknown>, Feature: x (data type: float) is required but "
              "could not be found.\n\t [[{{node ParseExample}}]]")


class BundleTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = absltest.get_default_test_tmpdir()
    cls.tf1_base = os.path.join(tmp, "half_plus_two")
    cls.tf1 = tf_serving_models.write_half_plus_two(cls.tf1_base)
    cls.tf2 = tf_serving_models.write_half_plus_two_tf2(
        os.path.join(tmp, "half_plus_two_tf2"))

  def test_v1_parse_example_keys_from_const_inputs(self):
    saved_model = example_features.read_saved_model(self.tf1)
    for name in ("classify_x_to_y", "regress_x_to_y", "regress_x_to_y2"):
      features, ops = example_features.features_from_graph(saved_model, name)
      self.assertEqual(ops, ["ParseExample op 'ParseExample'"], name)
      self.assertEqual(features, [
          Feature("x", tf.float32, (1,), required=True),
          Feature("x2", tf.float32, (1,), required=False)], name)

  def test_parse_example_v2_inside_tf2_functions(self):
    saved_model = example_features.read_saved_model(self.tf2)
    features, ops = example_features.features_from_graph(saved_model,
                                                         "regress_x_to_y")
    self.assertLen(ops, 1)
    self.assertIn("ParseExampleV2", ops[0])
    self.assertEqual([(f.name, f.dtype, f.shape, f.required)
                      for f in features],
                     [("x", tf.float32, (1,), True),
                      ("x2", tf.float32, (1,), False)])

  def test_parse_single_example_keys_from_attributes(self):
    graph = tf.Graph()
    with graph.as_default():
      serialized = tf.compat.v1.placeholder(tf.string, [], name="example")
      tf.raw_ops.ParseSingleExample(
          serialized=serialized,
          dense_defaults=[tf.constant([], tf.int64),
                          tf.constant(["none"], tf.string)],
          num_sparse=1, sparse_keys=["tags"], dense_keys=["ids", "word"],
          sparse_types=[tf.string], dense_shapes=[[2, 3], [1]])
    saved_model = saved_model_pb2.SavedModel()
    meta_graph = saved_model.meta_graphs.add()
    meta_graph.meta_info_def.tags.append("serve")
    meta_graph.graph_def.CopyFrom(graph.as_graph_def())
    signature = meta_graph.signature_def["cls"]
    signature.method_name = "tensorflow/serving/classify"
    signature.inputs["inputs"].name = "example:0"
    features, _ = example_features.features_from_graph(saved_model, "cls")
    self.assertEqual(features, [
        Feature("ids", tf.int64, (2, 3), required=True),
        Feature("tags", tf.string, (-1,), required=False),
        Feature("word", tf.string, (1,), required=False)])

  def test_signature_without_parse_op(self):
    saved_model = example_features.read_saved_model(self.tf1)
    self.assertEqual(
        example_features.features_from_graph(saved_model, "serving_default"),
        ([], []))
    self.assertIsNone(example_features.learn_from_bundle(
        self.tf1, "serving_default", 1))

  def test_learn_from_bundle_uses_the_graph_without_warmup(self):
    learned = example_features.learn_from_bundle(self.tf1, "regress_x_to_y", 3)
    self.assertEqual(learned.origin, example_features.FROM_GRAPH)
    self.assertLen(learned.examples, 3)
    for example in learned.examples:
      self.assertLen(example.features.feature["x"].float_list.value, 1)

  def test_warmup_records_come_first(self):
    export_dir = self.create_tempdir().full_path
    tf.io.gfile.copy(os.path.join(self.tf1, "saved_model.pb"),
                     os.path.join(export_dir, "saved_model.pb"))
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(7.0)
    log = prediction_log_pb2.PredictionLog()
    log.classify_log.request.CopyFrom(request)
    warmup = os.path.join(export_dir, example_features.WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(warmup))
    with tf.io.TFRecordWriter(warmup) as writer:
      writer.write(log.SerializeToString())
    learned = example_features.learn_from_bundle(export_dir,
                                                 "classify_x_to_y", 2)
    self.assertEqual(learned.origin, example_features.FROM_WARMUP)
    self.assertEqual([e.features.feature["x"].float_list.value[0]
                      for e in learned.examples], [7.0, 7.0])
    # Another signature has no record: its graph is used.
    self.assertEqual(example_features.learn_from_bundle(
        export_dir, "regress_x_to_y", 1).origin, example_features.FROM_GRAPH)

  def test_export_dir_of_a_base_path(self):
    self.assertEqual(example_features.export_dir_of(self.tf1_base, 123),
                     self.tf1)
    self.assertEqual(example_features.export_dir_of(self.tf1_base, None),
                     self.tf1)
    self.assertEqual(example_features.export_dir_of(self.tf1, 5), self.tf1)
    with self.assertRaisesRegex(example_features.BundleError,
                                "has no version 7 .it has 123"):
      example_features.export_dir_of(self.tf1_base, 7)
    with self.assertRaisesRegex(example_features.BundleError, "cannot list"):
      example_features.export_dir_of("/no/such/base", 1)


class LearnFromErrorTest(absltest.TestCase):

  def test_missing_feature_is_added(self):
    self.assertEqual(example_features.learn_from_error([], _MISSING_X),
                     [Feature("x", tf.float32, (1,))])
    self.assertEqual(
        example_features.learn_from_error(
            [], "Feature: ids (data type: int64) is required but could not "
            "be found.")[0].dtype, tf.int64)

  def test_wrong_count_fixes_the_shape(self):
    message = ("Name: <unknown>, Key: x, Index: 0.  Number of float values "
               "!= expected.  Values size: 1 but output shape: [2,3]")
    learned = example_features.learn_from_error(
        [Feature("x", tf.float32, (1,))], message)
    self.assertEqual(learned, [Feature("x", tf.float32, (2, 3))])
    self.assertEqual(learned[0].num_values, 6)
    self.assertIsNone(example_features.learn_from_error(learned, message))

  def test_wrong_dtype_is_fixed(self):
    message = ("Name: <unknown>, Key: n, Index: 0.  Data types don't match. "
               "Data type: float but expected type: int64")
    self.assertEqual(example_features.learn_from_error(
        [Feature("n", tf.float32, (1,))], message),
                     [Feature("n", tf.int64, (1,))])

  def test_nothing_new_is_none(self):
    self.assertIsNone(example_features.learn_from_error(
        [Feature("x", tf.float32, (1,))], _MISSING_X))
    self.assertIsNone(example_features.learn_from_error([], "out of memory"))

  def test_examples_for_holds_every_feature(self):
    examples = example_features.examples_for(
        [Feature("f", tf.float32, (2,)), Feature("i", tf.int64, ()),
         Feature("s", tf.string, (-1,))], 2)
    self.assertLen(examples, 2)
    feature = examples[0].features.feature
    self.assertLen(feature["f"].float_list.value, 2)
    self.assertLen(feature["i"].int64_list.value, 1)
    self.assertEqual(list(feature["s"].bytes_list.value), [b"sample"])


if __name__ == "__main__":
  absltest.main()
