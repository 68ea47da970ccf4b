r"""Writers of SavedModels shaped like TensorFlow Serving's own testdata.

TF Serving's integration suite and tutorials run against a handful of small
bundles (`servables/tensorflow/testdata` in tensorflow/serving). Nobody in this
project wrote those, which is the point: they are what users' TF1-era and TF2
exports look like, not what our merge writes. These writers rebuild bundles with
the same documented structure (names, signatures, dtypes, shapes, values,
version directory `00000123`) from TensorFlow APIs, so tests can run TF
Serving's cases without copying its binary files.

* `write_half_plus_two(base_path)`: TF1 graph (SavedModelBuilder, ref
  variables `a=0.5`, `b=2`, `c=3`, `a2=0.5`, `c2=3`) that parses serialized
  tf.Examples with the **v1 `ParseExample` op** (dense keys `x` (required) and
  `x2` (default 0) as Const inputs, each `[1]` float), an asset `foo.txt` whose
  name a main op assigns to a variable, and five signatures:
  - `serving_default` (predict): `x` float `[None, 1]` -> `y = a*x + b`.
    `x` is the parse op's output passed through `Identity`, so feeding it
    directly bypasses parsing (TF Serving's canonical request feeds `[2.0]`
    of shape `[1]` and gets `y = [3.0]`).
  - `classify_x_to_y` (classify): `inputs` = serialized Examples -> `scores` = y.
  - `regress_x_to_y` (regress): `inputs` -> `outputs` = y.
  - `regress_x_to_y2` (regress): `inputs` -> `outputs` = `a*x + c`.
  - `regress_x2_to_y3` (regress): `inputs` = the float tensor `x2`
    (not serialized Examples) -> `outputs` = `a2*x2 + c2`.
  `write_half_plus_two(base, b=3.0)` is TF Serving's `half_plus_three`
  (`y = 0.5*x + 3`).
* `write_half_plus_two_tf2(base_path)`: TF2 `tf.saved_model.save` of a
  `tf.Module`, signatures (all method `predict`, as TF2 exports are):
  `serving_default` (`x` float `[1]` -> `y`), `classify_x_to_y` / `regress_x_to_y`
  / `regress_x_to_y2` (`inputs` = serialized Examples `[None]`, parsed with
  ParseExampleV2, -> `scores` / `outputs` `[None, 1]`), `classify_x2_to_y3` /
  `regress_x2_to_y3` (`inputs` float `[1]` -> `scores` / `outputs`).
* `write_counter(base_path)`: TF1 stateful model, a float ref variable
  `counter` (0) and predict signatures `get_counter`, `incr_counter`,
  `incr_counter_by` (input `delta`: float of **unknown rank**, added with
  `AssignAdd`, so only a scalar works) and `reset_counter`, each with one
  output `output`.
* `write_model_config(path, models)`: a text ModelServerConfig.

The models TF Serving's integration suite builds inside its test cases:

* `write_tf_saved_model_save(base_path)`: `tf.saved_model.save` of a
  `tf.train.Checkpoint` with `v1 = 3`, `v2 = 2` and a function of an input `x`
  of **unknown shape** -> `y = v1 * v2 * x`.
* `write_tf_saved_model_save_multiple_signatures(base_path)`:
  `serving_default` -> `y = 1`, `custom_signature_key` -> `y = 2`.
* `write_keras_sequential(base_path, distributed=False)`: a Keras Sequential
  model (input `x` of shape (1,)), an identity `Lambda`; with `distributed`,
  built under a two-CPU `MirroredStrategy` with a `Dense(1)` of ones before
  it (call `set_virtual_cpus(2)` before TensorFlow runs anything). Keras 3
  names the signature's input `inputs` and its output `output_0`; with
  `keras_export`, Keras 3's own `model.export` writes it (input `x`). A
  distributed model written with `tf.saved_model.save` restores none of its
  variables under TensorFlow's C++ loader (`//cc/verify` and so TF Serving:
  "Could not find variable sequential_1/dense/bias"); `model.export` works.

Regenerate by hand:
  bazel run //tests/testdata:write_tf_serving_models -- --out_dir=/tmp/tfs
"""

import os
from typing import Mapping

import tensorflow as tf

VERSION = 123
VERSION_DIR = '00000123'
ASSET_FILENAME = 'foo.txt'
ASSET_CONTENTS = 'asset-file-contents'

HALF_PLUS_TWO_SIGNATURES = ('classify_x_to_y', 'regress_x2_to_y3',
                            'regress_x_to_y', 'regress_x_to_y2',
                            'serving_default')
HALF_PLUS_TWO_TF2_SIGNATURES = ('classify_x2_to_y3', 'classify_x_to_y',
                                'regress_x2_to_y3', 'regress_x_to_y',
                                'regress_x_to_y2', 'serving_default')
COUNTER_SIGNATURES = ('get_counter', 'incr_counter', 'incr_counter_by',
                      'reset_counter')

_v1 = tf.compat.v1


def _signature(inputs, outputs, method):
  info = _v1.saved_model.utils.build_tensor_info
  return _v1.saved_model.signature_def_utils.build_signature_def(
      inputs={k: info(v) for k, v in inputs.items()},
      outputs={k: info(v) for k, v in outputs.items()},
      method_name=method)


def _version_dir(base_path: str, version_dir: str) -> str:
  export_dir = os.path.join(base_path, version_dir)
  if tf.io.gfile.exists(export_dir):
    raise FileExistsError(f'{export_dir} exists; pick a fresh base path')
  return export_dir


def write_half_plus_two(base_path: str, *, b: float = 2.0, c: float = 3.0,
                        version_dir: str = VERSION_DIR) -> str:
  """Writes the TF1 half_plus_two bundle (see the module docstring).

  Args:
    base_path: The model base path; the bundle goes to
      `<base_path>/<version_dir>`.
    b: The bias of `y` (2 for half_plus_two, 3 for half_plus_three).
    c: The bias of `y2` and of `y3`.
    version_dir: The version directory name (TF Serving's is `00000123`).

  Returns:
    The version directory.
  """
  export_dir = _version_dir(base_path, version_dir)
  graph = tf.Graph()
  with graph.as_default():
    a = _v1.Variable(0.5, name='a', use_resource=False)
    b_var = _v1.Variable(b, name='b', use_resource=False)
    c_var = _v1.Variable(c, name='c', use_resource=False)
    serialized = _v1.placeholder(tf.string, [None], name='tf_example')
    parsed = tf.raw_ops.ParseExample(
        serialized=serialized,
        names=tf.constant([], tf.string),
        sparse_keys=[],
        dense_keys=[tf.constant('x'), tf.constant('x2')],
        dense_defaults=[tf.constant([], tf.float32),
                        tf.constant([0.0], tf.float32)],
        sparse_types=[],
        dense_shapes=[[1], [1]])
    x = tf.identity(parsed.dense_values[0], name='x')
    y = tf.identity(tf.add(tf.multiply(a, x), b_var), name='y')
    y2 = tf.identity(tf.add(tf.multiply(a, x), c_var), name='y2')
    x2 = tf.identity(parsed.dense_values[1], name='x2')
    a2 = _v1.Variable(0.5, name='a2', use_resource=False)
    c2 = _v1.Variable(c, name='c2', use_resource=False)
    y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name='y3')

    # An asset: its path goes to the ASSET_FILEPATHS collection, and the main
    # op assigns the file's name to a variable, as TF1 exporters did.
    asset_src = os.path.join(export_dir + '.assets_src', ASSET_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(asset_src))
    with tf.io.gfile.GFile(asset_src, 'w') as f:
      f.write(ASSET_CONTENTS)
    asset_path = tf.constant(asset_src)
    _v1.add_to_collection(_v1.GraphKeys.ASSET_FILEPATHS, asset_path)
    filename = _v1.Variable(ASSET_FILENAME, name='filename_tensor',
                            trainable=False, collections=[],
                            use_resource=False)
    assign_filename = filename.assign(ASSET_FILENAME)

    classify = tf.saved_model.CLASSIFY_METHOD_NAME
    regress = tf.saved_model.REGRESS_METHOD_NAME
    signatures = {
        'serving_default': _signature({'x': x}, {'y': y},
                                      tf.saved_model.PREDICT_METHOD_NAME),
        'classify_x_to_y': _signature({'inputs': serialized}, {'scores': y},
                                      classify),
        'regress_x_to_y': _signature({'inputs': serialized}, {'outputs': y},
                                     regress),
        'regress_x_to_y2': _signature({'inputs': serialized},
                                      {'outputs': y2}, regress),
        'regress_x2_to_y3': _signature({'inputs': x2}, {'outputs': y3},
                                       regress),
    }
    with _v1.Session(graph=graph) as sess:
      sess.run(_v1.global_variables_initializer())
      builder = _v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.SERVING], signature_def_map=signatures,
          assets_collection=_v1.get_collection(_v1.GraphKeys.ASSET_FILEPATHS),
          main_op=tf.group(assign_filename))
      builder.save()
  tf.io.gfile.rmtree(os.path.dirname(asset_src))
  return export_dir


_EXAMPLE_FEATURES = {
    'x': tf.io.FixedLenFeature([1], tf.float32),
    'x2': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
}


class _HalfPlusTwo(tf.Module):
  """The TF2 half_plus_two: y = a*x + b, y2 = a*x + c, y3 = a*x2 + c."""

  def __init__(self):
    super().__init__()
    self.a = tf.Variable(0.5, name='a')
    self.b = tf.Variable(2.0, name='b')
    self.c = tf.Variable(3.0, name='c')

  def _parse(self, inputs):
    return tf.io.parse_example(inputs, _EXAMPLE_FEATURES)

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name='x')])
  def predict(self, x):
    return {'y': self.a * x + self.b}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name='inputs')])
  def classify_x_to_y(self, inputs):
    return {'scores': self.a * self._parse(inputs)['x'] + self.b}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name='inputs')])
  def regress_x_to_y(self, inputs):
    return {'outputs': self.a * self._parse(inputs)['x'] + self.b}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name='inputs')])
  def regress_x_to_y2(self, inputs):
    return {'outputs': self.a * self._parse(inputs)['x'] + self.c}

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32,
                                              name='inputs')])
  def classify_x2_to_y3(self, inputs):
    return {'scores': self.a * inputs + self.c}

  @tf.function(input_signature=[tf.TensorSpec([1], tf.float32,
                                              name='inputs')])
  def regress_x2_to_y3(self, inputs):
    return {'outputs': self.a * inputs + self.c}


def write_half_plus_two_tf2(base_path: str,
                            version_dir: str = VERSION_DIR) -> str:
  """Writes the TF2 half_plus_two bundle (see the module docstring).

  Args:
    base_path: The model base path.
    version_dir: The version directory name.

  Returns:
    The version directory.
  """
  export_dir = _version_dir(base_path, version_dir)
  module = _HalfPlusTwo()
  tf.saved_model.save(module, export_dir, signatures={
      'serving_default': module.predict,
      'classify_x_to_y': module.classify_x_to_y,
      'regress_x_to_y': module.regress_x_to_y,
      'regress_x_to_y2': module.regress_x_to_y2,
      'classify_x2_to_y3': module.classify_x2_to_y3,
      'regress_x2_to_y3': module.regress_x2_to_y3,
  })
  return export_dir


def write_counter(base_path: str, version_dir: str = VERSION_DIR) -> str:
  """Writes the TF1 stateful counter bundle (see the module docstring).

  Args:
    base_path: The model base path.
    version_dir: The version directory name.

  Returns:
    The version directory.
  """
  export_dir = _version_dir(base_path, version_dir)
  predict = tf.saved_model.PREDICT_METHOD_NAME
  graph = tf.Graph()
  with graph.as_default():
    counter = _v1.Variable(0.0, dtype=tf.float32, name='counter',
                           use_resource=False)
    with tf.name_scope('incr_counter_op'):
      incr_counter = counter.assign_add(1.0)
    delta = _v1.placeholder(tf.float32, shape=None, name='delta')
    with tf.name_scope('incr_counter_by_op'):
      incr_counter_by = counter.assign_add(delta)
    with tf.name_scope('reset_counter_op'):
      reset_counter = counter.assign(0.0)
    signatures = {
        'get_counter': _signature({}, {'output': counter}, predict),
        'incr_counter': _signature({}, {'output': incr_counter}, predict),
        'incr_counter_by': _signature({'delta': delta},
                                      {'output': incr_counter_by}, predict),
        'reset_counter': _signature({}, {'output': reset_counter}, predict),
    }
    with _v1.Session(graph=graph) as sess:
      sess.run(_v1.global_variables_initializer())
      builder = _v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.SERVING], signature_def_map=signatures)
      builder.save()
  return export_dir


def write_model_config(path: str, models: Mapping[str, str]) -> str:
  """Writes a text ModelServerConfig serving `models` (name -> base path).

  Args:
    path: The file to write.
    models: Model name -> absolute base path, in the order to list them.

  Returns:
    `path`.
  """
  entries = ''.join(
      f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n'
      f'    model_platform: "tensorflow"\n  }}\n'
      for name, base in models.items())
  with open(path, 'w', encoding='utf-8') as f:
    f.write(f'model_config_list {{\n{entries}}}\n')
  return path


def write_tf_saved_model_save(base_path: str,
                              version_dir: str = VERSION_DIR) -> str:
  """Writes `y = v1 * v2 * x` (v1 = 3, v2 = 2), x of unknown shape."""
  export_dir = _version_dir(base_path, version_dir)
  root = tf.train.Checkpoint()
  root.v1 = tf.Variable(3.)
  root.v2 = tf.Variable(2.)
  root.f = tf.function(lambda x: {'y': root.v1 * root.v2 * x})
  to_save = root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
  tf.saved_model.save(root, export_dir, to_save)
  return export_dir


def write_tf_saved_model_save_multiple_signatures(
    base_path: str, version_dir: str = VERSION_DIR) -> str:
  """Writes serving_default (y = 1) and custom_signature_key (y = 2)."""
  export_dir = _version_dir(base_path, version_dir)
  root = tf.train.Checkpoint()
  root.f = tf.function(lambda x: {'y': 1.},
                       input_signature=[tf.TensorSpec(None, tf.float32)])
  root.g = tf.function(lambda x: {'y': 2.},
                       input_signature=[tf.TensorSpec(None, tf.float32)])
  tf.saved_model.save(root, export_dir, signatures={
      'serving_default': root.f, 'custom_signature_key': root.g})
  return export_dir


def set_virtual_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (before any TF op runs)."""
  physical = tf.config.list_physical_devices('CPU')
  if tf.config.get_logical_device_configuration(physical[0]) is None:
    tf.config.set_logical_device_configuration(
        physical[0], [tf.config.LogicalDeviceConfiguration()] * count)


def write_keras_sequential(base_path: str, distributed: bool = False,
                           keras_export: bool = False,
                           version_dir: str = VERSION_DIR) -> str:
  """Writes a Keras Sequential identity (or Dense of ones) model.

  Args:
    base_path: The model base path.
    distributed: Build under a two-CPU MirroredStrategy, with a Dense(1).
    keras_export: Write with Keras 3's `model.export` (signature input `x`,
      output `output_0`) instead of `tf.saved_model.save` (`inputs`,
      `output_0`).
    version_dir: The version directory name.

  Returns:
    The version directory.
  """
  export_dir = _version_dir(base_path, version_dir)

  def build():
    model = tf.keras.models.Sequential()
    model.add(tf.keras.layers.Input(dtype='float32', shape=(1,), name='x'))
    if distributed:
      model.add(tf.keras.layers.Dense(1, kernel_initializer='ones',
                                      bias_initializer='zeros'))
    model.add(tf.keras.layers.Lambda(lambda x: x, name='y'))
    return model

  if distributed:
    strategy = tf.distribute.MirroredStrategy(devices=('/cpu:0', '/cpu:1'))
    with strategy.scope():
      model = build()
  else:
    model = build()
  if keras_export:
    model.export(export_dir)
  else:
    tf.saved_model.save(model, export_dir)
  return export_dir
