"""Finds the examples' data files (merge specs, READMEs) next to the code.

Under `bazel run`/`bazel test` the files are in the runfiles tree beside the
scripts; from a source checkout they are in examples/ itself. Either way they
sit next to this module, so no runfiles library is needed.
"""

import os

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))


def example_file(relative_path: str) -> str:
  """Returns the path of examples/`relative_path`.

  Raises:
    FileNotFoundError: if it is missing (e.g. not listed in `data` of the
      Bazel target), naming the path that was tried.
  """
  path = os.path.join(EXAMPLES_DIR, relative_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"example file {relative_path!r} not found at {path}; if this runs "
        "under Bazel, add it to the target's data")
  return path
