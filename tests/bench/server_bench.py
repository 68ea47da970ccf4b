r"""Benchmark 4: what the model server adds on top of running the model.

  bazel run //tests/bench:server_bench -- --concurrency=1,16,64 --seconds=5

Serves two models with the project's server (`//python/serve`) and, when one
is on PATH, the real `tensorflow_model_server`:

  half_plus_two  TF Serving's own (tests/testdata/tf_serving_models.py: the
                 canonical Predict, `x = [2.0]` -> `y = [3.0]`); its run is
                 tiny, so it measures what the server itself costs.
  dense          `--dense_layers` fully connected ReLU layers of
                 `--dense_width` (weights in variables), one row per request:
                 a model whose run dominates the RPC, which is what batching
                 is for.

For each model, the floors and the server at concurrency 1 are measured
in turns, in blocks of `--block_requests` (so they meet the same load from the rest
of the machine):

  callable floor  the signature's session callable, in process (what the
                  model's own run costs; back to back, TF's default pool)
  gRPC floor      a Predict round trip to an empty Python PredictionService
                  (same grpcio and protobuf; tests/bench/empty_grpc_server.py)

with the ratio server p50 / (callable floor p50 + gRPC floor p50). Then
`--concurrency` client threads send back-to-back requests for `--seconds`
each, to the server as is and with `--enable_batching`
(`--batching_parameters`), and the batching gain is requests/s with
batching / without at each concurrency. Batched answers are compared with
unbatched ones. Clients and servers share the machine's cores. Prints a
Markdown table per model, then one JSON line (the last line).
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

MODELS = ("half_plus_two", "dense")

_MODELS = flags.DEFINE_list("models", list(MODELS),
                             "Models to serve: half_plus_two, dense.")
_DENSE_WIDTH = flags.DEFINE_integer("dense_width", 2048,
                                    "Width of the dense model's layers.",
                                    lower_bound=1)
_DENSE_LAYERS = flags.DEFINE_integer("dense_layers", 4,
                                     "Layers of the dense model.",
                                     lower_bound=1)
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "16", "64"],
                                 "Client thread counts.")
_SECONDS = flags.DEFINE_float("seconds", 5.0,
                              "Measured seconds per concurrency level.",
                              lower_bound=0.1)
_BLOCK_REQUESTS = flags.DEFINE_integer(
    "block_requests", 100,
    "At concurrency 1, the floor and the servers take turns in blocks of "
    "this many requests.", lower_bound=1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 50, "Unmeasured requests before each server's run.",
    lower_bound=0)
_FLOOR_CALLS = flags.DEFINE_integer(
    "floor_calls", 2000,
    "Calls measured for each floor, and requests per server at "
    "concurrency 1.", lower_bound=1)
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

SIGNATURE = "serving_default"


def write_dense(base_path: str, width: int, layers: int) -> str:
  """A TF1 SavedModel of `layers` Dense+ReLU layers; returns the version dir.

  Signature serving_default: `x` float [None, width] -> `y` [None, width].
  Weights are seeded variables (in the checkpoint, as trained models hold
  them), scaled so activations stay near 1.
  """
  version_dir = os.path.join(base_path, "1")
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, width], name="x")
    y = x
    for i in range(layers):
      w = tf.compat.v1.get_variable(
          f"dense_{i}/kernel", [width, width], tf.float32,
          tf.compat.v1.random_normal_initializer(
              stddev=np.sqrt(2.0 / width), seed=i))
      y = tf.nn.relu(tf.matmul(y, w))
    y = tf.identity(y, name="y")
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(version_dir)
      builder.add_meta_graph_and_variables(
          sess, ["serve"], signature_def_map={
              SIGNATURE: tf.compat.v1.saved_model.predict_signature_def(
                  {"x": x}, {"y": y})})
      builder.save()
  return version_dir


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


def time_alternating(calls: Sequence[Callable[[], None]], count: int,
                     block: int) -> list[list[float]]:
  """Latencies of `count` calls of each, alternating in blocks of `block`.

  Each contender serves a block of back-to-back calls (so its threads are as
  awake as in a sequential run), then the next one; the order rotates every
  round, so all of them meet the same load from the rest of the machine.
  """
  latencies = [[] for _ in calls]
  round_index = 0
  while len(latencies[0]) < count:
    for k in range(len(calls)):
      j = (round_index + k) % len(calls)
      for _ in range(min(block, count - len(latencies[j]))):
        start = time.perf_counter()
        calls[j]()
        latencies[j].append(time.perf_counter() - start)
    round_index += 1
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


@contextlib.contextmanager
def predict_stub(address: str, request: predict_pb2.PredictRequest,
                 timeout_s: float = 30) -> Iterator[Callable]:
  """Yields a no-argument Predict of `request` on a fresh channel."""
  with grpc.insecure_channel(address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    yield functools.partial(stub.Predict, request, timeout=timeout_s)


def _output(response: predict_pb2.PredictResponse) -> np.ndarray:
  return tf.make_ndarray(response.outputs["y"])


def concurrent_answers(call: Callable[[], predict_pb2.PredictResponse],
                       threads: int, per_thread: int) -> list[np.ndarray]:
  """Answers of `threads` threads sending `per_thread` requests each.

  With batching on, these are the answers of rows run in batches.
  """
  answers = [[] for _ in range(threads)]
  workers = [threading.Thread(
      target=lambda out: out.extend(_output(call()) for _ in range(per_thread)),
      args=(out,)) for out in answers]
  for worker in workers:
    worker.start()
  for worker in workers:
    worker.join()
  return [a for out in answers for a in out]


def _model(name: str, work_dir: str, dense_width: int, dense_layers: int):
  """Writes model `name`; returns (base path, version dir, input, label)."""
  base = os.path.join(work_dir, "models", name)
  if name == "half_plus_two":
    return (base, tf_serving_models.write_half_plus_two(base),
            np.array([2.0], np.float32),
            "TF Serving's half_plus_two, Predict x = [2.0]")
  rows = np.random.default_rng(0).standard_normal(
      (1, dense_width)).astype(np.float32)
  return (base, write_dense(base, dense_width, dense_layers), rows,
          f"dense: {dense_layers} x ReLU(MatMul {dense_width}x{dense_width}), "
          f"one row of {dense_width} floats per request")


def _callable_floor(version_dir: str, x: np.ndarray, warmup: int,
                    calls: int) -> tuple[list[float], np.ndarray]:
  """The signature's session callable in process: latencies and answer."""
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_dir)
    signature = meta.signature_def[SIGNATURE]
    # pylint: disable-next=protected-access
    run_callable = sess._make_callable_from_options(
        config_pb2.CallableOptions(feed=[signature.inputs["x"].name],
                                   fetch=[signature.outputs["y"].name]))
    answer = run_callable(x)[0]
    time_calls(lambda: run_callable(x), warmup)
    return time_calls(lambda: run_callable(x), calls), answer


def run_model(name: str, *, concurrency: Sequence[int], seconds: float,
              warmup_requests: int, floor_calls: int,
              batching_parameters: str, dense_width: int, dense_layers: int,
              block_requests: int, work_dir: str) -> dict:
  """Measures one model; prints its table; returns its JSON summary."""
  base, version_dir, x, description = _model(name, work_dir, dense_width,
                                             dense_layers)
  run_floor, expected = _callable_floor(version_dir, x, warmup_requests,
                                        floor_calls)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = SIGNATURE
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))

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

  results = {}
  answers = {}
  diffs = {}
  with contextlib.ExitStack() as stack:
    servers = {}
    for label, real, extra in runs:
      server = launcher.ServerProcess(model_name=name, model_base_path=base,
                                      use_real_server=real,
                                      extra_flags=extra).start()
      stack.callback(server.stop)
      servers[label] = stack.enter_context(
          predict_stub(server.address, request))
      answers[label] = _output(servers[label]())
      if not np.allclose(answers[label], expected, rtol=1e-5, atol=1e-5):
        raise bench_lib.BenchError(
            f"{label} answered {answers[label]!r}, not {expected!r}")
      time_calls(servers[label], warmup_requests)
      # Answers under concurrency (batched rows, with batching) against the
      # first, sequential one.
      for answer in concurrent_answers(servers[label], max(concurrency), 10):
        diffs[label] = max(diffs.get(label, 0.0),
                           float(np.max(np.abs(answer - answers[label]))))
    address = stack.enter_context(empty_server())
    empty = stack.enter_context(predict_stub(address, request, 10))
    time_calls(empty, warmup_requests)
    # Floors and servers at concurrency 1, request by request.
    labels = ["grpc_empty_prediction_service"] + list(servers)
    alternating = time_alternating(
        [empty] + list(servers.values()), floor_calls, block_requests)
    sequential = {label: _stats(l, sum(l))
                  for label, l in zip(labels, alternating)}
    for label, call in servers.items():
      results[label] = {}
      for c in concurrency:
        results[label][str(c)] = load(call, c, seconds)
        print(f"  {name} {label} concurrency {c}: {results[label][str(c)]}",
              flush=True)

  floors = {"callable": _stats(run_floor, sum(run_floor)),
            "grpc_empty_prediction_service":
                sequential.pop("grpc_empty_prediction_service")}
  floor_p50 = (floors["callable"]["p50_ms"] +
               floors["grpc_empty_prediction_service"]["p50_ms"])
  rows = [["session callable (in process, floor)", 1,
           bench_lib.fmt(floors["callable"]["p50_ms"], 3),
           bench_lib.fmt(floors["callable"]["p99_ms"], 3), "", "", ""],
          ["empty Python PredictionService (floor)", "1, in turns",
           bench_lib.fmt(floors["grpc_empty_prediction_service"]["p50_ms"], 3),
           bench_lib.fmt(floors["grpc_empty_prediction_service"]["p99_ms"], 3),
           "", "", ""]]
  overhead = {}
  batching_gain = {}
  plain = results["python/serve"]
  for label, by_c in results.items():
    s = sequential[label]
    overhead[label] = bench_lib.ratio(s["p50_ms"], floor_p50)
    rows.append([f"`{label}`", "1, in turns", bench_lib.fmt(s["p50_ms"], 3),
                 bench_lib.fmt(s["p99_ms"], 3), "",
                 f"**{bench_lib.fmt(overhead[label])}**", ""])
    for c in concurrency:
      s = by_c[str(c)]
      gain = bench_lib.ratio(s["throughput_rps"],
                             plain[str(c)]["throughput_rps"])
      if label.endswith("--enable_batching"):
        batching_gain[str(c)] = gain
      rows.append([f"`{label}`", c, bench_lib.fmt(s["p50_ms"], 3),
                   bench_lib.fmt(s["p99_ms"], 3),
                   bench_lib.fmt(s["throughput_rps"], 0), "",
                   bench_lib.fmt(gain)])
  # Every answer, sequential or concurrent, against python/serve's first.
  batched_diff = {
      label: max(diffs[label],
                 float(np.max(np.abs(answer - answers["python/serve"]))))
      for label, answer in answers.items()}
  print()
  print(f"Model: {description}; {seconds:g} s per concurrency level; "
        f"{floor_calls} requests each at concurrency 1, taking turns in blocks "
        f"of {block_requests}; clients "
        "share the cores. Batching: "
        f"{batching_parameters or 'not run'}.")
  print(bench_lib.markdown_table(
      ["what", "concurrency", "p50 ms", "p99 ms", "requests/s",
       "p50 / (callable + gRPC floor)", "requests/s vs python/serve"], rows))
  print("Max |answer - python/serve's first answer| over sequential and "
        f"{max(concurrency)}-thread requests: {batched_diff}")
  print()
  return {
      "description": description,
      "floors": floors,
      "floor_p50_ms": round(floor_p50, 3),
      "in_turns_concurrency_1": sequential,
      "servers": results,
      "overhead_p50_vs_floors": overhead,
      "batching_gain_rps": batching_gain,
      "max_abs_diff_vs_sequential": batched_diff,
  }


def run(*, models: Sequence[str], concurrency: Sequence[int], seconds: float,
        warmup_requests: int, floor_calls: int, batching_parameters: str,
        dense_width: int, dense_layers: int, block_requests: int,
        work_dir: str) -> dict:
  """Runs the benchmark on each model; returns the JSON summary."""
  print(f"Machine: {bench_lib.machine_description()}")
  by_model = {
      name: run_model(name, concurrency=concurrency, seconds=seconds,
                      warmup_requests=warmup_requests,
                      floor_calls=floor_calls,
                      batching_parameters=batching_parameters,
                      dense_width=dense_width, dense_layers=dense_layers,
                      block_requests=block_requests, work_dir=work_dir)
      for name in models}
  return {
      "benchmark": "server",
      "machine": bench_lib.machine_description(),
      "models": by_model,
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
  unknown = sorted(set(_MODELS.value) - set(MODELS))
  if unknown or not _MODELS.value:
    raise app.UsageError(f"--models: unknown {unknown or 'empty'}; choose "
                         f"from {','.join(MODELS)}")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(models=_MODELS.value, concurrency=concurrency,
               seconds=_SECONDS.value, dense_width=_DENSE_WIDTH.value,
               dense_layers=_DENSE_LAYERS.value,
               block_requests=_BLOCK_REQUESTS.value,
               warmup_requests=_WARMUP_REQUESTS.value,
               floor_calls=_FLOOR_CALLS.value,
               batching_parameters=_BATCHING_PARAMETERS.value,
               work_dir=work_dir)

  bench_lib.run_benchmark("server_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
