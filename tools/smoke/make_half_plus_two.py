"""Writes TF Serving's classic half_plus_two SavedModel (y = 0.5 * x + 2).

  bazel run //tools/smoke:make_half_plus_two -- --export_dir=/tmp/half_plus_two

Built with the TF1 SavedModelBuilder, with a and b as variables, so loading it
exercises the variable restore path of tensorflow::LoadSavedModel.
"""

from absl import app
from absl import flags
import tensorflow as tf

_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Directory to create; must not exist yet.", required=True)


def write_half_plus_two(export_dir: str) -> None:
  """Writes the model to `export_dir` (which must not exist)."""
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, shape=[None], name="x")
    a = tf.compat.v1.Variable(0.5, name="a")
    b = tf.compat.v1.Variable(2.0, name="b")
    y = tf.add(tf.multiply(a, x), b, name="y")
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      signature = tf.compat.v1.saved_model.predict_signature_def(
          inputs={"x": x}, outputs={"y": y})
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.SERVING],
          signature_def_map={"serving_default": signature},
          strip_default_attrs=True)
      builder.save()


def main(argv):
  del argv  # Unused.
  write_half_plus_two(_EXPORT_DIR.value)


if __name__ == "__main__":
  app.run(main)
