r"""The seed approach: what the original TF1 merge tool did.

  bazel run //tests/bench:seed_merge -- --spec=merge.toml --export_dir=/tmp/x

For each model of the spec: parse its frozen graph and `tf.import_graph_def`
it into ONE `tf.Graph` under the signature name; build one predict
SignatureDef per model; save everything with
`tf.compat.v1.saved_model.Builder` (`add_meta_graph_and_variables` +
`save`). The whole merged graph and its serialized copy live in memory, and
the result is one protobuf: past 2 GiB of weights it cannot be written.
The merge benchmark times it as a whole process next to `//python/merge`.
"""

import os
import tomllib
from typing import Sequence

from absl import app
from absl import flags
import tensorflow as tf

_SPEC = flags.DEFINE_string("spec", None, "Merge spec (TOML).")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "SavedModel directory to write (must not exist).")
flags.mark_flags_as_required(["spec", "export_dir"])


def seed_merge(spec_path: str, export_dir: str) -> None:
  """Imports every model into one graph and saves it with SavedModelBuilder."""
  with open(spec_path, "rb") as f:
    spec = tomllib.load(f)
  base = os.path.dirname(os.path.abspath(spec_path))
  v1 = tf.compat.v1
  graph = tf.Graph()
  signature_map = {}
  with graph.as_default():
    for model in spec["model"]:
      name = model["signature_name"]
      graph_def = v1.GraphDef()
      with v1.gfile.GFile(os.path.join(base, model["frozen"]), "rb") as f:
        graph_def.ParseFromString(f.read())
      v1.import_graph_def(graph_def, name=name)
      del graph_def

      def infos(aliases, scope=name):
        return {
            alias: v1.saved_model.utils.build_tensor_info(
                graph.get_tensor_by_name(f"{scope}/{tensor}"))
            for alias, tensor in aliases.items()
        }

      signature_map[name] = (
          v1.saved_model.signature_def_utils.build_signature_def(
              inputs=infos(model["inputs"]), outputs=infos(model["outputs"]),
              method_name=v1.saved_model.signature_constants
              .PREDICT_METHOD_NAME))
    builder = v1.saved_model.Builder(export_dir)
    with v1.Session(graph=graph) as sess:
      builder.add_meta_graph_and_variables(
          sess, [v1.saved_model.tag_constants.SERVING],
          signature_def_map=signature_map, strip_default_attrs=True)
    builder.save()


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  seed_merge(_SPEC.value, _EXPORT_DIR.value)


if __name__ == "__main__":
  app.run(main)
