"""Writes the hyaudio example's frozen graph (hyaudio.pb) and its merge spec.

Usage:
  bazel run //examples/hyaudio:make_graph -- --output_dir=/tmp/examples/hyaudio
  bazel run //python/merge -- --spec=/tmp/examples/hyaudio/merge.toml \
      --output_base=/tmp/models/hyaudio
"""

import os
import shutil

from absl import app
from absl import flags
from absl import logging

from examples import runfiles_path
from examples.hyaudio import hyaudio_graph

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to write hyaudio.pb and merge.toml into.",
    required=True)
_SEED = flags.DEFINE_integer("seed", 1, "Picks the model's weights.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  info = hyaudio_graph.write_graph(_OUTPUT_DIR.value, seed=_SEED.value)
  shutil.copyfile(runfiles_path.example_file("hyaudio/merge.toml"),
                  os.path.join(_OUTPUT_DIR.value, "merge.toml"))
  logging.info("wrote %s and merge.toml", info.path)
  print(info.path)


if __name__ == "__main__":
  app.run(main)
