r"""Writes the python/serve test SavedModels into a directory, for a look.

  bazel run //python/serve/testdata:write_models -- --out_dir=/tmp/models

Produces <out_dir>/tf1/{1,2} and <out_dir>/tf2/1 (see models.py).
"""

import os
from typing import Sequence

from absl import app
from absl import flags

from python.serve.testdata import models

_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where to write the models.',
                               required=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  models.write_versions(os.path.join(_OUT_DIR.value, 'tf1'), 'tf1', [1, 2])
  models.write_versions(os.path.join(_OUT_DIR.value, 'tf2'), 'tf2', [1])


if __name__ == '__main__':
  app.run(main)
