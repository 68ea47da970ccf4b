r"""An empty tensorflow.serving.PredictionService: the transport floor.

  python -m tests.bench.empty_grpc_server --port=0

Serves `tensorflow.serving.PredictionService/Predict` with the same grpcio and
generated protobuf classes the model server uses: each request is parsed into
a PredictRequest and answered with an empty PredictResponse. Prints
`PORT <n>` on stdout once serving. `server_bench` measures a Predict round
trip to it as the gRPC floor of the model server.
"""

from concurrent import futures
import os
import signal
import threading
from typing import Sequence

from absl import app
from absl import flags
import grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

_PORT = flags.DEFINE_integer("port", 0, "Port (0: any free port).",
                             lower_bound=0)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind.")
_THREADS = flags.DEFINE_integer("threads", 4 * (os.cpu_count() or 1),
                                "Server worker threads (the model server's "
                                "--grpc_max_threads default).",
                                lower_bound=1)


class EmptyPredictionService(
    prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict answers an empty response; nothing else is served."""

  def Predict(self, request, context):
    del request, context
    return predict_pb2.PredictResponse()


def make_server(host: str, port: int, threads: int) -> tuple[grpc.Server,
                                                             int]:
  """Returns an unstarted empty PredictionService server, and its port."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      EmptyPredictionService(), server)
  bound = server.add_insecure_port(f"{host}:{port}")
  return server, bound


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  server, port = make_server(_HOST.value, _PORT.value, _THREADS.value)
  if not port:
    raise SystemExit(f"cannot bind {_HOST.value}:{_PORT.value}")
  server.start()
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  print(f"PORT {port}", flush=True)
  stop.wait()
  server.stop(grace=1).wait()


if __name__ == "__main__":
  app.run(main)
