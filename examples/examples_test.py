"""Tests that the example generators build working graphs and valid specs."""

import os
import tomllib

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from examples import runfiles_path
from examples.digits import digits_model
from examples.hyaudio import hyaudio_graph
from examples.regress import diabetes_model


def run_graph(path, fetches, feeds):
  graph_def = tf.compat.v1.GraphDef()
  with open(path, "rb") as f:
    graph_def.ParseFromString(f.read())
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
  with tf.compat.v1.Session(graph=graph) as session:
    return session.run(fetches, feeds)


def graph_tensor_names(path):
  graph_def = tf.compat.v1.GraphDef()
  with open(path, "rb") as f:
    graph_def.ParseFromString(f.read())
  return {node.name for node in graph_def.node}


def examples_of(features):
  rows = len(next(iter(features.values())))
  out = []
  for i in range(rows):
    example = example_pb2.Example()
    for name, values in features.items():
      example.features.feature[name].float_list.value.extend(
          np.asarray(values[i], np.float32).reshape(-1).tolist())
    out.append(example.SerializeToString())
  return out


class ExamplesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = absltest.get_default_test_tmpdir()
    cls.hyaudio = hyaudio_graph.write_graph(os.path.join(cls.dir, "hyaudio"))
    cls.digits = digits_model.write_model(os.path.join(cls.dir, "digits"))
    cls.diabetes = diabetes_model.write_model(os.path.join(cls.dir, "regress"))

  def test_hyaudio_probs_and_classes(self):
    x = np.random.default_rng(0).normal(size=(4, 640)).astype(np.float32)
    probs, classes = run_graph(
        self.hyaudio.path, [hyaudio_graph.PROBS, hyaudio_graph.CLASSES],
        {hyaudio_graph.INPUT: x})
    self.assertEqual(probs.shape, (4, hyaudio_graph.NUM_CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), np.ones(4), rtol=1e-5)
    np.testing.assert_array_equal(classes, probs.argmax(axis=1))

  def test_hyaudio_seed_picks_different_weights(self):
    other = hyaudio_graph.write_graph(self.dir, seed=2, filename="h2.pb")
    x = np.ones((1, 640), np.float32)
    a = run_graph(self.hyaudio.path, hyaudio_graph.PROBS,
                  {hyaudio_graph.INPUT: x})
    b = run_graph(other.path, hyaudio_graph.PROBS, {hyaudio_graph.INPUT: x})
    self.assertFalse(np.allclose(a, b))

  def test_digits_predict_graph_is_accurate(self):
    images = np.load(self.digits.test_images)
    labels = np.load(self.digits.test_labels)
    self.assertEqual(images.shape, (len(labels), 64))
    classes = run_graph(self.digits.predict_graph, "digits/classes:0",
                        {"digits/images:0": images})
    error = digits_model.error_rate(classes, labels)
    self.assertAlmostEqual(error, 1 - self.digits.test_accuracy, places=6)
    self.assertLess(error, 0.1)

  def test_digits_classify_graph_agrees_with_predict(self):
    images = np.load(self.digits.test_images)[:50]
    probs = run_graph(self.digits.predict_graph, "digits/probabilities:0",
                      {"digits/images:0": images})
    classes, scores = run_graph(
        self.digits.classify_graph,
        ["digits_examples/classes:0", "digits_examples/scores:0"],
        {"digits_examples/inputs:0": examples_of({"pixels": images})})
    np.testing.assert_allclose(scores, probs, atol=1e-5)
    self.assertEqual(classes.shape, (50, 10))
    self.assertEqual(classes[0].tolist(), [str(i).encode() for i in range(10)])

  def test_diabetes_graph_matches_reported_rmse(self):
    with np.load(self.diabetes.test_features) as archive:
      features = {name: archive[name] for name in self.diabetes.feature_names}
    predicted = run_graph(self.diabetes.graph, "diabetes/outputs:0",
                          {"diabetes/inputs:0": examples_of(features)})
    rmse = diabetes_model.rmse(predicted, np.load(self.diabetes.test_targets))
    self.assertAlmostEqual(rmse, self.diabetes.test_rmse, places=2)

  def test_diabetes_missing_features_default_to_zero(self):
    empty = run_graph(
        self.diabetes.graph, "diabetes/outputs:0",
        {"diabetes/inputs:0": [example_pb2.Example().SerializeToString()]})
    zero_features = {n: np.zeros(1) for n in self.diabetes.feature_names}
    zeros = run_graph(self.diabetes.graph, "diabetes/outputs:0",
                      {"diabetes/inputs:0": examples_of(zero_features)})
    np.testing.assert_allclose(empty, zeros)

  @parameterized.parameters("merge.toml", "hyaudio/merge.toml",
                            "digits/merge.toml", "regress/merge.toml")
  def test_specs_name_tensors_of_the_generated_graphs(self, spec):
    with open(runfiles_path.example_file(spec), "rb") as f:
      document = tomllib.load(f)
    self.assertTrue(document["model"])
    for model in document["model"]:
      graph = os.path.join(self.dir, os.path.basename(os.path.dirname(spec))
                           if "/" in spec else "", model["frozen"])
      names = graph_tensor_names(graph)
      for tensor in {**model["inputs"], **model["outputs"]}.values():
        self.assertIn(tensor.split(":")[0], names, f"{spec}: {tensor}")


if __name__ == "__main__":
  absltest.main()
