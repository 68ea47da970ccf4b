r"""Benchmark 3: the serving cost of merging.

  bazel run //tests/bench:serving_bench -- --graphs=8 --requests=1000 --blocks=20

Publishes one small model alone (model "alone", signature model_0) and the
same model as one of `--graphs` signatures of a merged bundle (model
"merged") with `//python/merge`'s library, then on ONE model server (the real
tensorflow_model_server when on PATH, else `//python/serve`):

  latency    sequential Predict requests on signature model_0 of each model,
             strictly alternating request by request (alone, merged, merged,
             alone, ...) after `--warmup_requests` unmeasured ones, in
             `--blocks` blocks of `--requests` per model; p50 and p99 over
             all requests, the median over blocks of each block's p99, and
             the merged / alone ratios (target: at most 1.05)
  load time  a fresh server per model, alternating for `--load_rounds`
             rounds: the load itself (from the server log's "Loading
             servable" to "Successfully loaded" timestamps), the seconds
             from spawn until the model is AVAILABLE, and peak RSS

Prints a Markdown table, then one JSON line (the last line).

Why alternate request by request: on a shared machine the latency tail
comes from bursts of load by other processes (slow requests cluster in
time), not from the server. With blocks of 200 requests per model, a burst
lands on one model only: on a shared 2-core machine the p99 ratio of ten
consecutive windows of 2,000 requests per model of one run ranged from 0.83
to 1.46 (request-by-request alternation: 0.93 to 1.22; both models' p50 the
same within 1%). Alternating one by one puts both models under the same
bursts, and the per-block p99 ratios (paired in time) show how much of a
pooled-p99 ratio is noise.
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
from python.common import cli
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
    "requests", 1000, "Requests per model per block (the models alternate "
    "request by request within a block).", lower_bound=1)
_BLOCKS = flags.DEFINE_integer(
    "blocks", 20, "Blocks: a p99 is computed per block and the median over "
    "blocks reported next to the pooled p99.", lower_bound=1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 200, "Unmeasured requests per model first.",
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
                    per_block: int, warmup: int
                    ) -> dict[str, list[list[float]]]:
  """Sends sequential Predicts, alternating between the models one by one.

  Each block sends `per_block` requests to every model, taking turns request
  by request; which model goes first alternates from one turn to the next
  (A B, B A, A B, ...), so neither always follows the other. Every model thus
  meets the same machine load, and block i of each model covers the same
  stretch of time.

  Args:
    address: host:port of the server.
    requests: model name -> PredictRequest.
    blocks: number of blocks.
    per_block: requests per model per block.
    warmup: unmeasured requests per model first (alternating too).

  Returns:
    model name -> latencies in seconds, one list per block.

  Raises:
    bench_lib.BenchError: a request failed.
  """
  names = list(requests)
  latencies = {name: [] for name in names}
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

    def turns(count):
      for turn in range(count):
        yield names if turn % 2 == 0 else names[::-1]

    for order in turns(warmup):
      for name in order:
        call(name)
    for _ in range(blocks):
      block = {name: [] for name in names}
      for order in turns(per_block):
        for name in order:
          block[name].append(call(name))
      for name in names:
        latencies[name].append(block[name])
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
      server = launcher.ServerProcess(model_name=name,
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

  with launcher.ServerProcess(model_config_file=config) as server:
    real = server.is_real_server
    print(f"Measuring latency on {server.address} "
          f"({'tensorflow_model_server' if real else '//python/serve'}) ...",
          flush=True)
    latencies = measure_latency(
        server.address, {name: _request(name, infos[0]) for name in bases},
        blocks=blocks, per_block=requests, warmup=warmup_requests)
  stats = {name: bench_lib.latency_summary(blocks_of_model)
           for name, blocks_of_model in latencies.items()}
  block_p99_ratio = bench_lib.paired_block_ratio(
      latencies["merged"], latencies["alone"], 99)
  loads = measure_load(bases, load_rounds) if load_rounds else {}
  ratios = {
      "p50_merged_vs_alone": bench_lib.ratio(stats["merged"]["p50_ms"],
                                             stats["alone"]["p50_ms"]),
      "p99_merged_vs_alone": bench_lib.ratio(stats["merged"]["p99_ms"],
                                             stats["alone"]["p99_ms"]),
      "mean_merged_vs_alone": bench_lib.ratio(stats["merged"]["mean_ms"],
                                              stats["alone"]["mean_ms"]),
      # Median over blocks of (merged p99 / alone p99) in the same block.
      "block_p99_merged_vs_alone": block_p99_ratio["median"],
      "block_p99_merged_vs_alone_range": [block_p99_ratio["min"],
                                          block_p99_ratio["max"]],
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
        bench_lib.fmt(stats[name]["block_p99_ms"], 3),
        bench_lib.fmt(stats[name]["mean_ms"], 3),
        bench_lib.fmt(loads.get(name, {}).get("load_s"), 3),
        bench_lib.fmt(loads.get(name, {}).get("ready_s")),
        bench_lib.fmt(loads.get(name, {}).get("rss_mib"), 0),
    ])
  rows.append([
      "merged / alone", "",
      bench_lib.fmt(ratios["p50_merged_vs_alone"], 3),
      bench_lib.fmt(ratios["p99_merged_vs_alone"], 3),
      f"{bench_lib.fmt(block_p99_ratio['median'], 3)} "
      f"({bench_lib.fmt(block_p99_ratio['min'], 2)} to "
      f"{bench_lib.fmt(block_p99_ratio['max'], 2)})",
      bench_lib.fmt(ratios["mean_merged_vs_alone"], 3),
      bench_lib.fmt(ratios.get("load_merged_vs_alone"), 3),
      bench_lib.fmt(ratios.get("ready_merged_vs_alone"), 3), ""])
  server_name = "tensorflow_model_server" if real else "//python/serve"
  total = stats["alone"]["requests"]
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Server: {server_name}, both models on one process; signature "
        f"{SIGNATURE}, batch 1, sequential requests.")
  print(f"Method: after {warmup_requests} unmeasured requests per model, "
        f"{total} per model in {blocks} blocks of {requests}; the two models "
        "alternate request by request (alone, merged, merged, alone, ...), "
        "so both meet the same load from the rest of the machine. p50 and "
        f"p99: over all {total} requests of a model. Block p99: the median "
        "over blocks of each block's p99; its ratio is the median of the "
        "per-block merged / alone p99 ratios (both measured over the same "
        "seconds), with their range in brackets: a burst of load that lands "
        "in one block moves the pooled p99 but not this median. Target: "
        f"merged / alone at most {LATENCY_TARGET}.")
  print(bench_lib.markdown_table(
      ["model", "signatures", "p50 ms", "p99 ms", "block p99 ms", "mean ms",
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
      "latency_method": {
          "order": "alternating request by request",
          "blocks": blocks,
          "requests_per_block": requests,
          "warmup_requests": warmup_requests,
          "block_p99_ratios": block_p99_ratio["all"],
      },
      "load": loads,
      "ratios": ratios,
      "targets_met": {
          f"p50_within_{LATENCY_TARGET}x": (
              ratios["p50_merged_vs_alone"] <= LATENCY_TARGET),
          f"p99_within_{LATENCY_TARGET}x": (
              ratios["p99_merged_vs_alone"] <= LATENCY_TARGET),
          f"block_p99_within_{LATENCY_TARGET}x": (
              ratios["block_p99_merged_vs_alone"] <= LATENCY_TARGET),
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
  app.run(main, flags_parser=cli.parse_flags)
