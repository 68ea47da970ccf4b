"""Writes the verifier's test SavedModels into a directory.

Usage:
  bazel run //cc/verify/testdata:make_bundles -- --output_dir=/tmp/bundles

Writes one SavedModel per kind (`tf1`, `tf2`, `classify_regress`) into
`<output_dir>/<kind>`, with TF Serving warmup records where the kind has them.
"""

import os
import shutil
import tempfile

from absl import app
from absl import flags

from cc.verify.testdata import bundles

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to write one SavedModel per kind into.",
    required=True)
_KINDS = flags.DEFINE_list(
    "kinds", sorted(bundles.WRITERS), "Which bundles to write.")
_WARMUP = flags.DEFINE_bool(
    "warmup", True, "Also write assets.extra/tf_serving_warmup_requests.")


def _validate_kinds(kinds: list[str]) -> bool:
  return bool(kinds) and all(kind in bundles.WRITERS for kind in kinds)


flags.register_validator(
    "kinds", _validate_kinds,
    message=f"--kinds must list some of {sorted(bundles.WRITERS)}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TensorFlow's writers refuse existing directories, and Bazel creates the
  # declared outputs' directories up front: write aside, then copy over.
  with tempfile.TemporaryDirectory() as scratch:
    for kind in _KINDS.value:
      write, warmup = bundles.WRITERS[kind]
      export_dir = os.path.join(scratch, kind)
      write(export_dir)
      if _WARMUP.value and warmup is not None:
        warmup(export_dir)
      shutil.copytree(export_dir, os.path.join(_OUTPUT_DIR.value, kind),
                      dirs_exist_ok=True)


if __name__ == "__main__":
  app.run(main)
