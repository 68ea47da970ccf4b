r"""Frozen graphs of real architectures, with seeded random weights.

The networks users deploy, at small input sizes, built from Keras and TF APIs
(nothing downloaded), each frozen as a training job would freeze it:

  python3 architectures.py --model=resnet --out_dir=/tmp/corpus

writes `/tmp/corpus/resnet.pb` (binary GraphDef) and `/tmp/corpus/resnet.json`
(`{"inputs": {alias: tensor}, "outputs": {alias: tensor}}` in the frozen
graph's names). Run one process per model (`freeze_all` does): each starts
from a fresh Keras/TF name state, so generated names collide across models as
they do across separate jobs.

Models (`MODELS`):
  * `mobilenet_v2`: keras.applications.MobileNetV2 (alpha 0.35, 32x32x3, 10
    classes): ReLU6, DepthwiseConv2dNative, BatchNormalization after every
    conv, residual adds.
  * `resnet`: ResNet-style blocks written with tf.nn: Conv2D + BiasAdd + Relu
    (Grappler fuses them), FusedBatchNormV3 (inference), identity and
    projection shortcuts; frozen with convert_variables_to_constants_v2.
  * `efficientnet`: EfficientNet-style MBConv blocks in Keras: expansion conv
    + BatchNormalization + swish, depthwise conv, squeeze-and-excitation
    (sigmoid multiply), projection conv, residual.
  * `lstm`, `lstm_twin`: Keras LSTMs (while loops in functions) whose
    generated names (`lstm`, `while_body`...) collide; different seeds.
  * `gru`: a Keras GRU.
  * `transformer`: a Transformer encoder block (MultiHeadAttention,
    LayerNormalization, feed-forward) on [batch, 8, 32].
  * `tf1_control_flow`: a TF1 graph with v1 control flow (tf.compat.v1
    while_loop and cond, Enter/Exit/Switch/Merge), ref variables, frozen
    with convert_variables_to_constants.
  * `text`: a text classifier with a StringLookup vocabulary table
    (HashTableV2 + LookupTableImportV2 initializer in the frozen graph),
    Embedding, mean pooling and Dense, on strings [batch, 4].
"""

import json
import os
import subprocess
import sys
from concurrent import futures

MODELS = ("mobilenet_v2", "resnet", "efficientnet", "lstm", "lstm_twin",
          "gru", "transformer", "tf1_control_flow", "text")
# The dtype and shape of each model's input (None: any batch).
INPUTS = {
    "mobilenet_v2": ("float32", [None, 32, 32, 3]),
    "resnet": ("float32", [None, 16, 16, 3]),
    "efficientnet": ("float32", [None, 16, 16, 3]),
    "lstm": ("float32", [None, 6, 8]),
    "lstm_twin": ("float32", [None, 6, 8]),
    "gru": ("float32", [None, 6, 8]),
    "transformer": ("float32", [None, 8, 32]),
    "tf1_control_flow": ("float32", [None, 16]),
    "text": ("string", [None, 4]),
}
VOCABULARY = ("the", "cat", "sat", "on", "mat", "dog", "ran")


def _random_batchnorm_statistics(model, seed):
  """Gives every BatchNormalization non-trivial gamma/beta/mean/variance."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                         for w in layer.get_weights()])


def _freeze_keras(model, name):
  """Freezes a Keras model's inference function (v2 freezing)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
  dtype, shape = INPUTS[name]
  function = tf.function(lambda x: model(x, training=False))
  concrete = function.get_concrete_function(tf.TensorSpec(shape, dtype))
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  return (frozen.graph.as_graph_def(), {"x": frozen.inputs[0].name},
          {"y": frozen.outputs[0].name})


def _mobilenet_v2():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = tf.keras.applications.MobileNetV2(
      input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
  _random_batchnorm_statistics(model, 1)
  return _freeze_keras(model, "mobilenet_v2")


def _resnet():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)

  def variable(*shape, low=-0.3, high=0.3):
    return tf.Variable(rng.uniform(low, high, shape).astype(np.float32))

  class ResNet(tf.Module):
    """Two stages of bottleneck-free residual blocks, tf.nn ops."""

    def __init__(self):
      super().__init__()
      self.blocks = []
      channels = 3
      for width, stride in ((16, 1), (16, 1), (32, 2), (32, 1)):
        block = {
            "w1": variable(3, 3, channels, width), "b1": variable(width),
            "w2": variable(3, 3, width, width),
            "bn": [variable(width, low=0.5, high=1.5) for _ in range(4)],
            "stride": stride,
        }
        if stride != 1 or channels != width:
          block["proj"] = variable(1, 1, channels, width)
        self.blocks.append(block)
        channels = width
      self.dense = variable(channels, 10)
      self.dense_b = variable(10)

    @tf.function
    def __call__(self, x):
      for block in self.blocks:
        s = block["stride"]
        y = tf.nn.relu(tf.nn.bias_add(
            tf.nn.conv2d(x, block["w1"], s, "SAME"), block["b1"]))
        y = tf.nn.conv2d(y, block["w2"], 1, "SAME")
        scale, offset, mean, var = block["bn"]
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            y, scale, offset, mean=mean, variance=var, is_training=False)
        shortcut = (tf.nn.conv2d(x, block["proj"], s, "SAME")
                    if "proj" in block else x)
        x = tf.nn.relu(y + shortcut)
      x = tf.reduce_mean(x, axis=[1, 2])
      return tf.nn.softmax(tf.matmul(x, self.dense) + self.dense_b)

  module = ResNet()
  concrete = module.__call__.get_concrete_function(
      tf.TensorSpec(INPUTS["resnet"][1], tf.float32))
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  return (frozen.graph.as_graph_def(), {"x": frozen.inputs[0].name},
          {"y": frozen.outputs[0].name})


def _efficientnet():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layers = tf.keras.layers

  def mbconv(x, out_channels, expand, stride):
    channels = x.shape[-1]
    y = layers.Conv2D(channels * expand, 1, use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("swish")(y)
    y = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("swish")(y)
    se = layers.GlobalAveragePooling2D(keepdims=True)(y)
    se = layers.Conv2D(max(1, channels // 4), 1, activation="swish")(se)
    se = layers.Conv2D(channels * expand, 1, activation="sigmoid")(se)
    y = layers.Multiply()([y, se])
    y = layers.Conv2D(out_channels, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    if stride == 1 and channels == out_channels:
      y = layers.Add()([x, y])
    return y

  inputs = tf.keras.Input(INPUTS["efficientnet"][1][1:])
  x = layers.Rescaling(1.0 / 255)(inputs)
  x = layers.Conv2D(16, 3, 2, padding="same", use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  x = layers.Activation("swish")(x)
  x = mbconv(x, 16, 1, 1)
  x = mbconv(x, 24, 6, 2)
  x = mbconv(x, 24, 6, 1)
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dense(10, activation="softmax")(x)
  model = tf.keras.Model(inputs, x)
  _random_batchnorm_statistics(model, 3)
  return _freeze_keras(model, "efficientnet")


def _recurrent(name, layer):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = tf.keras.Input(INPUTS[name][1][1:])
  x = layer(32, return_sequences=True)(inputs)
  x = layer(16)(x)
  x = tf.keras.layers.Dense(4)(x)
  return _freeze_keras(tf.keras.Model(inputs, x), name)


def _transformer():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layers = tf.keras.layers
  inputs = tf.keras.Input(INPUTS["transformer"][1][1:])
  attention = layers.MultiHeadAttention(num_heads=4, key_dim=8)(inputs,
                                                                inputs)
  x = layers.LayerNormalization()(inputs + attention)
  ff = layers.Dense(64, activation="gelu")(x)
  ff = layers.Dense(32)(ff)
  x = layers.LayerNormalization()(x + ff)
  x = layers.GlobalAveragePooling1D()(x)
  x = layers.Dense(3)(x)
  return _freeze_keras(tf.keras.Model(inputs, x), "transformer")


def _tf1_control_flow():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  v1 = tf.compat.v1
  v1.disable_control_flow_v2()
  rng = np.random.default_rng(5)
  graph = tf.Graph()
  with graph.as_default():
    x = v1.placeholder(tf.float32, INPUTS["tf1_control_flow"][1], name="x")
    w = v1.Variable(rng.uniform(-0.5, 0.5, (16, 16)).astype(np.float32),
                    name="w")
    b = v1.Variable(rng.uniform(-0.1, 0.1, (16,)).astype(np.float32),
                    name="b")

    def body(i, h):
      return i + 1, tf.tanh(tf.matmul(h, w) + b)

    _, h = v1.while_loop(lambda i, h: i < 3, body, [tf.constant(0), x])
    y = v1.cond(tf.reduce_sum(h) > 0, lambda: h * 2.0, lambda: h - 1.0)
    y = tf.identity(y, name="y")
    with v1.Session(graph=graph) as sess:
      sess.run(v1.global_variables_initializer())
      graph_def = v1.graph_util.convert_variables_to_constants(
          sess, graph.as_graph_def(), ["y"])
  return graph_def, {"x": "x:0"}, {"y": "y:0"}


def _text():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  v1 = tf.compat.v1
  rng = np.random.default_rng(6)
  graph = tf.Graph()
  with graph.as_default():
    words = v1.placeholder(tf.string, INPUTS["text"][1], name="words")
    lookup = tf.keras.layers.StringLookup(vocabulary=list(VOCABULARY))
    ids = lookup(words)
    embedding = v1.Variable(
        rng.uniform(-1, 1, (len(VOCABULARY) + 1, 16)).astype(np.float32),
        name="embedding")
    dense = v1.Variable(rng.uniform(-1, 1, (16, 3)).astype(np.float32),
                        name="dense")
    pooled = tf.reduce_mean(tf.nn.embedding_lookup(embedding, ids), axis=1)
    y = tf.identity(tf.nn.softmax(tf.matmul(pooled, dense)), name="y")
    with v1.Session(graph=graph) as sess:
      sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
      graph_def = v1.graph_util.convert_variables_to_constants(
          sess, graph.as_graph_def(), ["y"] + [
              op.name for op in graph.get_collection(
                  v1.GraphKeys.TABLE_INITIALIZERS)])
  return graph_def, {"words": "words:0"}, {"y": "y:0"}


def freeze(name: str, out_dir: str) -> None:
  """Builds and freezes one model in this process; writes .pb and .json."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seeds = {"lstm": 7, "lstm_twin": 8, "gru": 9}
  tf.keras.utils.set_random_seed(seeds.get(name, 11))
  builders = {
      "mobilenet_v2": _mobilenet_v2,
      "resnet": _resnet,
      "efficientnet": _efficientnet,
      "lstm": lambda: _recurrent("lstm", tf.keras.layers.LSTM),
      "lstm_twin": lambda: _recurrent("lstm_twin", tf.keras.layers.LSTM),
      "gru": lambda: _recurrent("gru", tf.keras.layers.GRU),
      "transformer": _transformer,
      "tf1_control_flow": _tf1_control_flow,
      "text": _text,
  }
  graph_def, inputs, outputs = builders[name]()
  with open(os.path.join(out_dir, name + ".pb"), "wb") as f:
    f.write(graph_def.SerializeToString())
  with open(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump({"inputs": inputs, "outputs": outputs}, f)


def freeze_all(out_dir: str, models=MODELS, parallel: int = 3) -> dict:
  """Freezes every model, each in its own Python process.

  Returns:
    name -> (path of the .pb, inputs, outputs).

  Raises:
    RuntimeError: a process failed (its stderr tail is in the message).
  """
  os.makedirs(out_dir, exist_ok=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join(sys.path))

  def run(name):
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--model={name}",
         f"--out_dir={out_dir}"], env=env, capture_output=True, text=True,
        check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"freezing {name} failed (exit {proc.returncode}):"
                         f"\n{proc.stderr[-3000:]}")

  with futures.ThreadPoolExecutor(parallel) as pool:
    list(pool.map(run, models))
  result = {}
  for name in models:
    with open(os.path.join(out_dir, name + ".json")) as f:
      io = json.load(f)
    result[name] = (os.path.join(out_dir, name + ".pb"), io["inputs"],
                    io["outputs"])
  return result


def main(argv):
  flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--"))
  if flags.get("model") not in MODELS or "out_dir" not in flags:
    sys.stderr.write(f"usage: {argv[0]} --model={'|'.join(MODELS)} "
                     "--out_dir=DIR\n")
    return 2
  os.makedirs(flags["out_dir"], exist_ok=True)
  freeze(flags["model"], flags["out_dir"])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
