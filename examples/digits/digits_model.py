"""Trains the digits example: a softmax classifier on scikit-learn's digits.

`load_digits()` ships with scikit-learn (1797 8x8 images, pixels 0..16), so
training needs no download. A multinomial logistic regression (a softmax
classifier) is fitted on 80% of the images; the other 20% are saved as a
held-out set so clients can report an inference error rate, the way
TF Serving's mnist_client does.

Two frozen graphs share the trained weights:

  digits.pb           predict:  digits/images:0 float32 [-1, 64] (raw pixels)
                      -> digits/probabilities:0 float32 [-1, 10]
                      -> digits/classes:0 int64 [-1]
  digits_examples.pb  classify: digits_examples/inputs:0 string [-1]
                      (serialized tf.Example with feature "pixels": 64
                      floats, default zeros)
                      -> digits_examples/classes:0 string [-1, 10] ("0".."9")
                      -> digits_examples/scores:0 float32 [-1, 10]

Files written: digits.pb, digits_examples.pb, test_images.npy (float32
[n, 64]), test_labels.npy (int64 [n]).
"""

import dataclasses
import os
from typing import Tuple

import numpy as np
import tensorflow as tf
from sklearn import datasets
from sklearn import linear_model
from sklearn import model_selection

NUM_PIXELS = 64
NUM_CLASSES = 10
PIXEL_MAX = 16.0
FEATURE = "pixels"
TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class DigitsFiles:
  """What `write_model` wrote.

  Attributes:
    predict_graph: digits.pb.
    classify_graph: digits_examples.pb.
    test_images: test_images.npy (float32 [n, 64]).
    test_labels: test_labels.npy (int64 [n]).
    train_accuracy: accuracy on the training images.
    test_accuracy: accuracy on the held-out images (computed with numpy).
  """
  predict_graph: str
  classify_graph: str
  test_images: str
  test_labels: str
  train_accuracy: float
  test_accuracy: float


def train(seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                  np.ndarray, float]:
  """Fits the softmax classifier.

  Returns:
    (weights [64, 10], biases [10], test_images, test_labels, train_accuracy)
    where weights apply to pixels / 16.
  """
  digits = datasets.load_digits()
  x = digits.data.astype(np.float32)
  y = digits.target.astype(np.int64)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x, y, test_size=TEST_FRACTION, random_state=seed, stratify=y)
  model = linear_model.LogisticRegression(C=1.0, max_iter=2000)
  model.fit(x_train / PIXEL_MAX, y_train)
  train_accuracy = float(model.score(x_train / PIXEL_MAX, y_train))
  return (model.coef_.T.astype(np.float32),
          model.intercept_.astype(np.float32), x_test, y_test, train_accuracy)


def _logits(pixels: tf.Tensor, weights: np.ndarray,
            biases: np.ndarray) -> tf.Tensor:
  scaled = tf.math.divide(pixels, PIXEL_MAX, name="scale")
  return tf.add(tf.matmul(scaled, tf.constant(weights, name="weights")),
                tf.constant(biases, name="biases"), name="logits")


def predict_graph_def(weights: np.ndarray,
                      biases: np.ndarray) -> tf.compat.v1.GraphDef:
  """The predict graph: raw pixels in, probabilities and classes out."""
  graph = tf.Graph()
  with graph.as_default():
    images = tf.compat.v1.placeholder(tf.float32, [None, NUM_PIXELS],
                                      name="digits/images")
    with tf.name_scope("digits/softmax"):
      logits = _logits(images, weights, biases)
    tf.nn.softmax(logits, name="digits/probabilities")
    tf.argmax(logits, axis=1, output_type=tf.int64, name="digits/classes")
  return graph.as_graph_def()


def classify_graph_def(weights: np.ndarray,
                       biases: np.ndarray) -> tf.compat.v1.GraphDef:
  """The classify graph: serialized tf.Examples in, classes and scores out."""
  graph = tf.Graph()
  with graph.as_default():
    serialized = tf.compat.v1.placeholder(tf.string, [None],
                                          name="digits_examples/inputs")
    with tf.name_scope("digits_examples/parse"):
      features = tf.io.parse_example(serialized, {
          FEATURE: tf.io.FixedLenFeature(
              [NUM_PIXELS], tf.float32,
              default_value=[0.0] * NUM_PIXELS)})
    with tf.name_scope("digits_examples/softmax"):
      logits = _logits(features[FEATURE], weights, biases)
    tf.nn.softmax(logits, name="digits_examples/scores")
    labels = tf.constant([str(i) for i in range(NUM_CLASSES)])
    tf.tile(tf.expand_dims(labels, 0), [tf.shape(serialized)[0], 1],
            name="digits_examples/classes")
  return graph.as_graph_def()


def write_model(output_dir: str, seed: int = 0) -> DigitsFiles:
  """Trains the classifier and writes the graphs and the held-out set.

  Args:
    output_dir: the directory (created if missing).
    seed: the train/test split seed.

  Returns:
    The files written and the accuracies.
  """
  os.makedirs(output_dir, exist_ok=True)
  weights, biases, test_images, test_labels, train_accuracy = train(seed)
  files = {
      "digits.pb": predict_graph_def(weights, biases),
      "digits_examples.pb": classify_graph_def(weights, biases),
  }
  for name, graph_def in files.items():
    with open(os.path.join(output_dir, name), "wb") as f:
      f.write(graph_def.SerializeToString())
  np.save(os.path.join(output_dir, "test_images.npy"), test_images)
  np.save(os.path.join(output_dir, "test_labels.npy"), test_labels)
  logits = test_images / PIXEL_MAX @ weights + biases
  test_accuracy = float(np.mean(np.argmax(logits, axis=1) == test_labels))
  return DigitsFiles(
      predict_graph=os.path.join(output_dir, "digits.pb"),
      classify_graph=os.path.join(output_dir, "digits_examples.pb"),
      test_images=os.path.join(output_dir, "test_images.npy"),
      test_labels=os.path.join(output_dir, "test_labels.npy"),
      train_accuracy=train_accuracy, test_accuracy=test_accuracy)


def error_rate(predicted: np.ndarray, labels: np.ndarray) -> float:
  """The fraction of `predicted` classes that differ from `labels`.

  Raises:
    ValueError: if the arrays differ in length or are empty.
  """
  predicted = np.asarray(predicted).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if predicted.shape != labels.shape or not labels.size:
    raise ValueError(
        f"need as many predictions as labels (> 0); got {predicted.size} "
        f"predictions for {labels.size} labels")
  return float(np.mean(predicted.astype(np.int64) != labels))
