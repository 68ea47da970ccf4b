"""Writes small SavedModels that exercise the C++ verifier.

Each `write_*` function writes one complete SavedModel into `export_dir` (the
directory must not exist yet) and returns a dict describing its signatures, so
tests can assert against what was written instead of hard-coding it.

Bundles:
  * `write_tf1_bundle`: TF1-style (`tf.compat.v1.saved_model.Builder`) with
    variables; `serving_default` (predict), `scaled` (predict) and `constant`
    (a predict signature without inputs).
  * `write_tf2_bundle`: `tf.saved_model.save` of a `tf.Module` with a variable;
    `serving_default` and `counter` (no inputs).
  * `write_classify_regress_bundle`: TF1-style, serialized `tf.Example` input,
    `classify` (classes + scores), `regress` and `serving_default` (predict).

Hostile bundles (not in `WRITERS`; tests write them on demand):
`write_write_file_bundle` (a WriteFile node), `write_print_in_function_bundle`
(PrintV2 inside a function body), `write_endless_loop_bundle` (a while loop
that never ends).

`write_warmup(export_dir, records)` writes `assets.extra/
tf_serving_warmup_requests` as TF Serving reads it (TFRecord of
`tensorflow.serving.PredictionLog`); `predict_log`, `classify_log` and
`regress_log` build the records.
"""

import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import regression_pb2

WARMUP_RELATIVE_PATH = os.path.join("assets.extra",
                                    "tf_serving_warmup_requests")

_V1 = tf.compat.v1


def _tensor_info(tensor: Any) -> Any:
  return _V1.saved_model.utils.build_tensor_info(tensor)


def write_tf1_bundle(export_dir: str) -> dict[str, Any]:
  """Writes a TF1-style SavedModel with variables.

  Args:
    export_dir: Directory to create; must not exist.

  Returns:
    {"signatures": {name: {"method": ..., "inputs": {alias: tensor},
    "outputs": {alias: tensor}}}, "tags": ["serve"]}.
  """
  graph = tf.Graph()
  with graph.as_default():
    x = _V1.placeholder(tf.float32, shape=[None, 3], name="x")
    weights = _V1.get_variable(
        "weights", initializer=tf.constant(np.arange(6, dtype=np.float32)
                                           .reshape(3, 2)))
    bias = _V1.get_variable("bias", initializer=tf.constant([0.5, -0.5]))
    y = tf.identity(tf.matmul(x, weights) + bias, name="y")
    factor = _V1.placeholder_with_default(tf.constant(2.0), shape=[],
                                          name="factor")
    scaled = tf.identity(y * factor, name="scaled")
    total = tf.identity(tf.reduce_sum(weights), name="total")
    signatures = {
        "serving_default": _V1.saved_model.predict_signature_def(
            inputs={"x": x}, outputs={"y": y}),
        "scaled": _V1.saved_model.predict_signature_def(
            inputs={"x": x, "factor": factor}, outputs={"scaled": scaled}),
        # predict_signature_def refuses empty inputs; TF Serving does not.
        "constant": _V1.saved_model.build_signature_def(
            inputs={}, outputs={"total": _tensor_info(total)},
            method_name=_V1.saved_model.PREDICT_METHOD_NAME),
    }
    with _V1.Session(graph=graph) as sess:
      sess.run(_V1.global_variables_initializer())
      builder = _V1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [_V1.saved_model.tag_constants.SERVING],
          signature_def_map=signatures, strip_default_attrs=True)
      builder.save()
  return {"tags": ["serve"], "signatures": _describe(signatures)}


class _Tf2Model(tf.Module):
  """A tiny TF2 model: y = x * scale, and a stateless counter signature."""

  def __init__(self):
    super().__init__()
    self.scale = tf.Variable([1.0, 2.0, 3.0, 4.0], name="scale")

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32,
                                              name="features")])
  def serve(self, features):
    return {"scaled": features * self.scale,
            "norm": tf.reduce_sum(features, axis=1)}

  @tf.function(input_signature=[])
  def counter(self):
    return {"count": tf.constant(7, dtype=tf.int64)}


def write_tf2_bundle(export_dir: str) -> dict[str, Any]:
  """Writes a SavedModel with `tf.saved_model.save` (TF2 export).

  Args:
    export_dir: Directory to create; must not exist.

  Returns:
    {"tags": ["serve"], "signature_names": [...]}.
  """
  model = _Tf2Model()
  signatures = {"serving_default": model.serve, "counter": model.counter}
  tf.saved_model.save(model, export_dir, signatures=signatures)
  return {"tags": ["serve"], "signature_names": sorted(signatures)}


def write_classify_regress_bundle(export_dir: str) -> dict[str, Any]:
  """Writes a TF1-style SavedModel with classify and regress signatures.

  Inputs are serialized `tf.Example`s with an optional float feature "x" of
  length 2 (default zeros), a required int64 feature "scale" of length 1 and
  a sparse string feature "tags": an empty Example is not a valid input, so
  smoke runs must synthesize the features the graph parses.

  Args:
    export_dir: Directory to create; must not exist.

  Returns:
    Same structure as `write_tf1_bundle`.
  """
  graph = tf.Graph()
  with graph.as_default():
    serialized = _V1.placeholder(tf.string, shape=[None], name="tf_example")
    features = _V1.io.parse_example(
        serialized,
        {"x": _V1.io.FixedLenFeature([2], tf.float32, default_value=[0., 0.]),
         "scale": _V1.io.FixedLenFeature([1], tf.int64),
         "tags": _V1.io.VarLenFeature(tf.string)})
    # "tags" (optional) is parsed only; "scale" (required) scales "x".
    x = features["x"] * tf.cast(features["scale"], tf.float32)
    weights = _V1.get_variable(
        "w", initializer=tf.constant([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]]))
    logits = tf.matmul(x, weights)
    scores = tf.nn.softmax(logits, name="scores")
    batch = tf.shape(scores)[0]
    classes = tf.tile(tf.constant([["a", "b", "c"]]), [batch, 1],
                      name="classes")
    value = tf.identity(tf.reduce_sum(x, axis=1, keepdims=True) + 1.0,
                        name="value")
    signatures = {
        "classify": _V1.saved_model.classification_signature_def(
            serialized, classes, scores),
        "regress": _V1.saved_model.regression_signature_def(serialized,
                                                            value),
        "serving_default": _V1.saved_model.predict_signature_def(
            inputs={"x": x}, outputs={"scores": scores}),
    }
    with _V1.Session(graph=graph) as sess:
      sess.run(_V1.global_variables_initializer())
      builder = _V1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [_V1.saved_model.tag_constants.SERVING],
          signature_def_map=signatures, strip_default_attrs=True)
      builder.save()
  return {"tags": ["serve"], "signatures": _describe(signatures)}


def _describe(signatures: Mapping[str, Any]) -> dict[str, Any]:
  return {
      name: {
          "method": sig.method_name,
          "inputs": {k: v.name for k, v in sig.inputs.items()},
          "outputs": {k: v.name for k, v in sig.outputs.items()},
      } for name, sig in signatures.items()
  }


def predict_log(signature_name: str,
                inputs: Mapping[str, np.ndarray]) -> bytes:
  """Returns a serialized PredictionLog holding one PredictRequest."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name="model",
                                     signature_name=signature_name))
  for alias, value in inputs.items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
  log = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  return log.SerializeToString()


def _example_input(values: Sequence[Sequence[float]]) -> input_pb2.Input:
  examples = []
  for row in values:
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.extend(row)
    example.features.feature["scale"].int64_list.value.append(1)
    examples.append(example)
  return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))


def classify_log(signature_name: str,
                 values: Sequence[Sequence[float]]) -> bytes:
  """Returns a serialized PredictionLog holding one ClassificationRequest."""
  request = classification_pb2.ClassificationRequest(
      model_spec=model_pb2.ModelSpec(name="model",
                                     signature_name=signature_name),
      input=_example_input(values))
  log = prediction_log_pb2.PredictionLog(
      classify_log=prediction_log_pb2.ClassifyLog(request=request))
  return log.SerializeToString()


def regress_log(signature_name: str,
                values: Sequence[Sequence[float]]) -> bytes:
  """Returns a serialized PredictionLog holding one RegressionRequest."""
  request = regression_pb2.RegressionRequest(
      model_spec=model_pb2.ModelSpec(name="model",
                                     signature_name=signature_name),
      input=_example_input(values))
  log = prediction_log_pb2.PredictionLog(
      regress_log=prediction_log_pb2.RegressLog(request=request))
  return log.SerializeToString()


def write_warmup(export_dir: str, records: Sequence[bytes]) -> str:
  """Writes `records` as the bundle's TF Serving warmup file.

  Args:
    export_dir: An existing SavedModel directory.
    records: Serialized PredictionLog protos (or any bytes, for broken files).

  Returns:
    The path of the written warmup file.
  """
  path = os.path.join(export_dir, WARMUP_RELATIVE_PATH)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


def default_tf1_warmup(export_dir: str) -> str:
  """Writes warmup records that match `write_tf1_bundle`'s signatures."""
  return write_warmup(export_dir, [
      predict_log("serving_default",
                  {"x": np.ones([2, 3], dtype=np.float32)}),
      predict_log("scaled", {"x": np.ones([1, 3], dtype=np.float32),
                             "factor": np.float32(3.0)}),
      predict_log("constant", {}),
  ])


def default_classify_regress_warmup(export_dir: str) -> str:
  """Writes warmup records that match `write_classify_regress_bundle`."""
  return write_warmup(export_dir, [
      classify_log("classify", [[1.0, 2.0], [0.0, 0.5]]),
      regress_log("regress", [[3.0, 4.0]]),
      predict_log("serving_default",
                  {"x": np.zeros([1, 2], dtype=np.float32)}),
  ])


def _write_tf1(export_dir: str, build) -> None:
  """Writes a TF1 SavedModel whose `serving_default` `build()` returns."""
  graph = tf.Graph()
  with graph.as_default():
    inputs, outputs = build()
    signature = _V1.saved_model.predict_signature_def(inputs=inputs,
                                                      outputs=outputs)
    with _V1.Session(graph=graph) as sess:
      builder = _V1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [_V1.saved_model.tag_constants.SERVING],
          signature_def_map={"serving_default": signature})
      builder.save()


def write_write_file_bundle(export_dir: str, target: str) -> None:
  """A bundle whose serving_default writes `target` (a WriteFile node)."""

  def build():
    x = _V1.placeholder(tf.float32, [None], name="x")
    with tf.control_dependencies([tf.io.write_file(target, "written")]):
      y = tf.identity(x, name="y")
    return {"x": x}, {"y": y}

  _write_tf1(export_dir, build)


class _Printer(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
  def serve(self, x):
    tf.print("printing from the graph", x)
    return {"y": x + 1.0}


def write_print_in_function_bundle(export_dir: str) -> None:
  """A TF2 bundle whose signature function body holds a PrintV2 op."""
  model = _Printer()
  tf.saved_model.save(model, export_dir,
                      signatures={"serving_default": model.serve})


def write_endless_loop_bundle(export_dir: str) -> None:
  """A bundle whose serving_default runs a while loop that never ends."""

  def build():
    x = _V1.placeholder(tf.float32, [], name="x")
    y = _V1.while_loop(lambda i: i > -1.0, lambda i: i + 1.0, [x],
                       name="forever")
    return {"x": x}, {"y": tf.identity(y, name="y")}

  _write_tf1(export_dir, build)


WRITERS = {
    "tf1": (write_tf1_bundle, default_tf1_warmup),
    "tf2": (write_tf2_bundle, None),
    "classify_regress": (write_classify_regress_bundle,
                         default_classify_regress_warmup),
}
