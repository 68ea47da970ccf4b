"""Writes every test graph of `graphs` plus a merge spec using them.

  bazel run //python/merge/testdata:write_graphs -- --out_dir=/tmp/frozen
  bazel run //python/merge -- --spec=/tmp/frozen/merge.toml \
      --output_base=/tmp/models/merged
"""

import os
from typing import Sequence

from absl import app
from absl import flags

from python.merge.testdata import graphs

_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Directory the graphs and merge.toml are written to.",
    required=True)
_LARGE_BYTES = flags.DEFINE_integer(
    "large_bytes", 2 << 20, "Size of the large constant of large_const.pb.",
    lower_bound=32)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = os.path.abspath(_OUT_DIR.value)
  infos = {
      "hyaudio": graphs.write_hyaudio(os.path.join(out, "hyaudio.pb")),
      "while_loop": graphs.write_while_loop(
          os.path.join(out, "while_loop.pb")),
      "lookup_table": graphs.write_lookup_table(
          os.path.join(out, "lookup_table.pb")),
      "function_library_a": graphs.write_function_library(
          os.path.join(out, "function_library_a.pb"), "a"),
      "function_library_b": graphs.write_function_library(
          os.path.join(out, "function_library_b.pb"), "b"),
      "large_const": graphs.write_large_const(
          os.path.join(out, "large_const.pb"), _LARGE_BYTES.value),
      "classifier": graphs.write_classifier(
          os.path.join(out, "classifier.pb")),
      "regressor": graphs.write_regressor(os.path.join(out, "regressor.pb")),
  }
  spec = graphs.write_spec(
      os.path.join(out, "merge.toml"),
      [graphs.model_entry(name, info, frozen=os.path.basename(info["path"]))
       for name, info in infos.items()],
      message="every test graph", serving_default="hyaudio")
  for name, info in infos.items():
    print(f"{info['path']}: {name} inputs={info['inputs']} "
          f"outputs={info['outputs']}")
  print(f"{spec}: merge spec")


if __name__ == "__main__":
  app.run(main)
