r"""Benchmark 6: REST against gRPC on the same server, batch 1.

  bazel run //tests/bench:rest_bench -- --requests=1000 --blocks=10

Publishes one small model (the `graph_gen` model of server_bench), starts one
`//python/serve` process with `--rest_api_port`, and sends the same Predict
(batch 1) over gRPC (a persistent channel) and over REST (JSON in the
columnar format on a persistent HTTP/1.1 connection), alternating the two
request by request so both meet the same load from the rest of the machine.
After `--warmup_requests` unmeasured requests each, `--requests` per protocol
in each of `--blocks` blocks. Reports pooled p50/p99, the median of per-block
p99s, and the per-block REST/gRPC p99 ratio. Prints a Markdown table, then
one JSON line (the last line).
"""

import http.client
import json
import os
import time
from typing import Sequence

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.common import cli
from python.merge import merge_lib
from python.serve import launcher
from tests.bench import bench_lib
from tests.bench import graph_gen

_REQUESTS = flags.DEFINE_integer(
    "requests", 1000, "Measured requests per protocol and block.",
    lower_bound=1)
_BLOCKS = flags.DEFINE_integer("blocks", 10, "Measured blocks.",
                               lower_bound=1)
_WARMUP_REQUESTS = flags.DEFINE_integer(
    "warmup_requests", 200, "Unmeasured requests per protocol first.",
    lower_bound=0)
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


class _RestClient:
  """POSTs one prepared body on a persistent connection."""

  def __init__(self, port: int, path: str, body: bytes):
    self._connection = http.client.HTTPConnection("127.0.0.1", port,
                                                  timeout=30)
    self._path = path
    self._body = body
    self._headers = {"Content-Type": "application/json"}

  def __call__(self) -> dict:
    self._connection.request("POST", self._path, self._body, self._headers)
    response = self._connection.getresponse()
    text = response.read()
    if response.status != 200:
      raise bench_lib.BenchError(
          f"REST predict answered {response.status}: {text[:300]!r}")
    return json.loads(text)

  def close(self) -> None:
    self._connection.close()


def run(*, requests: int, blocks: int, warmup_requests: int, model_mb: float,
        nodes: int, work_dir: str) -> dict:
  """Runs the benchmark and prints its table; returns the JSON summary."""
  [graph] = graph_gen.write_graphs(
      os.path.join(work_dir, "frozen"), num_graphs=1,
      total_bytes=int(model_mb * 2**20), total_nodes=nodes)
  spec = graph_gen.write_spec(os.path.join(work_dir, "merge.toml"), [graph])
  base = os.path.join(work_dir, "models", MODEL)
  merge_lib.merge_and_publish(spec, base)
  feeds = graph_gen.sample_feeds(graph, batch_size=1)

  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.model_spec.signature_name = SIGNATURE
  for alias, value in feeds.items():
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
  body = json.dumps({"signature_name": SIGNATURE,
                     "inputs": {a: v.tolist() for a, v in feeds.items()}})

  rest_port = launcher.free_port()
  server = launcher.ServerProcess(
      model_name=MODEL, model_base_path=base, use_real_server=False,
      extra_flags=[f"--rest_api_port={rest_port}"]).start()
  rest = _RestClient(rest_port, f"/v1/models/{MODEL}:predict",
                     body.encode())
  try:
    with grpc.insecure_channel(server.address) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

      def grpc_call():
        return stub.Predict(request, timeout=30)

      # Same answers both ways, or the comparison means nothing.
      grpc_scores = tf.make_ndarray(grpc_call().outputs["scores"])
      rest_scores = np.asarray(rest()["outputs"], np.float32)
      if not np.allclose(grpc_scores, rest_scores, rtol=1e-6, atol=0):
        raise bench_lib.BenchError(
            f"REST and gRPC answers differ: {rest_scores} vs {grpc_scores}")
      for _ in range(warmup_requests):
        grpc_call()
        rest()
      grpc_blocks, rest_blocks = [], []
      for _ in range(blocks):
        grpc_latencies, rest_latencies = [], []
        for _ in range(requests):
          start = time.perf_counter()
          grpc_call()
          grpc_latencies.append(time.perf_counter() - start)
          start = time.perf_counter()
          rest()
          rest_latencies.append(time.perf_counter() - start)
        grpc_blocks.append(grpc_latencies)
        rest_blocks.append(rest_latencies)
  finally:
    rest.close()
    server.stop()

  results = {"grpc": bench_lib.latency_summary(grpc_blocks),
             "rest": bench_lib.latency_summary(rest_blocks)}
  block_ratio = bench_lib.paired_block_ratio(rest_blocks, grpc_blocks, 99)
  rows = []
  for label in ("grpc", "rest"):
    s = results[label]
    rows.append([label, s["requests"], bench_lib.fmt(s["p50_ms"], 3),
                 bench_lib.fmt(s["p99_ms"], 3),
                 bench_lib.fmt(s["block_p99_ms"], 3),
                 bench_lib.fmt(s["mean_ms"], 3)])
  ratios = {
      "p50": bench_lib.ratio(results["rest"]["p50_ms"],
                             results["grpc"]["p50_ms"]),
      "p99": bench_lib.ratio(results["rest"]["p99_ms"],
                             results["grpc"]["p99_ms"]),
      "block_p99": block_ratio["median"],
  }
  rows.append(["rest / grpc", "", bench_lib.fmt(ratios["p50"], 3),
               bench_lib.fmt(ratios["p99"], 3),
               f"{bench_lib.fmt(block_ratio['median'], 3)} "
               f"({block_ratio['min']:.2f} to {block_ratio['max']:.2f})",
               ""])
  print()
  print(f"Machine: {bench_lib.machine_description()}")
  print(f"Model: 1 signature, {graph.nodes} nodes, {model_mb:g} MiB, batch 1;"
        f" {blocks} blocks of {requests} requests per protocol, alternating.")
  print(bench_lib.markdown_table(
      ["protocol", "requests", "p50 ms", "p99 ms", "block p99 ms", "mean ms"],
      rows))
  print()
  return {
      "benchmark": "rest",
      "machine": bench_lib.machine_description(),
      "protocols": results,
      "rest_over_grpc": ratios,
      "block_p99_ratio": block_ratio,
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use flags.")
  tf.get_logger().setLevel("ERROR")

  def _run(work_dir: str) -> dict:
    return run(requests=_REQUESTS.value, blocks=_BLOCKS.value,
               warmup_requests=_WARMUP_REQUESTS.value,
               model_mb=_MODEL_MB.value, nodes=_NODES.value,
               work_dir=work_dir)

  bench_lib.run_benchmark("rest_bench", _run, parent_dir=_WORK_DIR.value,
                          keep=_KEEP.value,
                          errors=(bench_lib.BenchError, launcher.LauncherError,
                                  merge_lib.MergeError))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
