r"""A gRPC server whose one method does nothing: the transport floor.

  python -m tests.bench.empty_grpc_server --port=0

Serves `/bench.Empty/Call` (raw bytes in, empty bytes out) with the same
grpcio the model server uses, and prints `PORT <n>` on stdout once serving.
`server_bench` measures a round trip to it as the gRPC floor of a Predict.
"""

from concurrent import futures
import signal
import threading
from typing import Sequence

from absl import app
from absl import flags
import grpc

METHOD = "/bench.Empty/Call"

_PORT = flags.DEFINE_integer("port", 0, "Port (0: any free port).",
                             lower_bound=0)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind.")
_THREADS = flags.DEFINE_integer("threads", 16, "Server worker threads.",
                                lower_bound=1)


def _empty(unused_request: bytes, unused_context) -> bytes:
  return b""


def make_server(host: str, port: int, threads: int) -> tuple[grpc.Server,
                                                             int]:
  """Returns an unstarted server with the empty method, and its port."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
  handler = grpc.method_handlers_generic_handler("bench.Empty", {
      "Call": grpc.unary_unary_rpc_method_handler(_empty),
  })
  server.add_generic_rpc_handlers((handler,))
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
