r"""The I/O floor of a merge: the least work that produces a merged bundle.

  bazel run //tests/bench:floor_merge -- --spec=merge.toml --export_dir=/tmp/x

Imports TensorFlow (as every merger must), parses each frozen graph of the
spec once, prefixes node names and inputs with the signature name, and writes
one `saved_model.pb` (tag "serve", one predict signature per model, weights
left inline as constants). No validation, no variables, no warmup, no
verification, no atomic publish: what any merge must at least pay. The merge
benchmark times it as a whole process next to `//python/merge`.
"""

import os
import tomllib
from typing import Sequence

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

_SPEC = flags.DEFINE_string("spec", None, "Merge spec (TOML).")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Directory receiving saved_model.pb (created).")
flags.mark_flags_as_required(["spec", "export_dir"])


def _prefix_input(prefix: str, name: str) -> str:
  if name.startswith("^"):
    return "^" + prefix + name[1:]
  return prefix + name


def floor_merge(spec_path: str, export_dir: str) -> int:
  """Writes the merged saved_model.pb; returns the number of nodes."""
  with open(spec_path, "rb") as f:
    spec = tomllib.load(f)
  base = os.path.dirname(os.path.abspath(spec_path))
  # Built in place inside the SavedModel: no copy of the merged graph.
  saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
  merged = saved_model.meta_graphs.add()
  merged.meta_info_def.tags.append("serve")
  graph = merged.graph_def
  for model in spec["model"]:
    scope = model["signature_name"] + "/"
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(base, model["frozen"]), "rb") as f:
      graph_def.ParseFromString(f.read())
    dtypes = {}
    for node in graph_def.node:
      if node.op == "Placeholder":
        dtypes[node.name] = node.attr["dtype"].type
      node.name = scope + node.name
      inputs = [_prefix_input(scope, i) for i in node.input]
      del node.input[:]
      node.input.extend(inputs)
    graph.versions.CopyFrom(graph_def.versions)
    graph.node.extend(graph_def.node)
    del graph_def
    signature = merged.signature_def[model["signature_name"]]
    signature.method_name = "tensorflow/serving/predict"
    for kind, infos in (("inputs", signature.inputs),
                        ("outputs", signature.outputs)):
      for alias, tensor in model[kind].items():
        infos[alias].name = scope + tensor
        infos[alias].dtype = dtypes.get(tensor.split(":")[0],
                                        tf.float32.as_datatype_enum)
  os.makedirs(export_dir, exist_ok=True)
  with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
    f.write(saved_model.SerializeToString())
  return len(graph.node)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  floor_merge(_SPEC.value, _EXPORT_DIR.value)


if __name__ == "__main__":
  app.run(main)
