r"""Writers of small SavedModels for the python/serve tests.

* `write_tf1_model(export_dir, scale)`: built with TF1's SavedModelBuilder.
  Signatures (all results are multiplied by `scale`, so a response tells which
  version produced it):
  - `serving_default` (predict): x float[?,3] -> y = x*scale,
    total = sum(x*scale, axis=1).
  - `classify` (classify): serialized Examples with float feature `x` (3
    values) and optional `bias` -> classes [["pos","neg"]], scores
    [(s, -s)] with s = (sum(x) + bias) * scale.
  - `regress` (regress): same Examples -> outputs [s].
  - `bump` (predict, no inputs): increments a counter, returns it. The
    warmup file replays it `WARMUP_RECORDS` times.
  - `count` (predict, no inputs): reads that counter (how many warmups ran).
  - `slow` (predict): n int64 scalar -> total = sum(range(n)) in a
    while_loop, after incrementing `started` (read by signature `started`).
* `write_tf2_model(export_dir, scale)`: tf.saved_model.save of a tf.Module:
  `serving_default`: x float[?] -> y = x*scale + 1; `echo_int`: k int32[?]
  -> k2 = 2*k.
* `write_warmup_file(export_dir, requests)`: the TF Serving warmup TFRecord.

Regenerate by hand:
  bazel run //python/serve/testdata:write_models -- --out_dir=/tmp/models
"""

import os
from typing import Iterable, Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_RECORDS = 2
CLASS_LABELS = (b'pos', b'neg')


def write_warmup_file(export_dir: str,
                      requests: Iterable[predict_pb2.PredictRequest]) -> str:
  """Writes assets.extra/tf_serving_warmup_requests with predict logs.

  Args:
    export_dir: The SavedModel version directory.
    requests: Predict requests to replay at load.

  Returns:
    The path of the warmup file.
  """
  extra = os.path.join(export_dir, 'assets.extra')
  tf.io.gfile.makedirs(extra)
  path = os.path.join(extra, 'tf_serving_warmup_requests')
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def _signature(inputs, outputs, method=tf.saved_model.PREDICT_METHOD_NAME):
  info = tf.compat.v1.saved_model.utils.build_tensor_info
  return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
      inputs={k: info(v) for k, v in inputs.items()},
      outputs={k: info(v) for k, v in outputs.items()},
      method_name=method)


def write_tf1_model(export_dir: str, scale: float = 1.0,
                    warmup: bool = True) -> str:
  """Writes the TF1 test model described in the module docstring.

  Args:
    export_dir: Version directory to create (must not exist).
    scale: Multiplier of every result.
    warmup: Whether to write the warmup file (WARMUP_RECORDS `bump` calls).

  Returns:
    `export_dir`.
  """
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name='x')
    y = tf.multiply(x, scale, name='y')
    total = tf.reduce_sum(y, axis=1, name='total')

    examples = tf.compat.v1.placeholder(tf.string, [None], name='examples')
    features = tf.io.parse_example(examples, {
        'x': tf.io.FixedLenFeature([3], tf.float32),
        'bias': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    })
    score = (tf.reduce_sum(features['x'], axis=1, keepdims=True) +
             features['bias']) * scale
    scores = tf.concat([score, -score], axis=1, name='scores')
    classes = tf.tile(tf.constant([list(CLASS_LABELS)]),
                      [tf.shape(examples)[0], 1], name='classes')
    regression = tf.identity(score, name='regression')

    counter = tf.compat.v1.get_variable(
        'warmup_counter', [], tf.int64, tf.zeros_initializer(),
        use_resource=True)
    bump = tf.identity(counter.assign_add(1), name='bump')
    count = tf.identity(counter.read_value(), name='count')

    started = tf.compat.v1.get_variable(
        'slow_started', [], tf.int64, tf.zeros_initializer(),
        use_resource=True)
    n = tf.compat.v1.placeholder(tf.int64, [], name='n')
    with tf.control_dependencies([started.assign_add(1)]):
      i0 = tf.constant(0, tf.int64)
    _, slow_total = tf.while_loop(
        lambda i, acc: i < n, lambda i, acc: (i + 1, acc + i),
        [i0, tf.constant(0, tf.int64)])
    slow_total = tf.identity(slow_total, name='slow_total')
    started_value = tf.identity(started.read_value(), name='started')

    signatures = {
        'serving_default': _signature({'x': x}, {'y': y, 'total': total}),
        'classify': _signature(
            {'inputs': examples}, {'classes': classes, 'scores': scores},
            tf.saved_model.CLASSIFY_METHOD_NAME),
        'regress': _signature({'inputs': examples}, {'outputs': regression},
                              tf.saved_model.REGRESS_METHOD_NAME),
        'bump': _signature({}, {'count': bump}),
        'count': _signature({}, {'count': count}),
        'slow': _signature({'n': n}, {'total': slow_total}),
        'started': _signature({}, {'started': started_value}),
    }
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.SERVING], signature_def_map=signatures)
      builder.save()
  if warmup:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'warmup'
    request.model_spec.signature_name = 'bump'
    write_warmup_file(export_dir, [request] * WARMUP_RECORDS)
  return export_dir


class _Tf2Model(tf.Module):

  def __init__(self, scale: float):
    super().__init__()
    self.scale = tf.Variable(scale, dtype=tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def serve(self, x):
    return {'y': x * self.scale + 1.0}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name='k')])
  def echo_int(self, k):
    return {'k2': k * 2}


def write_tf2_model(export_dir: str, scale: float = 1.0) -> str:
  """Writes the TF2 test model described in the module docstring.

  Args:
    export_dir: Version directory to create.
    scale: Multiplier in `serving_default`.

  Returns:
    `export_dir`.
  """
  module = _Tf2Model(scale)
  tf.saved_model.save(module, export_dir, signatures={
      'serving_default': module.serve,
      'echo_int': module.echo_int,
  })
  return export_dir


def write_versions(base_path: str, kind: str, versions: Sequence[int]) -> None:
  """Writes versions `<base_path>/<v>` of a test model with scale = v.

  Args:
    base_path: Model base path.
    kind: "tf1" or "tf2".
    versions: Version numbers to write.

  Raises:
    ValueError: unknown kind.
  """
  writers = {'tf1': write_tf1_model, 'tf2': write_tf2_model}
  if kind not in writers:
    raise ValueError(f'kind must be one of {sorted(writers)}, got {kind!r}')
  for version in versions:
    writers[kind](os.path.join(base_path, str(version)), float(version))

