"""What a model server is told to serve: its options and model config file.

`ServerOptions` mirrors the tensorflow_model_server flags; the functions here
turn --model_config_file (or --model_name/--model_base_path) into the
ModelServerConfig the server loads at start and on each poll. They live apart
from the server's lifecycle (`server_lib`) and its request handling
(`servicers`) because `serve` builds them before any server exists and
neither needs the other's code to change.
`ServerError` is here too: a bad config is the first reason a server cannot
start, and `server_lib` raises the same class for the others.
"""

import dataclasses
import os
from typing import Sequence, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from python.serve import model_manager


class ServerError(RuntimeError):
  """The server cannot start (bad config, model that does not load, port)."""


@dataclasses.dataclass
class ServerOptions:
  """Options of `server_lib.ModelServer`, named after tensorflow_model_server flags.

  Exactly one of `model_base_path` and `model_config_file` is used; as in TF
  Serving, `model_config_file` wins when both are set.
  """
  port: int = 8500
  host: str = '127.0.0.1'
  # Also serve gRPC on this Unix socket ('' = no socket).
  grpc_socket_path: str = ''
  # (key, value) pairs given to the gRPC server, as --grpc_channel_arguments.
  grpc_channel_arguments: Sequence[Tuple[str, object]] = ()
  enable_grpc_healthcheck_service: bool = False
  model_name: str = 'default'
  model_base_path: str = ''
  model_config_file: str = ''
  model_config_file_poll_wait_seconds: float = 0.0
  grpc_max_threads: int = 4 * (os.cpu_count() or 1)
  ssl_config_file: str = ''
  # 0 = no HTTP/REST server. It binds `host` like the gRPC port.
  rest_api_port: int = 0
  rest_api_num_threads: int = 4 * (os.cpu_count() or 1)
  # Deadline of each REST request's TensorFlow run; <= 0: none.
  rest_api_timeout_in_ms: int = 30000
  rest_api_enable_cors_support: bool = False
  # A text MonitoringConfig: prometheus_config { enable: true path: "..." }.
  monitoring_config_file: str = ''
  drain_timeout_seconds: float = 30.0
  manager: model_manager.ManagerOptions = dataclasses.field(
      default_factory=model_manager.ManagerOptions)


def parse_model_config_text(text: str, source: str
                           ) -> model_server_config_pb2.ModelServerConfig:
  """Parses a text-format ModelServerConfig with a model_config_list.

  Args:
    text: The text proto.
    source: Where it came from, for messages.

  Returns:
    The parsed config.

  Raises:
    ServerError: the text does not parse or has no model_config_list.
  """
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    # The wording of TF Serving's log (protobuf's text parser, then
    # ParseProtoTextFile's status); the parser's message quotes at most a
    # short excerpt of the input.
    raise ServerError(
        'Error parsing text-format tensorflow.serving.ModelServerConfig: '
        f"{_excerpt(str(e))}. Invalid protobuf file: '{source}'") from e
  if config.WhichOneof('config') != 'model_config_list':
    raise ServerError(
        f"{source}: expected a `model_config_list {{ config {{ name: ... "
        f"base_path: ... }} }}` block; custom_model_config is not supported.")
  return config


def _excerpt(text: str, limit: int = 300) -> str:
  return text if len(text) <= limit else text[:limit] + '...'


def read_model_config_file(path: str
                          ) -> model_server_config_pb2.ModelServerConfig:
  """Reads and parses --model_config_file.

  Args:
    path: The text-format ModelServerConfig file.

  Returns:
    The parsed config.

  Raises:
    ServerError: the file is unreadable or invalid.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise ServerError(f'Cannot read --model_config_file={path}: {e}') from e
  return parse_model_config_text(text, path)


def single_model_config(model_name: str, model_base_path: str
                       ) -> model_server_config_pb2.ModelServerConfig:
  """The config TF Serving builds from --model_name/--model_base_path."""
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = model_name
  model.base_path = model_base_path
  model.model_platform = 'tensorflow'
  return config
