"""Trains the regress example; writes its frozen graph, held-out set and spec.

Usage:
  bazel run //examples/regress:train -- --output_dir=/tmp/examples/regress
  bazel run //python/merge -- --spec=/tmp/examples/regress/merge.toml \
      --output_base=/tmp/models/regress
"""

import os
import shutil

from absl import app
from absl import flags

from examples import runfiles_path
from examples.regress import diabetes_model

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to write diabetes.pb, the test set and "
    "merge.toml into.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "The train/test split seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  files = diabetes_model.write_model(_OUTPUT_DIR.value, seed=_SEED.value)
  shutil.copyfile(runfiles_path.example_file("regress/merge.toml"),
                  os.path.join(_OUTPUT_DIR.value, "merge.toml"))
  print(f"held-out RMSE {files.test_rmse:.2f}")
  for path in (files.graph, files.test_features, files.test_targets):
    print(path)


if __name__ == "__main__":
  app.run(main)
