"""Builds the hyaudio example: an audio classifier head as a frozen graph.

In the style of the classic AudioSet example, the head takes 5 frames of
128-dimensional VGGish embeddings flattened to 640 floats and returns class
probabilities and the predicted class:

  hyaudio/vggish_input:0     float32 [-1, 640]
  hyaudio/predict_probs:0    float32 [-1, NUM_CLASSES]  (softmax)
  hyaudio/predict_classes:0  int64   [-1]               (argmax)

Its weights are fixed random numbers (the seed picks a "model"), baked in as
constants: the graph is frozen by construction.

Usage:
  bazel run //examples/hyaudio:make_graph -- --output_dir=/tmp/examples/hyaudio
"""

import dataclasses
import os
from typing import Dict

import numpy as np
import tensorflow as tf

FRAMES = 5
EMBEDDING_SIZE = 128
INPUT_SIZE = FRAMES * EMBEDDING_SIZE
HIDDEN_SIZE = 100
NUM_CLASSES = 10
INPUT = "hyaudio/vggish_input:0"
PROBS = "hyaudio/predict_probs:0"
CLASSES = "hyaudio/predict_classes:0"


@dataclasses.dataclass(frozen=True)
class GraphInfo:
  """Where a generated graph is and its tensor names."""
  path: str
  inputs: Dict[str, str]
  outputs: Dict[str, str]


def build_graph_def(seed: int = 1) -> tf.compat.v1.GraphDef:
  """Returns the frozen classifier head; `seed` picks its weights."""
  rng = np.random.default_rng(seed)
  w1 = rng.normal(0, 1 / np.sqrt(INPUT_SIZE), (INPUT_SIZE, HIDDEN_SIZE))
  b1 = rng.normal(0, 0.1, HIDDEN_SIZE)
  w2 = rng.normal(0, 1 / np.sqrt(HIDDEN_SIZE), (HIDDEN_SIZE, NUM_CLASSES))
  b2 = rng.normal(0, 0.1, NUM_CLASSES)
  graph = tf.Graph()
  with graph.as_default():
    embeddings = tf.compat.v1.placeholder(
        tf.float32, [None, INPUT_SIZE], name=INPUT.split(":")[0])
    with tf.name_scope("hyaudio/classifier"):
      frames = tf.reshape(embeddings, [-1, FRAMES, EMBEDDING_SIZE],
                          name="frames")
      # Normalise each frame like the postprocessed VGGish embeddings.
      frames = tf.math.l2_normalize(frames, axis=-1, name="l2_normalize")
      flat = tf.reshape(frames, [-1, INPUT_SIZE], name="flat")
      hidden = tf.nn.relu(
          tf.matmul(flat, tf.constant(w1, tf.float32, name="w1"))
          + tf.constant(b1, tf.float32, name="b1"), name="hidden")
      logits = tf.add(
          tf.matmul(hidden, tf.constant(w2, tf.float32, name="w2")),
          tf.constant(b2, tf.float32, name="b2"), name="logits")
    tf.nn.softmax(logits, name=PROBS.split(":")[0])
    tf.argmax(logits, axis=1, output_type=tf.int64,
              name=CLASSES.split(":")[0])
  return graph.as_graph_def()


def write_graph(output_dir: str, seed: int = 1,
                filename: str = "hyaudio.pb") -> GraphInfo:
  """Writes the frozen graph to `output_dir/filename`.

  Args:
    output_dir: the directory (created if missing).
    seed: picks the weights; different seeds are different models.
    filename: the .pb file name.

  Returns:
    The file and its tensor names.
  """
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, filename)
  with open(path, "wb") as f:
    f.write(build_graph_def(seed).SerializeToString())
  return GraphInfo(path=path, inputs={"inputs": INPUT},
                   outputs={"classes": CLASSES, "probs": PROBS})
