r"""Benchmark 5: hot swap under load.

  bazel run //tests/bench:hotswap_bench -- --publishes=5 --interval_s=3

Publishes version 1 of a merged bundle, starts the model server on it
(`--file_system_poll_wait_seconds=1`), and while `--concurrency` client
threads send Predict requests back to back (no version pinned), publishes a
new version with `//python/merge --keep_versions=2` every `--interval_s`
seconds, `--publishes` times (each merge is a separate process, as in
production). Reports requests per second, p50 / p99 latency, failed
requests (target: zero) and the versions the clients saw. Prints a Markdown
table, then one JSON line (the last line).
"""

import collections
import os
import threading
import time
from typing import Sequence

from absl import app
from absl import flags
import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.merge import merge_lib
from python.serve import launcher
from python.common import cli
from tests.bench import bench_lib
from tests.bench import graph_gen

_GRAPHS = flags.DEFINE_integer("graphs", 4, "Signatures in the bundle.",
                               lower_bound=1)
_GRAPH_MB = flags.DEFINE_float("graph_mb", 4.0, "MiB per model.",
                               lower_bound=0.01)
_NODES_PER_GRAPH = flags.DEFINE_integer("nodes_per_graph", 500,
                                        "Nodes per model.", lower_bound=1)
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Client threads.",
                                    lower_bound=1)
_PUBLISHES = flags.DEFINE_integer("publishes", 5,
                                  "New versions published under load.",
                                  lower_bound=1)
_INTERVAL_S = flags.DEFINE_float(
    "interval_s", 3.0, "Pause between the end of a publish and the next.",
    lower_bound=0)
_SETTLE_S = flags.DEFINE_float(
    "settle_s", 4.0,
    "Load kept on after the last version became AVAILABLE.", lower_bound=0)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch directory.")

MODEL = "merged"
SIGNATURE = "model_0"
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def wait_available(address: str, version: int, timeout_s: float) -> float:
  """Waits until `version` of MODEL is AVAILABLE; returns the seconds waited.

  Raises:
    bench_lib.BenchError: not available before the deadline.
  """
  start = time.monotonic()
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  request.model_spec.version.value = version
  last = "no answer"
  with grpc.insecure_channel(address) as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    while time.monotonic() - start < timeout_s:
      try:
        response = stub.GetModelStatus(request, timeout=5)
        if any(s.state == _AVAILABLE for s in response.model_version_status):
          return time.monotonic() - start
        last = str(response.model_version_status).replace("\n", " ")
      except grpc.RpcError as e:
        last = f"{e.code().name}: {e.details()}"
      time.sleep(0.05)
  raise bench_lib.BenchError(
      f"version {version} of model {MODEL} not AVAILABLE within {timeout_s} s"
      f" of being published (last status: {last}).")


class _Load:
  """Client threads sending Predicts until stopped; thread-safe tallies."""

  def __init__(self, address: str, request: predict_pb2.PredictRequest,
               concurrency: int):
    self._address = address
    self._request = request
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self.latencies = []
    self.failures = collections.Counter()
    self.versions = collections.Counter()
    self._threads = [threading.Thread(target=self._worker)
                     for _ in range(concurrency)]
    self.elapsed = 0.0
    self._start = 0.0

  def _worker(self) -> None:
    with grpc.insecure_channel(self._address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      while not self._stop.is_set():
        start = time.perf_counter()
        try:
          response = stub.Predict(self._request, timeout=30)
        except grpc.RpcError as e:
          with self._lock:
            self.failures[f"{e.code().name}: {e.details()}"[:200]] += 1
          continue
        latency = time.perf_counter() - start
        with self._lock:
          self.latencies.append(latency)
          self.versions[response.model_spec.version.value] += 1

  def __enter__(self) -> "_Load":
    self._start = time.perf_counter()
    for t in self._threads:
      t.start()
    return self

  def __exit__(self, *unused_exc) -> None:
    self._stop.set()
    for t in self._threads:
      t.join()
    self.elapsed = time.perf_counter() - self._start


def run(*, graphs: int, graph_mb: float, nodes_per_graph: int,
        concurrency: int, publishes: int, interval_s: float, settle_s: float,
        work_dir: str) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary."""
  infos = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen"), num_graphs=graphs,
      total_bytes=int(graph_mb * graphs * 2**20),
      total_nodes=nodes_per_graph * graphs)
  spec = graph_gen.write_spec(os.path.join(work_dir, "merge.toml"), infos)
  base = os.path.join(work_dir, "models", MODEL)
  merge_lib.merge_and_publish(spec, base, message="version 1")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = SIGNATURE
  for alias, value in graph_gen.sample_feeds(infos[0], batch_size=1).items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))

  publish_runs = []
  with launcher.ModelServer(
      model_name=MODEL, model_base_path=base,
      extra_flags=["--file_system_poll_wait_seconds=1"]) as server:
    print(f"Serving {base} on {server.address}; publishing {publishes} "
          f"versions under load from {concurrency} clients ...", flush=True)
    with _Load(server.address, request, concurrency) as load:
      for i in range(publishes):
        time.sleep(interval_s)
        result = bench_lib.run_process(bench_lib.python_module(
            "python.merge.merge", f"--spec={spec}", f"--output_base={base}",
            "--keep_versions=2", f"--message=hot swap {i + 2}"))
        publish_runs.append(result)
        print(f"  publish {i + 1}/{publishes}: {result.wall_s:.1f} s "
              f"{'ok' if result.ok else 'FAILED'}; requests so far "
              f"{len(load.latencies)}, failed {sum(load.failures.values())}",
              flush=True)
        if not result.ok:
          raise bench_lib.BenchError(
              f"publishing version {i + 2} failed:\n{result.output_tail}")
      swap_s = wait_available(server.address, publishes + 1, 300)
      time.sleep(settle_s)
  ok = len(load.latencies)
  failed = sum(load.failures.values())
  summary = {
      "benchmark": "hotswap",
      "machine": bench_lib.machine_description(),
      "server": "tensorflow_model_server" if server.is_real_server
                else "python/serve",
      "concurrency": concurrency,
      "publishes": publishes,
      "seconds": round(load.elapsed, 2),
      "requests": ok + failed,
      "failed": failed,
      "failures": dict(load.failures),
      "throughput_rps": round(ok / load.elapsed, 1) if load.elapsed else None,
      "p50_ms": (round(bench_lib.percentile(load.latencies, 50) * 1000, 3)
                 if ok else None),
      "p99_ms": (round(bench_lib.percentile(load.latencies, 99) * 1000, 3)
                 if ok else None),
      "versions_seen": {str(k): v for k, v in sorted(load.versions.items())},
      "publish_s": [round(r.wall_s, 2) for r in publish_runs],
      "last_version": publishes + 1,
      "last_version_available_after_s": round(swap_s, 2),
      "targets_met": {"zero_failed_requests": failed == 0},
  }
  print()
  print(f"Machine: {summary['machine']}")
  print(f"Server: {summary['server']}; {graphs} signatures; {publishes} "
        f"versions published every ~{interval_s:g} s (+ merge time) under "
        f"{concurrency} client threads.")
  print(bench_lib.markdown_table(
      ["seconds", "requests", "failed", "requests/s", "p50 ms", "p99 ms",
       "versions seen (requests)"],
      [[bench_lib.fmt(summary["seconds"], 1), summary["requests"], failed,
        bench_lib.fmt(summary["throughput_rps"], 0),
        bench_lib.fmt(summary["p50_ms"], 3), bench_lib.fmt(summary["p99_ms"],
                                                           3),
        ", ".join(f"v{k}: {v}" for k, v in summary["versions_seen"].items())
        ]]))
  for message, count in load.failures.items():
    print(f"  {count} x {message}")
  print()
  return summary


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(graphs=_GRAPHS.value, graph_mb=_GRAPH_MB.value,
               nodes_per_graph=_NODES_PER_GRAPH.value,
               concurrency=_CONCURRENCY.value,
               publishes=_PUBLISHES.value, interval_s=_INTERVAL_S.value,
               settle_s=_SETTLE_S.value, work_dir=work_dir)

  bench_lib.run_benchmark("hotswap_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError,
                                  merge_lib.MergeError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
