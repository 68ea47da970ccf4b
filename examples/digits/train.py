"""Trains the digits example; writes its frozen graphs, held-out set and spec.

Usage:
  bazel run //examples/digits:train -- --output_dir=/tmp/examples/digits
  bazel run //python/merge -- --spec=/tmp/examples/digits/merge.toml \
      --output_base=/tmp/models/digits
"""

import os
import shutil

from absl import app
from absl import flags

from examples import runfiles_path
from examples.digits import digits_model

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to write the graphs, test set and "
    "merge.toml into.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "The train/test split seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  files = digits_model.write_model(_OUTPUT_DIR.value, seed=_SEED.value)
  shutil.copyfile(runfiles_path.example_file("digits/merge.toml"),
                  os.path.join(_OUTPUT_DIR.value, "merge.toml"))
  print(f"train accuracy {files.train_accuracy:.4f}, held-out accuracy "
        f"{files.test_accuracy:.4f}")
  for path in (files.predict_graph, files.classify_graph, files.test_images,
               files.test_labels):
    print(path)


if __name__ == "__main__":
  app.run(main)
