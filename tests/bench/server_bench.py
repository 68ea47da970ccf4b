r"""Benchmark 4: what the model server adds on top of running the model.

  bazel run //tests/bench:server_bench -- --concurrency=1,16,64 --seconds=5

Serves TF Serving's half_plus_two (tests/testdata/tf_serving_models.py: the
canonical Predict, `x = [2.0]` -> `y = [3.0]`) with the project's server
(`//python/serve`) and, when one is on PATH, the real
`tensorflow_model_server`, and measures Predict p50 / p99 latency and
throughput with `--concurrency` client threads sending back-to-back requests
for `--seconds` each: once as is, once with `--enable_batching`
(`--batching_parameters`). Next to it, two floors measured in the same run:

  callable floor  the signature's session callable, in process (what the
                  server's own run costs)
  gRPC floor      a Predict round trip to an empty Python PredictionService
                  (same grpcio and protobuf; tests/bench/empty_grpc_server.py)

and the ratios: server p50 / (callable floor p50 + gRPC floor p50) at
concurrency 1, and the batching gain (requests/s with batching / without) at
each concurrency. Clients and servers share the machine's cores. Prints a
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
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.serve import launcher
from python.common import cli
from tests.bench import bench_lib
from tests.testdata import tf_serving_models

_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "16", "64"],
                                 "Client thread counts.")
_SECONDS = flags.DEFINE_float("seconds", 5.0,
                              "Measured seconds per concurrency level.",
                              lower_bound=0.1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 50, "Unmeasured requests before each server's run.",
    lower_bound=0)
_FLOOR_CALLS = flags.DEFINE_integer(
    "floor_calls", 2000, "Calls measured for each floor.", lower_bound=1)
_BATCHING_PARAMETERS = flags.DEFINE_string(
    "batching_parameters",
    "max_batch_size { value: 64 } batch_timeout_micros { value: 0 } "
    "max_enqueued_batches { value: 1000 }",
    "Text BatchingParameters of the batched runs ('' skips them).")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Where to create the scratch directory (default: the system temp dir); "
    "the scratch directory is deleted at the end unless --keep.")
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the scratch directory.")

MODEL = "half_plus_two"
SIGNATURE = "serving_default"


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


def _serve(label: str, base: str, use_real_server: bool,
           request: predict_pb2.PredictRequest, concurrency: Sequence[int],
           seconds: float, warmup_requests: int,
           extra_flags: Sequence[str] = ()) -> dict:
  """Starts one server and loads it at every concurrency level."""
  server = launcher.ServerProcess(model_name=MODEL, model_base_path=base,
                                  use_real_server=use_real_server,
                                  extra_flags=extra_flags).start()
  results = {}
  try:
    with grpc.insecure_channel(server.address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      call = functools.partial(stub.Predict, request, timeout=30)
      response = call()
      if list(response.outputs["y"].float_val) != [3.0]:
        raise bench_lib.BenchError(
            f"{label} answered {response.outputs['y']}, not y = [3.0]")
      time_calls(call, warmup_requests)
      for c in concurrency:
        results[str(c)] = load(call, c, seconds)
        print(f"  {label} concurrency {c}: {results[str(c)]}", flush=True)
  finally:
    server.stop()
  return results


def run(*, concurrency: Sequence[int], seconds: float, warmup_requests: int,
        floor_calls: int, batching_parameters: str, work_dir: str) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary."""
  base = os.path.join(work_dir, "models", MODEL)
  version_dir = tf_serving_models.write_half_plus_two(base)
  x = np.array([2.0], np.float32)

  # Floor 1: the signature's session callable, in process.
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_dir)
    signature = meta.signature_def[SIGNATURE]
    # pylint: disable-next=protected-access
    run_callable = sess._make_callable_from_options(
        config_pb2.CallableOptions(feed=[signature.inputs["x"].name],
                                   fetch=[signature.outputs["y"].name]))
    time_calls(lambda: run_callable(x), warmup_requests)
    run_floor = time_calls(lambda: run_callable(x), floor_calls)

  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = SIGNATURE
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
  # Floor 2: a Predict round trip to an empty PredictionService.
  with empty_server() as address, grpc.insecure_channel(address) as channel:
    empty = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    time_calls(lambda: empty(request, timeout=10), warmup_requests)
    grpc_floor = time_calls(lambda: empty(request, timeout=10), floor_calls)
  floors = {"callable": _stats(run_floor, sum(run_floor)),
            "grpc_empty_prediction_service": _stats(grpc_floor,
                                                    sum(grpc_floor))}
  floor_p50 = (floors["callable"]["p50_ms"] +
               floors["grpc_empty_prediction_service"]["p50_ms"])

  params_path = os.path.join(work_dir, "batching.pbtxt")
  with open(params_path, "w", encoding="utf-8") as f:
    f.write(batching_parameters)
  runs = [("python/serve", False, ())]
  if batching_parameters:
    runs.append(("python/serve --enable_batching", False,
                 ("--enable_batching",
                  f"--batching_parameters_file={params_path}")))
  if launcher.find_real_server():
    runs.append(("tensorflow_model_server", True, ()))
  results = {label: _serve(label, base, real, request, concurrency, seconds,
                           warmup_requests, extra)
             for label, real, extra in runs}

  rows = [["session callable (in process)", 1,
           bench_lib.fmt(floors["callable"]["p50_ms"], 3),
           bench_lib.fmt(floors["callable"]["p99_ms"], 3), "-", "-", "-"],
          ["empty Python PredictionService", 1,
           bench_lib.fmt(floors["grpc_empty_prediction_service"]["p50_ms"], 3),
           bench_lib.fmt(floors["grpc_empty_prediction_service"]["p99_ms"], 3),
           "-", "-", "-"]]
  overhead = {}
  batching_gain = {}
  plain = results["python/serve"]
  for label, by_c in results.items():
    overhead[label] = bench_lib.ratio(by_c[str(concurrency[0])]["p50_ms"],
                                      floor_p50)
    for c in concurrency:
      s = by_c[str(c)]
      gain = bench_lib.ratio(s["throughput_rps"],
                             plain[str(c)]["throughput_rps"])
      if label.endswith("--enable_batching"):
        batching_gain[str(c)] = gain
      rows.append([label, c, bench_lib.fmt(s["p50_ms"], 3),
                   bench_lib.fmt(s["p99_ms"], 3),
                   bench_lib.fmt(s["throughput_rps"], 0),
                   bench_lib.fmt(bench_lib.ratio(s["p50_ms"], floor_p50)),
                   bench_lib.fmt(gain)])
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Model: TF Serving's half_plus_two, Predict x = [2.0]; {seconds:g} s "
        "per concurrency level; clients share the cores. Batching: "
        f"{batching_parameters or 'not run'}.")
  print(bench_lib.markdown_table(
      ["what", "concurrency", "p50 ms", "p99 ms", "requests/s",
       "p50 / (callable + gRPC floor)", "requests/s vs python/serve"], rows))
  print()
  return {
      "benchmark": "server",
      "machine": bench_lib.machine_description(),
      "floors": floors,
      "floor_p50_ms": round(floor_p50, 3),
      "servers": results,
      "overhead_p50_vs_floors": overhead,
      "batching_gain_rps": batching_gain,
      "batching_parameters": batching_parameters,
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
               floor_calls=_FLOOR_CALLS.value,
               batching_parameters=_BATCHING_PARAMETERS.value,
               work_dir=work_dir)

  bench_lib.run_benchmark("server_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
