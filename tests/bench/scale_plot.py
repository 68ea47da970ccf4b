r"""Plots scale_bench's figures (time and peak RSS against size) as one PNG.

  bazel run //tests/bench:scale_bench -- --sizes_gib=0.5,1,2,3 --png=/tmp/scale.png
  bazel run //tests/bench:replot_scale -- --csv=/tmp/scale.csv --png=/tmp/scale.png

Two panels over the total size of the inputs in GiB:

  left   wall time (solid) and CPU time (dashed) of `//python/merge` with
         verification and with `--noverify`, and the seed approach's wall
         time (circles where it succeeded, a red cross where it failed, until
         the failure; absent where it did not run)
  right  peak RSS of the same three, with two reference lines: the total
         input size (what a merge holding everything grows like) and the
         largest single input (what "bounded by the largest input plus a
         constant" stays parallel to)

matplotlib is imported only when a plot is drawn (the benchmarks that do not
plot do not pay for it), with the non-interactive Agg canvas: no display
needed.
"""

import csv
from typing import Any, Mapping, Optional, Sequence

# Figure geometry: PNGs are exactly WIDTH_PX x HEIGHT_PX.
DPI = 100
WIDTH_PX = 1200
HEIGHT_PX = 620

# Columns a row must have (scale_bench's CSV_FIELDS holds more).
REQUIRED_FIELDS = (
    "size_gib", "input_mib", "largest_input_mib", "ours_wall_s", "ours_cpu_s",
    "ours_rss_mib", "ours_noverify_wall_s", "ours_noverify_cpu_s",
    "ours_noverify_rss_mib", "seed_wall_s", "seed_rss_mib", "seed_ok")

# Colours (matplotlib names) of the contenders and of seed failures.
OURS_COLOR = "tab:blue"
NOVERIFY_COLOR = "tab:green"
SEED_COLOR = "tab:orange"
FAILED_COLOR = "tab:red"

# (key prefix, legend label, colour, line width, marker) of each merge
# contender: the first is drawn wider underneath, so where both coincide
# (e.g. the same peak RSS) both stay visible.
_CONTENDERS = (
    ("ours", "//python/merge (verify on)", OURS_COLOR, 3, "o"),
    ("ours_noverify", "//python/merge --noverify", NOVERIFY_COLOR, 1.5, "s"),
)
_SEED_LABEL = "seed (import_graph_def + SavedModelBuilder)"


class PlotError(ValueError):
  """The rows cannot be plotted (none, or a row lacks a figure)."""


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
  if not rows:
    raise PlotError("no rows to plot; run scale_bench with at least one "
                    "--sizes_gib value.")
  checked = []
  for i, row in enumerate(rows):
    missing = [key for key in REQUIRED_FIELDS if key not in row]
    if missing:
      raise PlotError(
          f"row {i} (size_gib={row.get('size_gib')!r}) lacks {missing}; "
          f"plot rows need the columns {list(REQUIRED_FIELDS)} (as written "
          "by scale_bench --csv).")
    if row["size_gib"] is None:
      raise PlotError(f"row {i} has no size_gib: {dict(row)}")
    checked.append(dict(row))
  return sorted(checked, key=lambda r: r["size_gib"])


def _series(rows: Sequence[Mapping[str, Any]], key: str
            ) -> tuple[list[float], list[float]]:
  """(sizes, values) of the rows where `key` has a value."""
  points = [(r["size_gib"], r[key]) for r in rows if r[key] is not None]
  return [p[0] for p in points], [p[1] for p in points]


def _plot_seed(axes, rows: Sequence[Mapping[str, Any]], key: str,
               label: Optional[str]) -> None:
  """Seed figures: a line through the runs, failures as red crosses."""
  ran = [r for r in rows if r["seed_ok"] is not None and r[key] is not None]
  if not ran:
    return
  axes.plot([r["size_gib"] for r in ran], [r[key] for r in ran],
            color=SEED_COLOR, linestyle=":", linewidth=1)
  ok = [r for r in ran if r["seed_ok"]]
  failed = [r for r in ran if not r["seed_ok"]]
  if ok:
    axes.plot([r["size_gib"] for r in ok], [r[key] for r in ok],
              linestyle="none", marker="o", color=SEED_COLOR, label=label)
  if failed:
    axes.plot([r["size_gib"] for r in failed], [r[key] for r in failed],
              linestyle="none", marker="X", markersize=11,
              color=FAILED_COLOR,
              label="seed failed (until failure)" if label else None)


def check_available() -> None:
  """Imports matplotlib, so a missing one is reported before a long run.

  Raises:
    PlotError: matplotlib cannot be imported.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise PlotError(
        f"--png needs matplotlib, which cannot be imported ({e}); it is in "
        "requirements.in: rebuild the environment (./bazelw build re-creates "
        "it from requirements_lock.txt) or `pip install matplotlib`.") from e


def write_png(rows: Sequence[Mapping[str, Any]], path: str, *,
              title: Optional[str] = None) -> str:
  """Writes the time and peak-RSS plot of scale_bench rows as a PNG.

  Args:
    rows: One mapping per total size with at least REQUIRED_FIELDS (the rows
      scale_bench prints and writes with --csv; None where a figure is
      missing, `seed_ok` None where the seed approach did not run).
    path: The PNG to write (its directory must exist).
    title: Optional figure title (e.g. the machine).

  Returns:
    `path`.

  Raises:
    PlotError: `rows` is empty or a row lacks a required column.
  """
  rows = _check_rows(rows)
  # Imported here, not at module level: only --png pays for matplotlib.
  # pylint: disable=g-import-not-at-top
  from matplotlib import figure as mpl_figure
  from matplotlib.backends import backend_agg
  # pylint: enable=g-import-not-at-top

  fig = mpl_figure.Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  time_axes, rss_axes = fig.subplots(1, 2)
  sizes = [r["size_gib"] for r in rows]

  for prefix, label, color, width, marker in _CONTENDERS:
    xs, ys = _series(rows, f"{prefix}_wall_s")
    time_axes.plot(xs, ys, marker=marker, color=color, linewidth=width,
                   label=f"{label}, wall")
    xs, ys = _series(rows, f"{prefix}_cpu_s")
    time_axes.plot(xs, ys, marker=".", linestyle="--", color=color,
                   linewidth=width * 0.75, label=f"{label}, CPU")
    xs, ys = _series(rows, f"{prefix}_rss_mib")
    rss_axes.plot(xs, ys, marker=marker, markersize=8 if width > 2 else 5,
                  color=color, linewidth=width, label=label)
  _plot_seed(time_axes, rows, "seed_wall_s", f"{_SEED_LABEL}, wall")
  _plot_seed(rss_axes, rows, "seed_rss_mib", _SEED_LABEL)

  xs, ys = _series(rows, "input_mib")
  rss_axes.plot(xs, ys, color="grey", linestyle="--", linewidth=1,
                label="total input size")
  xs, ys = _series(rows, "largest_input_mib")
  rss_axes.plot(xs, ys, color="black", linestyle="-.", linewidth=1,
                label="largest single input")
  for axes in (time_axes, rss_axes):
    if any(s >= 2 for s in sizes):
      axes.axvline(2, color="grey", linewidth=0.8, alpha=0.5)
      axes.annotate("2 GiB: protobuf's limit", xy=(2, 0),
                    xytext=(3, 3), textcoords="offset points",
                    fontsize="x-small", color="grey", rotation=90)
    axes.set_xlabel("total size of the frozen graphs (GiB)")
    axes.set_xticks(sizes)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="upper center", ncol=2,
                bbox_to_anchor=(0.5, -0.14))
  time_axes.set_ylabel("seconds (whole process)")
  time_axes.set_title("Merge time: wall (solid) and CPU (dashed)")
  rss_axes.set_ylabel("peak RSS (MiB)")
  rss_axes.set_title("Peak memory")
  if title:
    fig.suptitle(title, fontsize="medium")
  fig.tight_layout()
  fig.savefig(path, format="png", dpi=DPI)
  return path


def _cell(text: str) -> Any:
  """A CSV cell back to None, bool or float."""
  if text == "":
    return None
  if text in ("True", "False"):
    return text == "True"
  try:
    return float(text)
  except ValueError:
    return text


def read_csv(path: str) -> list[dict]:
  """Reads the rows scale_bench --csv wrote (empty cells become None).

  Raises:
    PlotError: the file cannot be read or has no rows.
  """
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = [{key: _cell(value) for key, value in row.items()}
              for row in csv.DictReader(f)]
  except OSError as e:
    raise PlotError(f"cannot read --csv={path}: {e}") from e
  if not rows:
    raise PlotError(f"{path} has no rows; write it with scale_bench --csv.")
  return rows


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG's IHDR header.

  Raises:
    PlotError: `path` is not a PNG.
  """
  with open(path, "rb") as f:
    head = f.read(24)
  if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != (
      b"IHDR"):
    raise PlotError(f"{path} is not a PNG (starts with {head[:16]!r})")
  return (int.from_bytes(head[16:20], "big"),
          int.from_bytes(head[20:24], "big"))
