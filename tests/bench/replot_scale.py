r"""Redraws scale_bench's plot from the CSV it wrote, without re-running it.

  bazel run //tests/bench:replot_scale -- --csv=/tmp/scale.csv --png=/tmp/scale.png
"""

from typing import Sequence

from absl import app
from absl import flags

from python.common import cli
from tests.bench import bench_lib
from tests.bench import scale_plot

_CSV = flags.DEFINE_string("csv", None, "CSV written by scale_bench --csv.",
                           required=True)
_PNG = flags.DEFINE_string("png", None, "The PNG to write.", required=True)
_TITLE = flags.DEFINE_string("title", None, "Optional figure title.")
flags.register_validator(
    _PNG, bench_lib.in_existing_dir,
    message="--png must name a file in an existing directory.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  try:
    png = scale_plot.write_png(
        scale_plot.read_csv(bench_lib.user_path(_CSV.value)),
        bench_lib.user_path(_PNG.value), title=_TITLE.value)
  except scale_plot.PlotError as e:
    raise SystemExit(f"replot_scale failed: {e}") from e
  print(f"Wrote {png}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
