r"""Writes the TF-Serving-shaped test bundles (see tf_serving_models.py).

  bazel run //tests/testdata:write_tf_serving_models -- --out_dir=/tmp/tfs

gives /tmp/tfs/{half_plus_two,half_plus_three,half_plus_two_tf2,counter}/00000123
and /tmp/tfs/good_model_config.txt (half_plus_two and half_plus_three).
"""

import os

from absl import app
from absl import flags

from tests.testdata import tf_serving_models

_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Directory to write into.',
                               required=True)


def main(argv):
  del argv
  out = os.path.abspath(_OUT_DIR.value)
  tf_serving_models.write_half_plus_two(os.path.join(out, 'half_plus_two'))
  tf_serving_models.write_half_plus_two(os.path.join(out, 'half_plus_three'),
                                        b=3.0)
  tf_serving_models.write_half_plus_two_tf2(
      os.path.join(out, 'half_plus_two_tf2'))
  tf_serving_models.write_counter(os.path.join(out, 'counter'))
  tf_serving_models.write_model_config(
      os.path.join(out, 'good_model_config.txt'), {
          'half_plus_two': os.path.join(out, 'half_plus_two'),
          'half_plus_three': os.path.join(out, 'half_plus_three'),
      })
  print(f'Wrote TF-Serving-shaped bundles under {out}')


if __name__ == '__main__':
  app.run(main)
