r"""Benchmark 1: our merge vs. the seed approach vs. the I/O floor.

  bazel run //tests/bench:merge_bench -- --graphs=8 --total_mb=300 --rounds=3

Generates `--graphs` synthetic frozen graphs (`--total_mb` in total, at least
`--nodes` nodes, each with many small layers and one large constant), then
times as whole processes, alternating for `--rounds` rounds:

  floor          tests/bench/floor_merge.py: parse, prefix, write one proto
  seed           tests/bench/seed_merge.py: import_graph_def + SavedModelBuilder
  ours           //python/merge with defaults (verification on)
  ours_noverify  //python/merge --noverify
  replace_incremental  replace 1 of the graphs in a published version:
                 //python/merge with `base = "latest"` and one [[model]]
  replace_full   the same new version by a full re-merge of every graph
  replace_incremental_noverify, replace_full_noverify  the same, --noverify

and reports median wall time and peak RSS, their ratios (targets: ours within
1.5x of the floor's wall time, 1.15x with --noverify; peak RSS at most 0.75x
the seed's) and whether our bundle answers exactly as the seed's on every
signature; for the replace pair, the incremental / full ratios and whether
the two new versions answer identically. Prints Markdown tables, then one
JSON line (the last line).
"""

import os
import subprocess
from typing import Optional, Sequence

from absl import app
from absl import flags
import tensorflow as tf

from python.common import cli
from tests.bench import answers
from tests.bench import bench_lib
from tests.bench import graph_gen

_GRAPHS = flags.DEFINE_integer("graphs", 8, "Number of frozen graphs.",
                               lower_bound=1)
_TOTAL_MB = flags.DEFINE_float(
    "total_mb", 300.0, "Total size of the frozen graphs in MiB.",
    lower_bound=0.01)
_NODES = flags.DEFINE_integer(
    "nodes", 16000, "Minimum total number of nodes over all graphs.",
    lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.",
                               lower_bound=1)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False,
                             "Keep the scratch directory at the end.")
_REPLACE = ("replace_incremental", "replace_full",
            "replace_incremental_noverify", "replace_full_noverify")
CONTENDERS = ("floor", "seed", "ours", "ours_noverify") + _REPLACE
_CONTENDERS = flags.DEFINE_list(
    "contenders", list(CONTENDERS),
    "Which contenders to run (floor and seed are needed for the ratios).")
flags.register_validator(
    "contenders", lambda names: bool(names) and set(names) <= set(CONTENDERS),
    message=f"--contenders must list some of {', '.join(CONTENDERS)}.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 3600.0,
                                "Kill a contender run after this long.")

WALL_TARGETS = {"ours": 1.5, "ours_noverify": 1.15}
RSS_TARGET = 0.75


def _replace_specs(work: str, infos, replacement) -> dict[str, str]:
  """Specs of the replace pair: incremental (base) and full, same result."""
  full = graph_gen.write_spec(os.path.join(work, "replace_full.toml"),
                              [replacement] + list(infos[1:]),
                              message="replace one model")
  incremental = graph_gen.write_spec(
      os.path.join(work, "replace_incremental.toml"), [replacement],
      message="replace one model")
  with open(incremental, encoding="utf-8") as f:
    text = f.read()
  with open(incremental, "w", encoding="utf-8") as f:
    f.write('base = "latest"\n' + text)
  return {"replace_full": full, "replace_incremental": incremental}


def _published_v1(spec: str, output_base: str, timeout_s: float):
  """Setup of the replace pair: version 1 published (once), no version 2."""

  def setup():
    if not os.path.isdir(os.path.join(output_base, "1")):
      proc = subprocess.run(
          bench_lib.python_module("python.merge.merge", f"--spec={spec}",
                                  f"--output_base={output_base}",
                                  "--noverify"),
          env=bench_lib.python_env(), check=False, capture_output=True,
          text=True, timeout=timeout_s)
      if proc.returncode:
        raise bench_lib.BenchError(
            f"publishing version 1 into {output_base} failed: "
            f"{bench_lib.last_line(proc.stderr)}")
    bench_lib.remove(os.path.join(output_base, "2"))
  return setup


def _contenders(spec: str, work: str, names: Sequence[str],
                replace_specs: Optional[dict] = None,
                timeout_s: float = 3600.0):
  out = {name: os.path.join(work, "out", name) for name in CONTENDERS}

  def clean(name):
    if name in _REPLACE:
      return _published_v1(spec, out[name], timeout_s)
    return lambda: bench_lib.remove(out[name])

  merge = ["python.merge.merge", f"--spec={spec}"]
  commands = {
      "floor": bench_lib.python_module(
          "tests.bench.floor_merge", f"--spec={spec}",
          f"--export_dir={out['floor']}"),
      "seed": bench_lib.python_module(
          "tests.bench.seed_merge", f"--spec={spec}",
          f"--export_dir={out['seed']}"),
      "ours": bench_lib.python_module(
          *merge, f"--output_base={out['ours']}"),
      "ours_noverify": bench_lib.python_module(
          *merge, f"--output_base={out['ours_noverify']}", "--noverify"),
  }
  for name in _REPLACE:
    if replace_specs:
      kind = name[:-len("_noverify")] if name.endswith("_noverify") else name
      commands[name] = bench_lib.python_module(
          "python.merge.merge", f"--spec={replace_specs[kind]}",
          f"--output_base={out[name]}",
          *(["--noverify"] if name.endswith("_noverify") else []))
  return [bench_lib.Contender(name, commands[name], setup=clean(name))
          for name in names], out


def run(*, graphs: int, total_mb: float, nodes: int, rounds: int,
        work_dir: str, contenders: Sequence[str] = CONTENDERS,
        timeout_s: float = 3600.0) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary.

  Raises:
    bench_lib.BenchError: a contender failed, or unknown contender names.
  """
  unknown = sorted(set(contenders) - set(CONTENDERS))
  if unknown:
    raise bench_lib.BenchError(
        f"unknown contender(s) {unknown}; choose from {list(CONTENDERS)}.")
  print(f"Generating {graphs} graphs, {total_mb:g} MiB, >= {nodes} nodes "
        f"in {work_dir} ...", flush=True)
  infos = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen"), num_graphs=graphs,
      total_bytes=int(total_mb * 2**20), total_nodes=nodes)
  spec = graph_gen.write_spec(os.path.join(work_dir, "merge.toml"), infos,
                              message="benchmark")
  input_bytes = sum(g.file_bytes for g in infos)
  total_nodes = sum(g.nodes for g in infos)
  replacement = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen_replacement"), num_graphs=1,
      total_bytes=max(1, int(total_mb * 2**20) // graphs),
      total_nodes=max(1, nodes // graphs), seed=1000)[0]
  replace_specs = _replace_specs(work_dir, infos, replacement)
  runners, out = _contenders(spec, work_dir, contenders, replace_specs,
                             timeout_s)
  bench_lib.run_rounds(runners, rounds, timeout_s=timeout_s)
  by_name = {c.name: c for c in runners}

  def wall(name):
    return by_name[name].median_wall_s() if name in by_name else None

  def rss(name):
    return by_name[name].median_rss_bytes() if name in by_name else None

  def cpu(name):
    return by_name[name].median_cpu_s() if name in by_name else None

  ratios = {}
  for name in ("seed", "ours", "ours_noverify"):
    ratios[f"{name}_vs_floor_wall"] = bench_lib.ratio(wall(name),
                                                      wall("floor"))
    ratios[f"{name}_vs_floor_cpu"] = bench_lib.ratio(cpu(name), cpu("floor"))
  for name in ("floor", "ours", "ours_noverify"):
    ratios[f"{name}_vs_seed_rss"] = bench_lib.ratio(rss(name), rss("seed"))
  targets = {}
  for name, limit in WALL_TARGETS.items():
    value = ratios[f"{name}_vs_floor_wall"]
    if value is not None:
      targets[f"{name}_wall_within_{limit}x_floor"] = value <= limit
  if ratios["ours_vs_seed_rss"] is not None:
    targets[f"ours_rss_within_{RSS_TARGET}x_seed"] = (
        ratios["ours_vs_seed_rss"] <= RSS_TARGET)

  answer_summary = None
  if "seed" in by_name and "ours" in by_name:
    print("Comparing the answers of seed and ours on every signature ...",
          flush=True)
    comparisons = answers.compare_bundles(
        out["seed"], os.path.join(out["ours"], "1"), infos)
    answer_summary = {
        "signatures": len(comparisons),
        "identical": sum(c.identical for c in comparisons),
        "max_abs_diff": max(c.max_abs_diff for c in comparisons),
        "differing": [c.signature for c in comparisons if not c.identical],
    }
    targets["answers_identical_to_seed"] = (
        answer_summary["identical"] == answer_summary["signatures"])

  replace_summary = None
  pairs = [(incr, full, suffix) for incr, full, suffix in (
      ("replace_incremental", "replace_full", ""),
      ("replace_incremental_noverify", "replace_full_noverify", "_noverify"))
           if incr in by_name and full in by_name]
  for incr, full, suffix in pairs:
    for what, figure in (("wall", wall), ("cpu", cpu), ("rss", rss)):
      ratios[f"replace_incremental_vs_full{suffix}_{what}"] = bench_lib.ratio(
          figure(incr), figure(full))
  if pairs:
    incr, full, _ = pairs[0]
    print("Comparing the answers of the incremental and the full re-merge "
          "on every signature ...", flush=True)
    comparisons = answers.compare_bundles(
        os.path.join(out[full], "2"), os.path.join(out[incr], "2"),
        [replacement] + list(infos[1:]))
    replace_summary = {
        "signatures": len(comparisons),
        "identical": sum(c.identical for c in comparisons),
        "max_abs_diff": max(c.max_abs_diff for c in comparisons),
    }
    targets["replace_answers_identical"] = (
        replace_summary["identical"] == replace_summary["signatures"])

  rows = []
  for c in runners:
    rows.append([
        c.name, bench_lib.fmt(c.median_wall_s()),
        bench_lib.fmt(None if c.median_rss_bytes() is None else
                      c.median_rss_bytes() / 2**20, 0),
        bench_lib.fmt(bench_lib.ratio(c.median_wall_s(), wall("floor"))),
        bench_lib.fmt(bench_lib.ratio(c.median_rss_bytes(), rss("seed"))),
        bench_lib.fmt(c.median_cpu_s()),
        bench_lib.fmt(bench_lib.ratio(c.median_cpu_s(), cpu("floor"))),
    ])
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Inputs: {graphs} frozen graphs, {input_bytes / 2**20:.1f} MiB, "
        f"{total_nodes} nodes; {rounds} alternating round(s), medians.")
  print(bench_lib.markdown_table(
      ["contender", "wall s", "peak RSS MiB", "wall / floor", "RSS / seed",
       "CPU s", "CPU / floor"], rows))
  if answer_summary:
    print(f"Answers: {answer_summary['identical']}/"
          f"{answer_summary['signatures']} signatures bit-identical to the "
          f"seed bundle (max |diff| {answer_summary['max_abs_diff']:g}).")
  if replace_summary:
    print()
    print(f"Replacing 1 of {graphs} models of a published version:")
    replace_rows = []
    for incr, full, suffix in pairs:
      for name in (incr, full):
        replace_rows.append([
            name, bench_lib.fmt(wall(name)), bench_lib.fmt(cpu(name)),
            bench_lib.fmt(None if rss(name) is None else rss(name) / 2**20,
                          0)])
      replace_rows.append([f"incremental / full{suffix}"] + [
          bench_lib.fmt(ratios[f"replace_incremental_vs_full{suffix}_{w}"])
          for w in ("wall", "cpu", "rss")])
    print(bench_lib.markdown_table(
        ["contender", "wall s", "CPU s", "peak RSS MiB"], replace_rows))
    print(f"Answers: {replace_summary['identical']}/"
          f"{replace_summary['signatures']} signatures of the incremental "
          "version bit-identical to the full re-merge's (max |diff| "
          f"{replace_summary['max_abs_diff']:g}).")
  print()
  return {
      "benchmark": "merge",
      "machine": bench_lib.machine_description(),
      "graphs": graphs,
      "input_mib": round(input_bytes / 2**20, 1),
      "nodes": total_nodes,
      "rounds": rounds,
      "contenders": {c.name: c.summary() for c in runners},
      "ratios": ratios,
      "targets_met": targets,
      "answers": answer_summary,
      "replace_answers": replace_summary,
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(graphs=_GRAPHS.value, total_mb=_TOTAL_MB.value,
               nodes=_NODES.value, rounds=_ROUNDS.value, work_dir=work_dir,
               contenders=_CONTENDERS.value, timeout_s=_TIMEOUT_S.value)

  bench_lib.run_benchmark("merge_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError,
                                  graph_gen.GraphGenError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
