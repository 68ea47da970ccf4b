"""Trains the regress example: a linear model on scikit-learn's diabetes data.

`load_diabetes()` ships with scikit-learn (442 patients, 10 standardised
measurements, a disease progression score), so training needs no download.
A ridge regression is fitted on 80%; the other 20% is saved for clients.

The frozen graph takes serialized tf.Examples, the input of a TF Serving
regress signature, and parses them in the graph:

  diabetes/inputs:0   string [-1]; features age, sex, bmi, bp, s1..s6, each
                      one float (missing features default to 0, the mean)
  diabetes/outputs:0  float32 [-1], the predicted progression score

Files written: diabetes.pb, test_features.npz (one float32 [n] array per
feature name, ready for `--input=FILE.npz`), test_targets.npy (float32 [n]).
"""

import dataclasses
import os
from typing import List

import numpy as np
import tensorflow as tf
from sklearn import datasets
from sklearn import linear_model
from sklearn import model_selection

TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class DiabetesFiles:
  """What `write_model` wrote.

  Attributes:
    graph: diabetes.pb.
    test_features: test_features.npz (feature name -> float32 [n]).
    test_targets: test_targets.npy (float32 [n]).
    feature_names: the tf.Example feature names, in model order.
    test_rmse: root mean squared error on the held-out set (numpy).
  """
  graph: str
  test_features: str
  test_targets: str
  feature_names: List[str]
  test_rmse: float


def graph_def(feature_names: List[str], coefficients: np.ndarray,
              intercept: float) -> tf.compat.v1.GraphDef:
  """The frozen regression graph (tf.Examples in, one float per row out)."""
  graph = tf.Graph()
  with graph.as_default():
    serialized = tf.compat.v1.placeholder(tf.string, [None],
                                          name="diabetes/inputs")
    with tf.name_scope("diabetes/parse"):
      parsed = tf.io.parse_example(serialized, {
          name: tf.io.FixedLenFeature([], tf.float32, default_value=0.0)
          for name in feature_names})
      features = tf.stack([parsed[name] for name in feature_names], axis=1,
                          name="features")
    with tf.name_scope("diabetes/linear"):
      prediction = tf.add(
          tf.matmul(features, tf.constant(
              coefficients.reshape(-1, 1).astype(np.float32),
              name="coefficients")),
          tf.constant(np.float32(intercept), name="intercept"))
    tf.reshape(prediction, [-1], name="diabetes/outputs")
  return graph.as_graph_def()


def write_model(output_dir: str, seed: int = 0) -> DiabetesFiles:
  """Trains the model and writes the graph and the held-out set.

  Args:
    output_dir: the directory (created if missing).
    seed: the train/test split seed.

  Returns:
    The files written and the held-out error.
  """
  os.makedirs(output_dir, exist_ok=True)
  data = datasets.load_diabetes()
  names = list(data.feature_names)
  x = data.data.astype(np.float32)
  y = data.target.astype(np.float32)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x, y, test_size=TEST_FRACTION, random_state=seed)
  model = linear_model.Ridge(alpha=0.1).fit(x_train, y_train)
  path = os.path.join(output_dir, "diabetes.pb")
  with open(path, "wb") as f:
    f.write(graph_def(names, model.coef_, float(model.intercept_))
            .SerializeToString())
  features_path = os.path.join(output_dir, "test_features.npz")
  np.savez(features_path, **{name: x_test[:, i] for i, name in
                             enumerate(names)})
  targets_path = os.path.join(output_dir, "test_targets.npy")
  np.save(targets_path, y_test)
  rmse = float(np.sqrt(np.mean((model.predict(x_test) - y_test) ** 2)))
  return DiabetesFiles(graph=path, test_features=features_path,
                       test_targets=targets_path, feature_names=names,
                       test_rmse=rmse)


def rmse(predicted: np.ndarray, targets: np.ndarray) -> float:
  """Root mean squared error.

  Raises:
    ValueError: if the arrays differ in length or are empty.
  """
  predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
  targets = np.asarray(targets, dtype=np.float64).reshape(-1)
  if predicted.shape != targets.shape or not targets.size:
    raise ValueError(
        f"need as many predictions as targets (> 0); got {predicted.size} "
        f"predictions for {targets.size} targets")
  return float(np.sqrt(np.mean((predicted - targets) ** 2)))
