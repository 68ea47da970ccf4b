r"""Benchmark 3: the serving cost of merging.

  bazel run //tests/bench:serving_bench -- --graphs=8 --requests=200 --blocks=10

Publishes one small model alone (model "alone", signature model_0) and the
same model as one of `--graphs` signatures of a merged bundle (model
"merged") with `//python/merge`'s library, then on ONE model server (the real
tensorflow_model_server when on PATH, else `//python/serve`):

  latency    sequential Predict requests on signature model_0 of each model,
             in alternating blocks of `--requests`; p50 / p99 and the
             merged / alone ratios (target: at most 1.05)
  load time  a fresh server per model, alternating for `--load_rounds`
             rounds: the load itself (from the server log's "Loading
             servable" to "Successfully loaded" timestamps), the seconds
             from spawn until the model is AVAILABLE, and peak RSS

Prints a Markdown table, then one JSON line (the last line).
"""

import os
import statistics
import time
from typing import Sequence

from absl import app
from absl import flags
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.merge import merge_lib
from python.serve import launcher
from tests.bench import bench_lib
from tests.bench import graph_gen

_GRAPHS = flags.DEFINE_integer(
    "graphs", 8, "Signatures in the merged bundle.", lower_bound=2)
_GRAPH_MB = flags.DEFINE_float("graph_mb", 2.0,
                               "Size of each small model in MiB.",
                               lower_bound=0.01)
_NODES_PER_GRAPH = flags.DEFINE_integer(
    "nodes_per_graph", 500, "Nodes per model.", lower_bound=1)
_REQUESTS = flags.DEFINE_integer(
    "requests", 200, "Requests per block.", lower_bound=1)
_BLOCKS = flags.DEFINE_integer(
    "blocks", 10, "Alternating blocks per model.", lower_bound=1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 50, "Unmeasured requests per model first.",
    lower_bound=0)
_LOAD_ROUNDS = flags.DEFINE_integer(
    "load_rounds", 3, "Alternating server starts per model for load time.",
    lower_bound=0)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch directory.")

SIGNATURE = "model_0"
LATENCY_TARGET = 1.05


def _request(model: str, graph: graph_gen.GraphInfo
             ) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = SIGNATURE
  for alias, value in graph_gen.sample_feeds(graph, batch_size=1).items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
  return request


def measure_latency(address: str, requests: dict, *, blocks: int,
                    per_block: int, warmup: int) -> dict[str, list[float]]:
  """Sends sequential Predicts in alternating blocks, one model at a time.

  Args:
    address: host:port of the server.
    requests: model name -> PredictRequest.
    blocks: blocks per model.
    per_block: requests per block.
    warmup: unmeasured requests per model first.

  Returns:
    model name -> latencies in seconds.

  Raises:
    bench_lib.BenchError: a request failed.
  """
  latencies = {name: [] for name in requests}
  names = list(requests)
  with grpc.insecure_channel(address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(name):
      start = time.perf_counter()
      try:
        stub.Predict(requests[name], timeout=30)
      except grpc.RpcError as e:
        raise bench_lib.BenchError(
            f"Predict on model {name} signature {SIGNATURE} failed: "
            f"{e.code()}: {e.details()}") from e
      return time.perf_counter() - start

    for name in names:
      for _ in range(warmup):
        call(name)
    for block in range(blocks):
      # Rotate which model goes first in each block.
      for name in names[block % 2:] + names[:block % 2]:
        latencies[name].extend(call(name) for _ in range(per_block))
  return latencies


def measure_load(bases: dict[str, str], rounds: int) -> dict[str, dict]:
  """Starts a fresh server per model, alternating, and times readiness.

  Returns:
    model name -> {"load_s": median seconds, "load_s_all", "rss_mib"}.
  """
  ready = {name: [] for name in bases}
  loads = {name: [] for name in bases}
  rss = {name: [] for name in bases}
  for r in range(rounds):
    order = list(bases) if r % 2 == 0 else list(reversed(bases))
    for name in order:
      start = time.monotonic()
      server = launcher.ModelServer(model_name=name,
                                    model_base_path=bases[name])
      with server:
        ready[name].append(time.monotonic() - start)
        peak = bench_lib.peak_rss_of_pid(server.process.pid)
        if peak:
          rss[name].append(peak)
      load = bench_lib.load_seconds_from_log(
          server.log_tail(max_chars=1 << 24), name)
      if load is not None:
        loads[name].append(load)
      print(f"  load round {r + 1}/{rounds} {name:<7} ready after "
            f"{ready[name][-1]:.2f} s, load {bench_lib.fmt(load, 3)} s",
            flush=True)

  def median(values, digits=3):
    return round(statistics.median(values), digits) if values else None

  return {name: {
      "load_s": median(loads[name]),
      "load_s_all": [round(v, 3) for v in loads[name]],
      "ready_s": median(ready[name]),
      "ready_s_all": [round(v, 3) for v in ready[name]],
      "rss_mib": median([v / 2**20 for v in rss[name]], 1),
  } for name in bases}


def run(*, graphs: int, graph_mb: float, nodes_per_graph: int, requests: int,
        blocks: int, warmup_requests: int, load_rounds: int,
        work_dir: str) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary."""
  print(f"Generating {graphs} models of {graph_mb:g} MiB and publishing "
        "them ...", flush=True)
  infos = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen"), num_graphs=graphs,
      total_bytes=int(graph_mb * graphs * 2**20),
      total_nodes=nodes_per_graph * graphs)
  bases = {"alone": os.path.join(work_dir, "models", "alone"),
           "merged": os.path.join(work_dir, "models", "merged")}
  specs = {
      "alone": graph_gen.write_spec(os.path.join(work_dir, "alone.toml"),
                                    infos[:1]),
      "merged": graph_gen.write_spec(os.path.join(work_dir, "merged.toml"),
                                     infos),
  }
  for name, base in bases.items():
    merge_lib.merge_and_publish(specs[name], base)
  config = os.path.join(work_dir, "models.config")
  with open(config, "w", encoding="utf-8") as f:
    f.write("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base}" '
        'model_platform: "tensorflow" }\n'
        for name, base in bases.items()) + "}\n")

  with launcher.ModelServer(model_config_file=config) as server:
    real = server.is_real_server
    print(f"Measuring latency on {server.address} "
          f"({'tensorflow_model_server' if real else '//python/serve'}) ...",
          flush=True)
    latencies = measure_latency(
        server.address, {name: _request(name, infos[0]) for name in bases},
        blocks=blocks, per_block=requests, warmup=warmup_requests)
  stats = {}
  for name, values in latencies.items():
    stats[name] = {
        "requests": len(values),
        "p50_ms": round(bench_lib.percentile(values, 50) * 1000, 3),
        "p99_ms": round(bench_lib.percentile(values, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3),
    }
  loads = measure_load(bases, load_rounds) if load_rounds else {}
  ratios = {
      "p50_merged_vs_alone": bench_lib.ratio(stats["merged"]["p50_ms"],
                                             stats["alone"]["p50_ms"]),
      "p99_merged_vs_alone": bench_lib.ratio(stats["merged"]["p99_ms"],
                                             stats["alone"]["p99_ms"]),
  }
  if loads:
    ratios["load_merged_vs_alone"] = bench_lib.ratio(
        loads["merged"]["load_s"], loads["alone"]["load_s"])
    ratios["ready_merged_vs_alone"] = bench_lib.ratio(
        loads["merged"]["ready_s"], loads["alone"]["ready_s"])

  rows = []
  for name in bases:
    rows.append([
        name, 1 if name == "alone" else graphs,
        bench_lib.fmt(stats[name]["p50_ms"], 3),
        bench_lib.fmt(stats[name]["p99_ms"], 3),
        bench_lib.fmt(stats[name]["mean_ms"], 3),
        bench_lib.fmt(loads.get(name, {}).get("load_s"), 3),
        bench_lib.fmt(loads.get(name, {}).get("ready_s")),
        bench_lib.fmt(loads.get(name, {}).get("rss_mib"), 0),
    ])
  rows.append(["merged / alone", "",
               bench_lib.fmt(ratios["p50_merged_vs_alone"], 3),
               bench_lib.fmt(ratios["p99_merged_vs_alone"], 3), "",
               bench_lib.fmt(ratios.get("load_merged_vs_alone"), 3),
               bench_lib.fmt(ratios.get("ready_merged_vs_alone"), 3), ""])
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Server: {'tensorflow_model_server' if real else '//python/serve'}; "
        f"signature {SIGNATURE}, batch 1, {blocks} alternating blocks of "
        f"{requests} sequential requests per model.")
  print(bench_lib.markdown_table(
      ["model", "signatures", "p50 ms", "p99 ms", "mean ms",
       "load s (server log)", "spawn to AVAILABLE s", "server peak RSS MiB"],
      rows))
  print()
  return {
      "benchmark": "serving",
      "machine": bench_lib.machine_description(),
      "server": "tensorflow_model_server" if real else "python/serve",
      "graphs": graphs,
      "graph_mib": graph_mb,
      "latency": stats,
      "load": loads,
      "ratios": ratios,
      "targets_met": {
          f"p50_within_{LATENCY_TARGET}x": (
              ratios["p50_merged_vs_alone"] <= LATENCY_TARGET),
          f"p99_within_{LATENCY_TARGET}x": (
              ratios["p99_merged_vs_alone"] <= LATENCY_TARGET),
      },
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(graphs=_GRAPHS.value, graph_mb=_GRAPH_MB.value,
               nodes_per_graph=_NODES_PER_GRAPH.value,
               requests=_REQUESTS.value, blocks=_BLOCKS.value,
               warmup_requests=_WARMUP_REQUESTS.value,
               load_rounds=_LOAD_ROUNDS.value, work_dir=work_dir)

  bench_lib.run_benchmark("serving_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError,
                                  merge_lib.MergeError))


if __name__ == "__main__":
  app.run(main)
