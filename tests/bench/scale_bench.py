r"""Benchmark 2: merging past protobuf's 2 GiB limit.

  bazel run //tests/bench:scale_bench -- --sizes_gib=0.5,1,2,3 --graph_gib=0.5

For each total size, generates frozen graphs of at most `--graph_gib` each
(every input stays under the 2 GiB limit) and times, as whole processes:
`//python/merge` with defaults, `//python/merge --noverify` and the seed
approach (`import_graph_def` + SavedModelBuilder, expected to fail past
2 GiB). Our bundle must have a `saved_model.pb` under 16 MiB and must load in
the C++ verifier (`//cc/verify --run=smoke`) and in the model server (one
Predict per signature). Time and peak RSS should grow linearly with the
size, with the --noverify peak RSS bounded by the largest single input plus a
constant. Prints a Markdown table, writes the figures as CSV (`--csv`) and
as a plot of time and peak RSS against size (`--png`, see scale_plot.py), and
ends with one JSON line.
"""

import csv
import math
import os
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.serve import launcher
from python.common import cli
from tests.bench import bench_lib
from tests.bench import graph_gen
from tests.bench import scale_plot

_SIZES_GIB = flags.DEFINE_list(
    "sizes_gib", ["0.5", "1", "2", "3"],
    "Total sizes of the frozen graphs to merge, in GiB.")
_GRAPH_GIB = flags.DEFINE_float(
    "graph_gib", 0.5, "Largest size of one frozen graph in GiB (each input "
    "stays below 2 GiB); a size uses ceil(size / graph_gib) graphs.",
    lower_bound=0.0001)
_NODES_PER_GRAPH = flags.DEFINE_integer(
    "nodes_per_graph", 2000, "Nodes per frozen graph.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternating rounds per size.",
                               lower_bound=1)
_SEED_MAX_GIB = flags.DEFINE_float(
    "seed_max_gib", 3.0,
    "Run the seed approach only up to this size (it fails past 2 GiB after "
    "holding everything in memory).", lower_bound=0)
_VERIFIER = flags.DEFINE_string(
    "verifier", None,
    "Path of the C++ verifier (default: //cc/verify:verify from the runfiles "
    "or bazel-bin; skipped if not built).")
_SERVE = flags.DEFINE_boolean(
    "serve", True, "Load each bundle in the model server and query it.")
_CSV = flags.DEFINE_string("csv", None,
                           "Also write one CSV row per size to this file.")
_PNG = flags.DEFINE_string(
    "png", None, "Also plot wall/CPU time and peak RSS against size to this "
    "PNG file (needs matplotlib).")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch directory.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 3600.0,
                                "Kill any single process after this long.")

flags.register_validator(
    _CSV, bench_lib.in_existing_dir,
    message="--csv must name a file in an existing directory.")
flags.register_validator(
    _PNG, bench_lib.in_existing_dir,
    message="--png must name a file in an existing directory.")

SAVED_MODEL_LIMIT_BYTES = 16 << 20
CSV_FIELDS = (
    "size_gib", "graphs", "input_mib", "largest_input_mib", "ours_wall_s",
    "ours_cpu_s", "ours_rss_mib", "ours_noverify_wall_s",
    "ours_noverify_cpu_s", "ours_noverify_rss_mib", "seed_wall_s",
    "seed_cpu_s", "seed_rss_mib", "seed_ok", "saved_model_pb_mib",
    "verifier_ok", "verifier_wall_s", "verifier_rss_mib", "server_ok",
    "server_load_s", "server_ready_s", "server_rss_mib")


def find_verifier(explicit: Optional[str]) -> Optional[str]:
  """The C++ verifier binary: `explicit`, else a built //cc/verify, else None.

  Raises:
    bench_lib.BenchError: `explicit` is not an executable file.
  """
  if explicit:
    if not os.access(explicit, os.X_OK):
      raise bench_lib.BenchError(
          f"--verifier={explicit} is not an executable file; build it with "
          "`./bazelw build //cc/verify` and pass bazel-bin/cc/verify/verify.")
    return explicit
  for candidate in (os.path.join(bench_lib.REPO_ROOT, "cc/verify/verify"),
                    os.path.join(bench_lib.REPO_ROOT,
                                 "bazel-bin/cc/verify/verify")):
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
      return candidate
  return None


def _mib(value: Optional[float]) -> Optional[float]:
  return None if value is None else round(value / 2**20, 1)


def _rounded(value: Optional[float]) -> Optional[float]:
  return None if value is None else round(value, 2)


def serve_and_query(base_path: str, graphs: Sequence[graph_gen.GraphInfo],
                    timeout_s: float) -> dict:
  """Starts the model server on `base_path`, runs one Predict per signature.

  Returns:
    {"ok", "load_s" (the load in the server log: restore + warmup),
    "ready_s" (spawn to AVAILABLE), "rss_mib" (server VmHWM), "answered"
    (signatures answered), "error"}.
  """
  start = time.monotonic()
  server = launcher.ServerProcess(model_name="scale",
                                  model_base_path=os.path.abspath(base_path),
                                  startup_timeout_s=timeout_s)
  try:
    server.start()
  except launcher.LauncherError as e:
    return {"ok": False, "load_s": None, "ready_s": None, "rss_mib": None,
            "answered": 0, "error": bench_lib.last_line(str(e))}
  ready_s = time.monotonic() - start
  answered, error = 0, None
  try:
    with grpc.insecure_channel(server.address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      for i, g in enumerate(graphs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "scale"
        request.model_spec.signature_name = g.signature_name
        for alias, value in graph_gen.sample_feeds(g, seed=i).items():
          request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        try:
          response = stub.Predict(request, timeout=120)
        except grpc.RpcError as e:
          error = f"{g.signature_name}: {e.code()}: {e.details()}"
          break
        scores = tf.make_ndarray(response.outputs["scores"])
        if scores.shape == (4, graph_gen.WIDTH) and np.isfinite(
            scores).all():
          answered += 1
    rss = bench_lib.peak_rss_of_pid(server.process.pid)
  finally:
    server.stop()
  load_s = bench_lib.load_seconds_from_log(server.log_tail(1 << 24), "scale")
  return {"ok": answered == len(graphs), "load_s": load_s,
          "ready_s": ready_s, "rss_mib": _mib(rss), "answered": answered,
          "error": error}


def run_size(size_gib: float, *, graph_gib: float, nodes_per_graph: int,
             rounds: int, seed_max_gib: float, verifier: Optional[str],
             serve: bool, work_dir: str, timeout_s: float) -> dict:
  """Benchmarks one total size; returns its CSV row plus details."""
  num_graphs = max(1, math.ceil(size_gib / graph_gib - 1e-9))
  size_dir = os.path.join(work_dir, f"size_{size_gib:g}")
  print(f"== {size_gib:g} GiB: generating {num_graphs} graphs ...",
        flush=True)
  infos = graph_gen.write_graphs(
      os.path.join(size_dir, "frozen"), num_graphs=num_graphs,
      total_bytes=int(size_gib * 2**30),
      total_nodes=nodes_per_graph * num_graphs)
  spec = graph_gen.write_spec(os.path.join(size_dir, "merge.toml"), infos)
  out = {name: os.path.join(size_dir, "out", name)
         for name in ("ours", "ours_noverify", "seed")}

  def clean(name):
    return lambda: bench_lib.remove(out[name])

  merge = ["python.merge.merge", f"--spec={spec}"]
  contenders = [
      bench_lib.Contender(
          "ours", bench_lib.python_module(
              *merge, f"--output_base={out['ours']}"), setup=clean("ours")),
      bench_lib.Contender(
          "ours_noverify", bench_lib.python_module(
              *merge, f"--output_base={out['ours_noverify']}", "--noverify"),
          setup=clean("ours_noverify")),
  ]
  if size_gib <= seed_max_gib:
    contenders.append(bench_lib.Contender(
        "seed", bench_lib.python_module(
            "tests.bench.seed_merge", f"--spec={spec}",
            f"--export_dir={out['seed']}"),
        setup=clean("seed"), expect_failure=True))
  bench_lib.run_rounds(contenders, rounds, timeout_s=timeout_s)
  by_name = {c.name: c for c in contenders}
  bench_lib.remove(out["ours_noverify"])
  bench_lib.remove(out["seed"])

  bundle = os.path.join(out["ours"], "1")
  pb_bytes = os.path.getsize(os.path.join(bundle, "saved_model.pb"))
  row = {
      "size_gib": size_gib,
      "graphs": num_graphs,
      "input_mib": _mib(sum(g.file_bytes for g in infos)),
      "largest_input_mib": _mib(max(g.file_bytes for g in infos)),
      "ours_wall_s": _rounded(by_name["ours"].median_wall_s()),
      "ours_cpu_s": _rounded(by_name["ours"].median_cpu_s()),
      "ours_rss_mib": _mib(by_name["ours"].median_rss_bytes()),
      "ours_noverify_wall_s": _rounded(
          by_name["ours_noverify"].median_wall_s()),
      "ours_noverify_cpu_s": _rounded(
          by_name["ours_noverify"].median_cpu_s()),
      "ours_noverify_rss_mib": _mib(
          by_name["ours_noverify"].median_rss_bytes()),
      "seed_wall_s": None,
      "seed_cpu_s": None,
      "seed_rss_mib": None,
      "seed_ok": None,
      "saved_model_pb_mib": round(pb_bytes / 2**20, 3),
      "verifier_ok": None,
      "verifier_wall_s": None,
      "verifier_rss_mib": None,
      "server_ok": None,
      "server_load_s": None,
      "server_ready_s": None,
      "server_rss_mib": None,
  }
  details = {"saved_model_pb_under_16mib": pb_bytes < SAVED_MODEL_LIMIT_BYTES}
  if "seed" in by_name:
    seed = by_name["seed"]
    last = seed.results[-1]
    row["seed_ok"] = last.ok
    # Wall time and peak RSS until success or failure: the memory held
    # before failing is the point.
    row["seed_wall_s"] = _rounded(last.wall_s)
    row["seed_cpu_s"] = _rounded(last.user_s + last.sys_s)
    row["seed_rss_mib"] = _mib(last.max_rss_bytes)
    if not last.ok:
      details["seed_error"] = bench_lib.last_line(last.output_tail)
  if verifier:
    print(f"  verifying {bundle} with {verifier} ...", flush=True)
    result = bench_lib.run_process(
        [verifier, f"--export_dir={bundle}", "--run=smoke", "--json"],
        timeout_s=timeout_s)
    row["verifier_ok"] = result.ok
    row["verifier_wall_s"] = _rounded(result.wall_s)
    row["verifier_rss_mib"] = _mib(result.max_rss_bytes)
    if not result.ok:
      details["verifier_error"] = bench_lib.last_line(result.output_tail)
  if serve:
    print(f"  serving {out['ours']} ...", flush=True)
    served = serve_and_query(out["ours"], infos, timeout_s)
    row["server_ok"] = served["ok"]
    row["server_load_s"] = _rounded(served["load_s"])
    row["server_ready_s"] = _rounded(served["ready_s"])
    row["server_rss_mib"] = served["rss_mib"]
    if served["error"]:
      details["server_error"] = served["error"]
  bench_lib.remove(size_dir)
  print(f"  {row}", flush=True)
  return {"row": row, "details": details}


def _slope(xs: Sequence[float], ys: Sequence[Optional[float]]
           ) -> Optional[float]:
  points = [(x, y) for x, y in zip(xs, ys) if y is not None]
  if len(points) < 2:
    return None
  slope, _ = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
  return round(float(slope), 2)


def run(*, sizes_gib: Sequence[float], graph_gib: float, nodes_per_graph: int,
        rounds: int, seed_max_gib: float, verifier: Optional[str],
        serve: bool, work_dir: str, timeout_s: float,
        csv_path: Optional[str] = None, png_path: Optional[str] = None
        ) -> dict:
  """Runs every size, prints the table; returns the JSON summary."""
  results = [run_size(size, graph_gib=graph_gib,
                      nodes_per_graph=nodes_per_graph, rounds=rounds,
                      seed_max_gib=seed_max_gib, verifier=verifier,
                      serve=serve, work_dir=work_dir, timeout_s=timeout_s)
             for size in sizes_gib]
  rows = [r["row"] for r in results]
  if csv_path:
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
      writer.writeheader()
      writer.writerows(rows)
  if png_path:
    scale_plot.write_png(
        rows, png_path,
        title=f"scale_bench on {bench_lib.machine_description()}: inputs of "
        f"at most {graph_gib:g} GiB, {nodes_per_graph} nodes each; medians "
        f"of {rounds} round(s)")
    print(f"Wrote {os.path.abspath(png_path)}", flush=True)

  def cell(value, digits=1):
    if value is None:
      return "-"
    if isinstance(value, bool):
      return "ok" if value else "FAILED"
    return bench_lib.fmt(value, digits)

  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Inputs of at most {graph_gib:g} GiB each, {nodes_per_graph} nodes "
        f"per graph; {rounds} round(s) per size.")
  print(bench_lib.markdown_table(
      ["GiB", "graphs", "ours s", "ours CPU s", "ours MiB", "noverify s",
       "noverify CPU s", "noverify MiB", "seed s", "seed MiB", "seed",
       "saved_model.pb MiB", "C++ verify s", "verify", "server load s",
       "server ready s", "server MiB", "server"],
      [[cell(r["size_gib"], 2), r["graphs"], cell(r["ours_wall_s"]),
        cell(r["ours_cpu_s"]), cell(r["ours_rss_mib"], 0),
        cell(r["ours_noverify_wall_s"]), cell(r["ours_noverify_cpu_s"]),
        cell(r["ours_noverify_rss_mib"], 0), cell(r["seed_wall_s"]),
        cell(r["seed_rss_mib"], 0), cell(r["seed_ok"]),
        cell(r["saved_model_pb_mib"], 2), cell(r["verifier_wall_s"]),
        cell(r["verifier_ok"]), cell(r["server_load_s"], 2),
        cell(r["server_ready_s"]),
        cell(r["server_rss_mib"], 0), cell(r["server_ok"])] for r in rows]))
  for size, r in zip(sizes_gib, results):
    for key in ("seed_error", "verifier_error", "server_error"):
      if key in r["details"]:
        print(f"  {size:g} GiB {key}: {r['details'][key]}")
  print()
  over_limit = [r for s, r in zip(sizes_gib, rows) if s >= 2]
  sizes = [r["size_gib"] for r in rows]
  return {
      "benchmark": "scale",
      "machine": bench_lib.machine_description(),
      "graph_gib": graph_gib,
      "rounds": rounds,
      "rows": rows,
      "details": [r["details"] for r in results],
      "png": os.path.abspath(png_path) if png_path else None,
      "slopes_per_gib": {
          "ours_wall_s": _slope(sizes, [r["ours_wall_s"] for r in rows]),
          "ours_cpu_s": _slope(sizes, [r["ours_cpu_s"] for r in rows]),
          "ours_noverify_cpu_s": _slope(
              sizes, [r["ours_noverify_cpu_s"] for r in rows]),
          "ours_rss_mib": _slope(sizes, [r["ours_rss_mib"] for r in rows]),
          "ours_noverify_wall_s": _slope(
              sizes, [r["ours_noverify_wall_s"] for r in rows]),
          "ours_noverify_rss_mib": _slope(
              sizes, [r["ours_noverify_rss_mib"] for r in rows]),
      },
      "checks": {
          "saved_model_pb_under_16mib": all(
              r["details"]["saved_model_pb_under_16mib"] for r in results),
          "seed_fails_past_2gib": (all(r["seed_ok"] is False
                                       for r in over_limit
                                       if r["seed_ok"] is not None)
                                   if over_limit else None),
          "verifier_loads_all": (all(r["verifier_ok"] for r in rows)
                                 if verifier else None),
          "server_loads_all": (all(r["server_ok"] for r in rows)
                               if serve else None),
      },
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  try:
    sizes = [float(s) for s in _SIZES_GIB.value]
  except ValueError as e:
    raise app.UsageError(
        f"--sizes_gib={','.join(_SIZES_GIB.value)}: {e}; give GiB numbers "
        "like 0.5,1,2,3.") from e
  if not sizes or any(s <= 0 for s in sizes):
    raise app.UsageError(f"--sizes_gib must list positive sizes; got {sizes}")
  csv_path = bench_lib.user_path(_CSV.value)
  png_path = bench_lib.user_path(_PNG.value)
  if png_path:
    # Fail before the long run, not after it.
    try:
      scale_plot.check_available()
    except scale_plot.PlotError as e:
      raise SystemExit(f"scale_bench: {e}") from e
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    verifier = find_verifier(_VERIFIER.value)
    if verifier is None:
      print("C++ verifier not built (./bazelw build //cc/verify); skipping "
            "the C++ load check.", flush=True)
    return run(sizes_gib=sizes, graph_gib=_GRAPH_GIB.value,
               nodes_per_graph=_NODES_PER_GRAPH.value,
               rounds=_ROUNDS.value, seed_max_gib=_SEED_MAX_GIB.value,
               verifier=verifier, serve=_SERVE.value, work_dir=work_dir,
               timeout_s=_TIMEOUT_S.value, csv_path=csv_path,
               png_path=png_path)

  bench_lib.run_benchmark("scale_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError,
                                  graph_gen.GraphGenError,
                                  scale_plot.PlotError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
