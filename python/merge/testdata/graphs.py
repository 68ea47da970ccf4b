"""Writers of small frozen graphs (GraphDefs with weights as constants).

Used by the tests of every package: each `write_*` function builds a tiny
model in a fresh TF1-style graph, writes it to `path` (binary GraphDef, or
text format when `path` ends in ".pbtxt") and returns a dict describing it:

  {
    "path": str,                          # where the graph was written
    "inputs": {alias: tensor_name},       # ready for a spec's `inputs`
    "outputs": {alias: tensor_name},      # ready for a spec's `outputs`
    "method": "predict" | "classify" | "regress",
    "init_op": str | None,                # node to run before serving
    "dtypes": {tensor_name: dtype name},  # e.g. "float32", "int32", "string"
    "shapes": {tensor_name: [dims]},      # -1 for unknown dimensions
  }

`make_inputs(info)` synthesizes a feed for the inputs and `run_frozen(info,
feeds)` runs the frozen graph alone, which is what merged bundles are
compared against. `write_spec` writes a TOML merge spec.

Write every graph by hand (to try the tools on them):
  bazel run //python/merge/testdata:write_graphs -- --out_dir=/tmp/frozen
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import function as tf_function

_HYAUDIO_FEATURES = 640
_CLASS_LABELS = (b"cat", b"dog", b"bird")
_EXAMPLE_FEATURES = 4


def _write_graph_def(graph_def: tf.compat.v1.GraphDef, path: str) -> None:
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  if path.endswith(".pbtxt"):
    data = text_format.MessageToString(graph_def).encode("utf-8")
  else:
    data = graph_def.SerializeToString()
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)


def _shape(tensor: tf.Tensor) -> list[int]:
  if tensor.shape.rank is None:
    return None
  return [-1 if d is None else int(d) for d in tensor.shape.as_list()]


def _info(path: str, inputs: Mapping[str, tf.Tensor],
          outputs: Mapping[str, tf.Tensor], method: str = "predict",
          init_op: Optional[str] = None, **extra: Any) -> dict:
  tensors = list(inputs.values()) + list(outputs.values())
  info = {
      "path": path,
      "inputs": {k: t.name for k, t in inputs.items()},
      "outputs": {k: t.name for k, t in outputs.items()},
      "method": method,
      "init_op": init_op,
      "dtypes": {t.name: t.dtype.name for t in tensors},
      "shapes": {t.name: _shape(t) for t in tensors},
  }
  info.update(extra)
  return info


def _rng(seed: int) -> np.random.RandomState:
  return np.random.RandomState(seed)


def write_hyaudio(path: str, num_classes: int = 8, seed: int = 0) -> dict:
  """Writes the classic audio classifier head (VGGish embedding -> classes).

  Tensors: `hyaudio/vggish_input:0` float [-1, 640] ->
  `hyaudio/predict_probs:0` float [-1, num_classes] and
  `hyaudio/predict_classes:0` int32 [-1].

  Args:
    path: Output file (.pb binary or .pbtxt text).
    num_classes: Number of classes of the softmax.
    seed: Seed of the random weights (different seeds, different answers).

  Returns:
    The graph description dict (see module docstring); aliases are
    inputs={"inputs"}, outputs={"probs", "classes"}.
  """
  rng = _rng(seed)
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("hyaudio"):
      x = tf.compat.v1.placeholder(
          tf.float32, [None, _HYAUDIO_FEATURES], name="vggish_input")
      w1 = tf.constant(
          rng.normal(0, 0.05, (_HYAUDIO_FEATURES, 32)).astype(np.float32),
          name="fc1/weights")
      b1 = tf.constant(rng.normal(0, 0.1, (32,)).astype(np.float32),
                       name="fc1/biases")
      hidden = tf.nn.relu(tf.matmul(x, w1) + b1, name="fc1/relu")
      w2 = tf.constant(
          rng.normal(0, 0.3, (32, num_classes)).astype(np.float32),
          name="logits/weights")
      b2 = tf.constant(rng.normal(0, 0.1, (num_classes,)).astype(np.float32),
                       name="logits/biases")
      logits = tf.add(tf.matmul(hidden, w2), b2, name="logits/add")
      probs = tf.nn.softmax(logits, name="predict_probs")
      classes = tf.argmax(
          logits, axis=1, output_type=tf.int32, name="predict_classes")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"inputs": x}, {"probs": probs, "classes": classes})


def write_while_loop(path: str, control_flow: str = "v1",
                     iterations: int = 5) -> dict:
  """Writes a graph with a `tf.while_loop` (v1: Enter/Exit frames).

  Tensors: `loop/x:0` float [-1, 4] -> `loop/result:0` float [-1, 4] (x
  transformed `iterations` times) and `loop/count:0` int32 [] (iterations).

  Args:
    path: Output file.
    control_flow: "v1" builds Enter/Merge/Switch/Exit ops with a frame name
      (what TF1 frozen graphs hold); "v2" builds a functional `While` op whose
      cond/body live in the function library.
    iterations: Loop trip count.

  Returns:
    The graph description dict (inputs={"x"}, outputs={"result", "count"}).
  """
  if control_flow not in ("v1", "v2"):
    raise ValueError(f"control_flow must be 'v1' or 'v2', got {control_flow!r}")
  was_v2 = tf.compat.v1.control_flow_v2_enabled()
  if control_flow == "v1":
    tf.compat.v1.disable_control_flow_v2()
  else:
    tf.compat.v1.enable_control_flow_v2()
  try:
    graph = tf.Graph()
    with graph.as_default():
      with tf.compat.v1.name_scope("loop"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        scale = tf.constant([0.5, 1.5, -1.0, 2.0], name="scale")

        def cond(i, unused_acc):
          return i < iterations

        def body(i, acc):
          return i + 1, tf.tanh(acc * scale + 0.25)

        count, acc = tf.compat.v1.while_loop(
            cond, body, [tf.constant(0, name="start"), x], name="while")
        result = tf.identity(acc, name="result")
        count = tf.identity(count, name="count")
  finally:
    if was_v2:
      tf.compat.v1.enable_control_flow_v2()
    else:
      tf.compat.v1.disable_control_flow_v2()
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"x": x}, {"result": result, "count": count})


def write_lookup_table(path: str, shared_name: str = "vocab_table",
                       offset: int = 0) -> dict:
  """Writes a graph with a string->int64 hash table (HashTableV2).

  The table has a non-empty `shared_name`, so merging two such graphs must
  keep their tables apart. Tensors: `lookup/words:0` string [-1] ->
  `lookup/ids:0` int64 [-1] (-1 for unknown words); run `init_op` first.

  Args:
    path: Output file.
    shared_name: The table's shared_name attr.
    offset: Added to every id (two graphs with different offsets answer
      differently through tables with the same shared_name).

  Returns:
    The graph description dict (inputs={"words"}, outputs={"ids"}, init_op
    "lookup/init_all_tables").
  """
  words = [b"apple", b"banana", b"cherry", b"date"]
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("lookup"):
      table = tf.raw_ops.HashTableV2(
          key_dtype=tf.string, value_dtype=tf.int64, shared_name=shared_name,
          use_node_name_sharing=False, name="table")
      import_op = tf.raw_ops.LookupTableImportV2(
          table_handle=table, keys=tf.constant(words, name="keys"),
          values=tf.constant(
              np.arange(len(words), dtype=np.int64) + offset, name="values"),
          name="table_import")
      init = tf.group(import_op, name="init_all_tables")
      x = tf.compat.v1.placeholder(tf.string, [None], name="words")
      ids = tf.raw_ops.LookupTableFindV2(
          table_handle=table, keys=x,
          default_value=tf.constant(-1, tf.int64, name="default"))
      ids = tf.reshape(ids, [-1], name="ids")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"words": x}, {"ids": ids}, init_op=init.name,
               vocabulary=[w.decode() for w in words])


def write_vocabulary_table(path: str, vocabulary_path: str) -> dict:
  """Writes a graph whose table is initialized from a vocabulary file.

  The vocabulary file (one word per line; id = line number) is written
  too, and the frozen graph holds its absolute path in a string Const read
  by `InitializeTableFromTextFileV2`. Tensors: `vocab/words:0` string [-1]
  -> `vocab/ids:0` int64 [-1] (-1 for unknown words); run `init_op` first.

  Args:
    path: Output file of the graph.
    vocabulary_path: Output file of the vocabulary.

  Returns:
    The graph description dict (inputs={"words"}, outputs={"ids"}, init_op
    "vocab/init_all_tables", vocabulary, vocabulary_path).
  """
  words = ["kiwi", "lemon", "mango", "olive", "peach"]
  vocabulary_path = os.path.abspath(vocabulary_path)
  os.makedirs(os.path.dirname(vocabulary_path), exist_ok=True)
  with open(vocabulary_path, "w") as f:
    f.write("".join(w + "\n" for w in words))
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("vocab"):
      table = tf.raw_ops.HashTableV2(
          key_dtype=tf.string, value_dtype=tf.int64, shared_name="",
          use_node_name_sharing=True, name="table")
      filename = tf.constant(vocabulary_path, name="vocabulary_file")
      init = tf.raw_ops.InitializeTableFromTextFileV2(
          table_handle=table, filename=filename, key_index=-2,
          value_index=-1, name="table_init")
      init = tf.group(init, name="init_all_tables")
      x = tf.compat.v1.placeholder(tf.string, [None], name="words")
      ids = tf.raw_ops.LookupTableFindV2(
          table_handle=table, keys=x,
          default_value=tf.constant(-1, tf.int64, name="default"))
      ids = tf.reshape(ids, [-1], name="ids")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"words": x}, {"ids": ids}, init_op=init.name,
               vocabulary=words, vocabulary_path=vocabulary_path)


def write_function_library(path: str, variant: str = "a") -> dict:
  """Writes a graph whose function library collides with the other variant.

  Both variants define `scale_fn` (x*2 in "a", x*3 in "b", with gradient
  `scale_grad`), `outer_fn` (calls `scale_fn`; identical text, different
  meaning) and the identical `common_fn` (x+1). `scale_fn` is called both
  directly (node op) and through `PartitionedCall` (func attr). Tensors:
  `fn/x:0` float [-1, 3] -> `fn/y:0` float [-1, 3].

  Args:
    path: Output file.
    variant: "a" or "b".

  Returns:
    The graph description dict (inputs={"x"}, outputs={"y"}).
  """
  factors = {"a": 2.0, "b": 3.0}
  if variant not in factors:
    raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
  factor = factors[variant]
  graph = tf.Graph()
  with graph.as_default():

    @tf_function.Defun(tf.float32, tf.float32, func_name="scale_grad")
    def scale_grad(unused_x, dy):
      return dy * factor

    @tf_function.Defun(tf.float32, func_name="scale_fn",
                       grad_func=scale_grad)
    def scale_fn(x):
      return x * factor

    @tf_function.Defun(tf.float32, func_name="common_fn")
    def common_fn(x):
      return x + 1.0

    @tf_function.Defun(tf.float32, func_name="outer_fn")
    def outer_fn(x):
      return common_fn(scale_fn(x))

    with tf.compat.v1.name_scope("fn"):
      x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
      direct = outer_fn(x)
      direct.set_shape([None, 3])
      called = tf.raw_ops.PartitionedCall(
          args=[x], Tout=[tf.float32], f=scale_fn, name="call")[0]
      called.set_shape([None, 3])
      y = tf.add(direct, called, name="y")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"x": x}, {"y": y}, factor=factor)


def write_large_const(path: str, nbytes: int, seed: int = 1) -> dict:
  """Writes a graph whose weight constant holds about `nbytes` bytes.

  Tensors: `large/input:0` float [-1, 8] -> `large/output:0` float [-1, m]
  with m = nbytes // 32, computed as input @ weights (float32 [8, m], i.e.
  nbytes bytes) + bias (float32 [m]).

  Args:
    path: Output file.
    nbytes: Size of the weights constant in bytes (at least 32).
    seed: Seed of the random weights.

  Returns:
    The graph description dict (inputs={"input"}, outputs={"output"}) plus
    "weights_bytes".
  """
  columns = max(1, nbytes // 32)
  rng = _rng(seed)
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("large"):
      x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="input")
      weights = tf.constant(
          rng.standard_normal((8, columns)).astype(np.float32),
          name="weights")
      bias = tf.constant(rng.standard_normal(columns).astype(np.float32),
                         name="bias")
      y = tf.add(tf.matmul(x, weights), bias, name="output")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"input": x}, {"output": y},
               weights_bytes=8 * columns * 4)


def _parse_examples(prefix: str, required_feature: bool = False
                    ) -> tuple[tf.Tensor, tf.Tensor]:
  serialized = tf.compat.v1.placeholder(
      tf.string, [None], name="input_example_tensor")
  default = None if required_feature else [0.0] * _EXAMPLE_FEATURES
  features = tf.io.parse_example(
      serialized, {
          "x": tf.io.FixedLenFeature([_EXAMPLE_FEATURES], tf.float32,
                                     default_value=default)
      },
      name="parse")
  del prefix
  return serialized, features["x"]


def write_classifier(path: str, seed: int = 2,
                     required_feature: bool = False) -> dict:
  """Writes a classify-ready graph (serialized tf.Example in, classes/scores).

  Tensors: `classifier/input_example_tensor:0` string [-1] (tf.Example with
  float feature "x" of length 4, default zeros) -> `classifier/classes:0`
  string [-1, 3] and `classifier/scores:0` float [-1, 3].

  Args:
    path: Output file.
    seed: Seed of the random weights.
    required_feature: Parse "x" without a default, so an empty tf.Example
      fails (as in most real classifiers).

  Returns:
    The graph description dict (method "classify", inputs={"inputs"},
    outputs={"classes", "scores"}).
  """
  rng = _rng(seed)
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("classifier"):
      serialized, x = _parse_examples("classifier", required_feature)
      w = tf.constant(rng.normal(0, 1, (_EXAMPLE_FEATURES, 3)).astype(
          np.float32), name="weights")
      scores = tf.nn.softmax(tf.matmul(x, w), name="scores")
      labels = tf.constant([list(_CLASS_LABELS)], name="labels")
      classes = tf.tile(labels, tf.stack([tf.shape(serialized)[0], 1]))
      classes = tf.identity(classes, name="classes")
      classes.set_shape([None, len(_CLASS_LABELS)])
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"inputs": serialized},
               {"classes": classes, "scores": scores}, method="classify",
               labels=[l.decode() for l in _CLASS_LABELS])


def write_regressor(path: str, seed: int = 3,
                    required_feature: bool = False) -> dict:
  """Writes a regress-ready graph (serialized tf.Example in, float out).

  Tensors: `regressor/input_example_tensor:0` string [-1] (feature "x" float
  of length 4) -> `regressor/outputs:0` float [-1].

  Args:
    path: Output file.
    seed: Seed of the random weights.
    required_feature: Parse "x" without a default, so an empty tf.Example
      fails.

  Returns:
    The graph description dict (method "regress", inputs={"inputs"},
    outputs={"outputs"}).
  """
  rng = _rng(seed)
  graph = tf.Graph()
  with graph.as_default():
    with tf.compat.v1.name_scope("regressor"):
      serialized, x = _parse_examples("regressor", required_feature)
      w = tf.constant(rng.normal(0, 1, (_EXAMPLE_FEATURES,)).astype(
          np.float32), name="weights")
      y = tf.reduce_sum(x * w, axis=1)
      y = tf.add(y, 0.5, name="outputs")
  _write_graph_def(graph.as_graph_def(), path)
  return _info(path, {"inputs": serialized}, {"outputs": y}, method="regress")


def make_example(values: Sequence[float]) -> bytes:
  """Returns a serialized tf.Example with float feature "x" = values."""
  example = tf.train.Example(features=tf.train.Features(feature={
      "x": tf.train.Feature(float_list=tf.train.FloatList(value=values))
  }))
  return example.SerializeToString()


def make_inputs(info: Mapping[str, Any], batch_size: int = 2,
                seed: int = 0) -> dict:
  """Synthesizes a feed for a graph described by a `write_*` result.

  Args:
    info: The dict a `write_*` function returned.
    batch_size: Size of the unknown leading dimension.
    seed: Seed of the random values.

  Returns:
    {alias: numpy array} for every input alias. String inputs of
    classify/regress graphs get serialized tf.Examples; other string inputs
    get words (from the table's vocabulary when there is one, plus an
    unknown word).
  """
  rng = _rng(seed)
  feeds = {}
  for alias, tensor in info["inputs"].items():
    dtype = info["dtypes"][tensor]
    shape = [batch_size if d == -1 else d for d in info["shapes"][tensor]]
    if dtype == "string":
      if info["method"] in ("classify", "regress"):
        values = [make_example(rng.normal(0, 1, _EXAMPLE_FEATURES).tolist())
                  for _ in range(int(np.prod(shape)))]
      else:
        vocabulary = list(info.get("vocabulary", [])) + ["unknown-word"]
        values = [vocabulary[i % len(vocabulary)].encode()
                  for i in range(int(np.prod(shape)))]
      feeds[alias] = np.array(values, dtype=object).reshape(shape)
    elif dtype.startswith("float"):
      feeds[alias] = rng.normal(0, 1, shape).astype(dtype)
    else:
      feeds[alias] = rng.randint(0, 5, shape).astype(dtype)
  return feeds


def run_frozen(info: Mapping[str, Any], feeds: Mapping[str, np.ndarray],
               config: Optional[tf.compat.v1.ConfigProto] = None) -> dict:
  """Runs the frozen graph alone and returns {output alias: numpy array}.

  Args:
    info: The dict a `write_*` function returned (its "path" is read).
    feeds: {input alias: value}, e.g. from `make_inputs`.
    config: Session config (default: TensorFlow's default).

  Returns:
    {output alias: value} as the frozen graph computes it.
  """
  with tf.io.gfile.GFile(info["path"], "rb") as f:
    data = f.read()
  graph_def = tf.compat.v1.GraphDef()
  if info["path"].endswith(".pbtxt"):
    text_format.Parse(data.decode("utf-8"), graph_def)
  else:
    graph_def.ParseFromString(data)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
  with tf.compat.v1.Session(graph=graph, config=config) as sess:
    if info.get("init_op"):
      sess.run(info["init_op"])
    fetches = dict(info["outputs"])
    feed_dict = {info["inputs"][alias]: value for alias, value in feeds.items()}
    return sess.run(fetches, feed_dict=feed_dict)


def _toml_value(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return json.dumps(value)
  if isinstance(value, Mapping):
    items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                      for k, v in value.items())
    return "{ " + items + " }" if items else "{}"
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"
  raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def write_spec(path: str, models: Sequence[Mapping[str, Any]],
               **top: Any) -> str:
  """Writes a TOML merge spec.

  Args:
    path: Output file.
    models: One mapping per [[model]] table, written key by key as given
      (so tests can write unknown or missing keys), e.g.
      {"signature_name": "a", "frozen": "a.pb", "inputs": {...},
      "outputs": {...}}. A `write_*` info dict can be turned into one with
      `model_entry`.
    **top: Top-level keys such as message="...", serving_default="a".

  Returns:
    `path`.
  """
  lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
  for model in models:
    lines.append("")
    lines.append("[[model]]")
    lines.extend(f"{key} = {_toml_value(value)}"
                 for key, value in model.items())
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def model_entry(signature_name: str, info: Mapping[str, Any],
                frozen: Optional[str] = None, **overrides: Any) -> dict:
  """Returns a [[model]] mapping for `write_spec` from a `write_*` info.

  Args:
    signature_name: The model's signature name.
    info: The dict a `write_*` function returned.
    frozen: Path written into the spec (default: info["path"]).
    **overrides: Keys to replace or add (e.g. method="predict").
  """
  entry = {
      "signature_name": signature_name,
      "frozen": frozen if frozen is not None else info["path"],
      "inputs": dict(info["inputs"]),
      "outputs": dict(info["outputs"]),
      "method": info["method"],
  }
  entry.update(overrides)
  return entry

