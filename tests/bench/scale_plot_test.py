"""Tests of scale_plot: the PNG scale_bench writes and the CSV it replots."""

import csv
import os

from absl.testing import absltest
from absl.testing import parameterized
from matplotlib import colors
from PIL import Image

from tests.bench import scale_plot

# Columns as scale_bench writes them: those the plot needs, and two it ignores
# (a subset of scale_bench's CSV_FIELDS).
_FIELDS = (("size_gib", "graphs", "seed_cpu_s") +
           scale_plot.REQUIRED_FIELDS[1:])


def _row(size_gib: float, seed_ok) -> dict:
  """A row shaped like scale_bench's, with figures that grow with size."""
  ran = seed_ok is not None
  return {
      "size_gib": size_gib, "graphs": int(size_gib * 2),
      "input_mib": size_gib * 1024, "largest_input_mib": 512.0,
      "ours_wall_s": 10 * size_gib + 5, "ours_cpu_s": 9 * size_gib + 1,
      "ours_rss_mib": 2600 + 400 * size_gib,
      "ours_noverify_wall_s": 8 * size_gib + 3,
      "ours_noverify_cpu_s": 7 * size_gib + 1,
      "ours_noverify_rss_mib": 2650 + 10 * size_gib,
      "seed_wall_s": 12 * size_gib if ran else None,
      "seed_cpu_s": 11 * size_gib if ran else None,
      "seed_rss_mib": 2700 + 1000 * size_gib if ran else None,
      "seed_ok": seed_ok,
  }


def _pixels_of(path: str, color: str) -> int:
  """How many pixels of the PNG have exactly the matplotlib colour `color`."""
  rgb = tuple(round(c * 255) for c in colors.to_rgb(color))
  with Image.open(path) as image:
    counts = image.convert("RGB").getcolors(maxcolors=1 << 24)
  return sum(n for n, pixel in counts if pixel == rgb)


class WritePngTest(parameterized.TestCase):

  def _write(self, rows) -> str:
    path = os.path.join(self.create_tempdir().full_path, "scale.png")
    self.assertEqual(scale_plot.write_png(rows, path, title="test"), path)
    return path

  def test_png_has_the_figure_size_and_every_series(self):
    # The seed approach works at 0.5 and 1 GiB, fails at 2 and is not run at
    # 3 GiB, as in the README run; rows come unsorted.
    path = self._write([_row(3, None), _row(0.5, True), _row(2, False),
                        _row(1, True)])
    self.assertEqual(scale_plot.png_size(path),
                     (scale_plot.WIDTH_PX, scale_plot.HEIGHT_PX))
    with Image.open(path) as image:
      image.verify()
    self.assertGreater(os.path.getsize(path), 20_000)
    for color in (scale_plot.OURS_COLOR, scale_plot.NOVERIFY_COLOR,
                  scale_plot.SEED_COLOR, scale_plot.FAILED_COLOR):
      self.assertGreater(_pixels_of(path, color), 50, msg=color)

  @parameterized.named_parameters(
      ("seed_always_ok", True, True),
      ("seed_never_run", None, False))
  def test_failure_marks_only_when_the_seed_failed(self, seed_ok, seed_shown):
    path = self._write([_row(0.5, seed_ok), _row(1, seed_ok)])
    self.assertEqual(_pixels_of(path, scale_plot.FAILED_COLOR), 0)
    self.assertEqual(_pixels_of(path, scale_plot.SEED_COLOR) > 0, seed_shown)
    self.assertGreater(_pixels_of(path, scale_plot.OURS_COLOR), 50)

  def test_single_size(self):
    path = self._write([_row(0.004, True)])
    self.assertEqual(scale_plot.png_size(path),
                     (scale_plot.WIDTH_PX, scale_plot.HEIGHT_PX))

  def test_no_rows(self):
    with self.assertRaisesRegex(scale_plot.PlotError,
                                "no rows to plot.*--sizes_gib"):
      scale_plot.write_png([], os.path.join(absltest.TEST_TMPDIR.value,
                                            "none.png"))

  def test_missing_column_is_named(self):
    row = _row(2, False)
    del row["ours_noverify_rss_mib"]
    with self.assertRaisesRegex(
        scale_plot.PlotError,
        r"row 1 \(size_gib=2\) lacks \['ours_noverify_rss_mib'\]"):
      scale_plot.write_png([_row(1, True), row], os.path.join(
          absltest.TEST_TMPDIR.value, "missing.png"))


class CsvTest(absltest.TestCase):

  def test_read_csv_round_trips_scale_bench_rows(self):
    rows = [_row(0.5, True), _row(2, False), _row(3, None)]
    path = self.create_tempfile("scale.csv").full_path
    with open(path, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=_FIELDS)
      writer.writeheader()
      writer.writerows(rows)
    read = scale_plot.read_csv(path)
    self.assertEqual(read, rows)
    self.assertIsNone(read[2]["seed_rss_mib"])
    self.assertIs(read[1]["seed_ok"], False)

  def test_read_csv_errors(self):
    empty = self.create_tempfile("empty.csv", content="size_gib,graphs\n")
    with self.assertRaisesRegex(scale_plot.PlotError, "empty.csv has no rows"):
      scale_plot.read_csv(empty.full_path)
    with self.assertRaisesRegex(scale_plot.PlotError,
                                "cannot read --csv=.*absent.csv"):
      scale_plot.read_csv(os.path.join(absltest.TEST_TMPDIR.value,
                                       "absent.csv"))

  def test_png_size_rejects_other_files(self):
    not_png = self.create_tempfile("scale.png", content="size_gib,graphs\n")
    with self.assertRaisesRegex(scale_plot.PlotError,
                                "scale.png is not a PNG"):
      scale_plot.png_size(not_png.full_path)


if __name__ == "__main__":
  absltest.main()
