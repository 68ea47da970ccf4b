r"""Benchmark 5: hot swap under load.

  bazel run //tests/bench:hotswap_bench -- --publishes=5 --interval_s=3

Publishes version 1 of a merged bundle, starts the model server on it
(`--file_system_poll_wait_seconds=1`), and while `--concurrency` client
threads send Predict requests to one signature back to back (no version
pinned), publishes a new version `--publishes` times. Each cycle is
`--interval_s` of steady serving, the merge, the publish, then the swap. The
merge is a `//python/merge` process writing to a staging base; the publish
renames its version directory into the served base (what //python/merge does
last; the served base keeps two versions). The swap is from the server
starting to load the new version until it has loaded and warmed it up and
unloaded the old one. The signature's graph does not change between
versions, so its latency during swaps against steady state is what a model
that did not change feels. Requests during the merges are left out of both
phases: the merge runs on the serving machine here, not in production, and
its CPU (its ~2 s exit included) would be counted as the swap's. The
server's RSS is sampled every 50 ms.

Reports requests per second, p50 / p99 latency, the p99 during swaps against
the steady p99, the server's RSS during swaps against steady, failed requests
(target: zero) and the versions the clients saw. Prints a Markdown table,
then one JSON line (the last line).
"""

import collections
import os
import shutil
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
    "interval_s", 3.0,
    "Steady serving before each publish (measured as steady state).",
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
_END = get_model_status_pb2.ModelVersionStatus.END
_LOADING = get_model_status_pb2.ModelVersionStatus.LOADING


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
    self.starts = []
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
          self.starts.append(start)
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


class _RssSampler:
  """Samples a process's VmRSS every `period_s` in a thread."""

  def __init__(self, pid: int, period_s: float = 0.05):
    self._pid = pid
    self._period_s = period_s
    self._stop = threading.Event()
    self.samples = []  # (perf_counter time, bytes)
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self) -> None:
    path = f"/proc/{self._pid}/status"
    while not self._stop.wait(self._period_s):
      try:
        with open(path, encoding="utf-8") as f:
          for line in f:
            if line.startswith("VmRSS:"):
              self.samples.append((time.perf_counter(),
                                   int(line.split()[1]) * 1024))
              break
      except OSError:
        return

  def __enter__(self) -> "_RssSampler":
    self._thread.start()
    return self

  def __exit__(self, *unused_exc) -> None:
    self._stop.set()
    self._thread.join()


def _in_windows(times, values, windows):
  return [v for t, v in zip(times, values)
          if any(a <= t < b for a, b in windows)]


def wait_state(address: str, version: int, states: Sequence[int],
               timeout_s: float) -> bool:
  """Polls (every 20 ms) until `version` of MODEL is in one of `states`.

  Returns:
    False on timeout.
  """
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = MODEL
  request.model_spec.version.value = version
  deadline = time.monotonic() + timeout_s
  with grpc.insecure_channel(address) as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    while time.monotonic() < deadline:
      try:
        response = stub.GetModelStatus(request, timeout=5)
        if any(s.state in states for s in response.model_version_status):
          return True
      except grpc.RpcError:
        pass
      time.sleep(0.02)
  return False


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
  staging = os.path.join(work_dir, "staging", MODEL)
  merge_lib.merge_and_publish(spec, base, message="version 1")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = SIGNATURE
  for alias, value in graph_gen.sample_feeds(infos[0], batch_size=1).items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))

  publish_runs = []
  steady, swaps = [], []
  with launcher.ServerProcess(
      model_name=MODEL, model_base_path=base,
      extra_flags=["--file_system_poll_wait_seconds=1"]) as server:
    print(f"Serving {base} on {server.address}; publishing {publishes} "
          f"versions under load from {concurrency} clients ...", flush=True)
    pid = server.process.pid
    with _RssSampler(pid) as rss, _Load(server.address, request,
                                        concurrency) as load:
      time.sleep(1.0)  # Connections up, first requests served.
      swap_s = 0.0
      for i in range(publishes):
        start = time.perf_counter()
        time.sleep(interval_s)
        steady.append((start, time.perf_counter()))
        # The merge runs to a staging base and its version is then renamed
        # into the served one: the rename is the publish (the last step of
        # //python/merge), and the merge's own CPU (its ~2 s exit included)
        # stays out of the swap, as when merges run off the serving machine.
        result = bench_lib.run_process(bench_lib.python_module(
            "python.merge.merge", f"--spec={spec}",
            f"--output_base={staging}", f"--version={i + 2}",
            # The same graphs each time: a new version on purpose.
            "--allow_same_content", f"--message=hot swap {i + 2}"))
        publish_runs.append(result)
        if not result.ok:
          raise bench_lib.BenchError(
              f"merging version {i + 2} failed:\n{result.output_tail}")
        os.rename(os.path.join(staging, str(i + 2)),
                  os.path.join(base, str(i + 2)))
        # The swap: from the server starting to load the new version until
        # it has unloaded the old one.
        seen = wait_state(server.address, i + 2, (_LOADING, _AVAILABLE), 300)
        swap_start = time.perf_counter()
        if seen:
          swap_s = wait_available(server.address, i + 2, 300)
          wait_state(server.address, i + 1, (_END,), 60)
        swaps.append((swap_start, time.perf_counter()))
        if not seen:
          raise bench_lib.BenchError(
              f"the server did not load version {i + 2}:\n"
              f"{server.log_tail()}")
        # --keep_versions=2 on the served base.
        shutil.rmtree(os.path.join(base, str(i)), ignore_errors=True)
        print(f"  publish {i + 1}/{publishes}: merge {result.wall_s:.1f} s, "
              f"swap {swaps[-1][1] - swaps[-1][0]:.2f} s; requests so far "
              f"{len(load.latencies)}, failed {sum(load.failures.values())}",
              flush=True)
      start = time.perf_counter()
      time.sleep(settle_s)
      steady.append((start, time.perf_counter()))
    peak_rss = bench_lib.peak_rss_of_pid(pid)
  ok = len(load.latencies)
  failed = sum(load.failures.values())
  steady_lat = _in_windows(load.starts, load.latencies, steady)
  swap_lat = _in_windows(load.starts, load.latencies, swaps)
  rss_t = [t for t, _ in rss.samples]
  rss_v = [v for _, v in rss.samples]
  steady_rss = _in_windows(rss_t, rss_v, steady)
  swap_rss = _in_windows(rss_t, rss_v, swaps)

  def ms(values, p):
    return (round(bench_lib.percentile(values, p) * 1000, 3)
            if values else None)

  def mib(values):
    return round(max(values) / 2**20, 1) if values else None

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
      "p50_ms": ms(load.latencies, 50),
      "p99_ms": ms(load.latencies, 99),
      "steady": {"requests": len(steady_lat), "p50_ms": ms(steady_lat, 50),
                 "p99_ms": ms(steady_lat, 99),
                 "max_rss_mib": mib(steady_rss)},
      "swap": {"requests": len(swap_lat), "p50_ms": ms(swap_lat, 50),
               "p99_ms": ms(swap_lat, 99), "max_rss_mib": mib(swap_rss),
               "seconds": [round(b - a, 2) for a, b in swaps]},
      "swap_vs_steady_p99": bench_lib.ratio(ms(swap_lat, 99),
                                            ms(steady_lat, 99)),
      "swap_vs_steady_rss": bench_lib.ratio(mib(swap_rss), mib(steady_rss)),
      "server_peak_rss_mib": (round(peak_rss / 2**20, 1) if peak_rss
                              else None),
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
  print()
  print(bench_lib.markdown_table(
      ["phase", "requests", "p50 ms", "p99 ms", "server max RSS MiB"],
      [[phase, summary[phase]["requests"],
        bench_lib.fmt(summary[phase]["p50_ms"], 3),
        bench_lib.fmt(summary[phase]["p99_ms"], 3),
        bench_lib.fmt(summary[phase]["max_rss_mib"], 1)]
       for phase in ("steady", "swap")] +
      [["swap / steady", "", "",
        bench_lib.fmt(summary["swap_vs_steady_p99"]),
        bench_lib.fmt(summary["swap_vs_steady_rss"])]]))
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
