r"""Benchmark 4: what the model server adds on top of running the model.

  bazel run //tests/bench:server_bench -- --concurrency=1,4,16 --seconds=5

Publishes one small model and, for the project's server (`//python/serve`)
and, when one is on PATH, the real `tensorflow_model_server`, measures
Predict p50 / p99 latency and throughput with `--concurrency` client threads
sending back-to-back requests for `--seconds` each. Next to it, two floors
measured in the same run:

  run floor   in-process Session.run of the same signature and input
  gRPC floor  a round trip of an empty call to a grpcio server on this
              machine (tests/bench/empty_grpc_server.py)

and the overhead ratio server p50 / (run floor p50 + gRPC floor p50) at
concurrency 1. Clients and servers share the machine's cores. Prints a
Markdown table, then one JSON line (the last line).
"""

import contextlib
import functools
import os
import subprocess
import threading
import time
from typing import Callable, Iterator, Sequence

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
from tests.bench import empty_grpc_server
from tests.bench import graph_gen

_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "4", "16"],
                                 "Client thread counts.")
_SECONDS = flags.DEFINE_float("seconds", 5.0,
                              "Measured seconds per concurrency level.",
                              lower_bound=0.1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 50, "Unmeasured requests before each server's run.",
    lower_bound=0)
_FLOOR_CALLS = flags.DEFINE_integer(
    "floor_calls", 2000, "Calls measured for each floor.", lower_bound=1)
_MODEL_MB = flags.DEFINE_float("model_mb", 1.0, "Size of the model in MiB.",
                               lower_bound=0.01)
_NODES = flags.DEFINE_integer("nodes", 200, "Nodes of the model.",
                              lower_bound=1)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch directory.")

MODEL = "small"
SIGNATURE = "model_0"


def _stats(latencies: Sequence[float], elapsed: float) -> dict:
  return {
      "requests": len(latencies),
      "p50_ms": round(bench_lib.percentile(latencies, 50) * 1000, 3),
      "p99_ms": round(bench_lib.percentile(latencies, 99) * 1000, 3),
      "throughput_rps": round(len(latencies) / elapsed, 1) if elapsed else None,
  }


def time_calls(call: Callable[[], None], count: int) -> list[float]:
  """Latencies of `count` sequential calls, in seconds."""
  latencies = []
  for _ in range(count):
    start = time.perf_counter()
    call()
    latencies.append(time.perf_counter() - start)
  return latencies


def load(call: Callable[[], None], concurrency: int,
         seconds: float) -> dict:
  """Runs `call` back to back from `concurrency` threads for `seconds`.

  Raises:
    bench_lib.BenchError: a call failed (the first error).
  """
  deadline = time.perf_counter() + seconds
  per_thread = [[] for _ in range(concurrency)]
  errors = []

  def worker(latencies):
    while time.perf_counter() < deadline and not errors:
      start = time.perf_counter()
      try:
        call()
      except grpc.RpcError as e:
        errors.append(f"{e.code()}: {e.details()}")
        return
      latencies.append(time.perf_counter() - start)

  threads = [threading.Thread(target=worker, args=(l,)) for l in per_thread]
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - start
  if errors:
    raise bench_lib.BenchError(f"a request failed: {errors[0]}")
  return _stats([v for l in per_thread for v in l], elapsed)


@contextlib.contextmanager
def empty_server() -> Iterator[str]:
  """Starts empty_grpc_server in a subprocess; yields its address."""
  proc = subprocess.Popen(  # pylint: disable=consider-using-with
      bench_lib.python_module("tests.bench.empty_grpc_server"),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=bench_lib.python_env(), cwd=bench_lib.REPO_ROOT)
  try:
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
      proc.kill()
      raise bench_lib.BenchError(
          f"empty gRPC server did not start (exit {proc.wait()}): "
          f"{proc.stderr.read()[-2000:]}")
    yield f"127.0.0.1:{int(line.split()[1])}"
  finally:
    if proc.poll() is None:
      proc.terminate()
      try:
        proc.wait(10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(*, concurrency: Sequence[int], seconds: float, warmup_requests: int,
        floor_calls: int, model_mb: float, nodes: int, work_dir: str) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary."""
  [graph] = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen"), num_graphs=1,
      total_bytes=int(model_mb * 2**20), total_nodes=nodes)
  spec = graph_gen.write_spec(os.path.join(work_dir, "merge.toml"), [graph])
  base = os.path.join(work_dir, "models", MODEL)
  result = merge_lib.merge_and_publish(spec, base)
  feeds = graph_gen.sample_feeds(graph, batch_size=1)

  # Floor 1: Session.run of the same signature, in process.
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], result.path)
    signature = meta.signature_def[SIGNATURE]
    feed_dict = {signature.inputs[a].name: v for a, v in feeds.items()}
    fetch = signature.outputs["scores"].name
    time_calls(lambda: sess.run(fetch, feed_dict), warmup_requests)
    run_floor = time_calls(lambda: sess.run(fetch, feed_dict), floor_calls)
  # Floor 2: an empty gRPC round trip.
  with empty_server() as address, grpc.insecure_channel(address) as channel:
    empty = channel.unary_unary(empty_grpc_server.METHOD)
    time_calls(lambda: empty(b"", timeout=10), warmup_requests)
    grpc_floor = time_calls(lambda: empty(b"", timeout=10), floor_calls)
  floors = {"session_run": _stats(run_floor, sum(run_floor)),
            "grpc_empty": _stats(grpc_floor, sum(grpc_floor))}
  floor_p50 = floors["session_run"]["p50_ms"] + floors["grpc_empty"]["p50_ms"]

  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = SIGNATURE
  for alias, value in feeds.items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))

  servers = [("python/serve", False)]
  if launcher.find_real_server():
    servers.append(("tensorflow_model_server", True))
  results = {}
  for label, use_real_server in servers:
    server = launcher.ModelServer(model_name=MODEL, model_base_path=base,
                                  use_real_server=use_real_server).start()
    try:
      with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        call = functools.partial(stub.Predict, request, timeout=30)
        time_calls(call, warmup_requests)
        results[label] = {}
        for c in concurrency:
          results[label][str(c)] = load(call, c, seconds)
          print(f"  {label} concurrency {c}: {results[label][str(c)]}",
                flush=True)
    finally:
      server.stop()

  rows = [["Session.run (in process)", 1,
           bench_lib.fmt(floors["session_run"]["p50_ms"], 3),
           bench_lib.fmt(floors["session_run"]["p99_ms"], 3), "-", "-"],
          ["empty gRPC call", 1,
           bench_lib.fmt(floors["grpc_empty"]["p50_ms"], 3),
           bench_lib.fmt(floors["grpc_empty"]["p99_ms"], 3), "-", "-"]]
  overhead = {}
  for label, by_c in results.items():
    first = by_c[str(concurrency[0])]
    overhead[label] = bench_lib.ratio(first["p50_ms"], floor_p50)
    for c in concurrency:
      s = by_c[str(c)]
      rows.append([label, c, bench_lib.fmt(s["p50_ms"], 3),
                   bench_lib.fmt(s["p99_ms"], 3),
                   bench_lib.fmt(s["throughput_rps"], 0),
                   bench_lib.fmt(bench_lib.ratio(s["p50_ms"], floor_p50))])
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Model: 1 signature, {graph.nodes} nodes, {model_mb:g} MiB, batch 1;"
        f" {seconds:g} s per concurrency level; clients share the cores.")
  print(bench_lib.markdown_table(
      ["what", "concurrency", "p50 ms", "p99 ms", "requests/s",
       "p50 / (run floor + gRPC floor)"], rows))
  print()
  return {
      "benchmark": "server",
      "machine": bench_lib.machine_description(),
      "floors": floors,
      "servers": results,
      "overhead_p50_vs_floors": overhead,
      "concurrency": list(concurrency),
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  try:
    concurrency = [int(c) for c in _CONCURRENCY.value]
  except ValueError as e:
    raise app.UsageError(
        f"--concurrency={','.join(_CONCURRENCY.value)}: {e}; give thread "
        "counts like 1,4,16.") from e
  if not concurrency or min(concurrency) < 1:
    raise app.UsageError(f"--concurrency must be positive; got {concurrency}")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(concurrency=concurrency, seconds=_SECONDS.value,
               warmup_requests=_WARMUP_REQUESTS.value,
               floor_calls=_FLOOR_CALLS.value, model_mb=_MODEL_MB.value,
               nodes=_NODES.value, work_dir=work_dir)

  bench_lib.run_benchmark("server_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError,
                                  merge_lib.MergeError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
