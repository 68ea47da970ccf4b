"""A TF-Serving-compatible gRPC model server on TensorFlow's Python runtime.

`ModelServer` wires a `model_manager.ModelManager` to the gRPC services of
tensorflow_model_server: `tensorflow.serving.PredictionService` (Predict,
Classify, Regress, MultiInference, GetModelMetadata),
`tensorflow.serving.ModelService` (GetModelStatus, HandleReloadConfigRequest)
and `grpc.health.v1.Health`. As in TF Serving, the port opens only after every
configured model's latest version is available; `stop()` stops accepting RPCs,
drains the ones in flight, then unloads every version.
"""

import concurrent.futures
import dataclasses
import os
import threading
from typing import Callable, Optional

from absl import logging
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from python.serve import inference
from python.serve import model_manager
from python.serve import serving_error
from python.serve import ssl_config

_MODEL_SERVICES = ('tensorflow.serving.PredictionService',
                   'tensorflow.serving.ModelService')
_UNKNOWN_ERROR_CODE = 2  # tensorflow.error.Code.UNKNOWN


class ServerError(RuntimeError):
  """The server cannot start (bad config, model that does not load, port)."""


@dataclasses.dataclass
class ServerOptions:
  """Options of `ModelServer`, named after tensorflow_model_server flags.

  Exactly one of `model_base_path` and `model_config_file` is used; as in TF
  Serving, `model_config_file` wins when both are set.
  """
  port: int = 8500
  host: str = '127.0.0.1'
  model_name: str = 'default'
  model_base_path: str = ''
  model_config_file: str = ''
  model_config_file_poll_wait_seconds: float = 0.0
  grpc_max_threads: int = 4 * (os.cpu_count() or 1)
  ssl_config_file: str = ''
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
    raise ServerError(f"Invalid protobuf file: '{source}': {e}") from e
  if config.WhichOneof('config') != 'model_config_list':
    raise ServerError(
        f"{source}: expected a `model_config_list {{ config {{ name: ... "
        f"base_path: ... }} }}` block; custom_model_config is not supported.")
  return config


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


def _abort(context: grpc.ServicerContext,
           error: serving_error.ServingError) -> None:
  context.abort(error.code, error.message)


def _timeout(context: grpc.ServicerContext) -> Optional[float]:
  remaining = context.time_remaining()
  return remaining if remaining is not None and remaining < 1e8 else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer
                        ):
  """tensorflow.serving.PredictionService over a ModelManager."""

  def __init__(self, manager: model_manager.ModelManager):
    self._manager = manager

  def _call(self, context: grpc.ServicerContext, request, run: Callable):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument(
          'Missing ModelSpec: set model_spec.name (and optionally version, '
          'version_label, signature_name).'))
    try:
      with self._manager.servable(request.model_spec) as servable:
        return run(servable, request, _timeout(context))
    except serving_error.ServingError as e:
      _abort(context, e)

  def Predict(self, request, context):
    return self._call(context, request, inference.predict)

  def Classify(self, request, context):
    return self._call(context, request, inference.classify)

  def Regress(self, request, context):
    return self._call(context, request, inference.regress)

  def MultiInference(self, request, context):
    if not request.tasks:
      _abort(context, serving_error.invalid_argument(
          'MultiInferenceRequest must contain at least one task.'))
    spec = request.tasks[0].model_spec
    try:
      with self._manager.servable(spec) as servable:
        return inference.multi_inference(servable, request, _timeout(context))
    except serving_error.ServingError as e:
      _abort(context, e)

  def GetModelMetadata(self, request, context):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument('Missing ModelSpec'))
    try:
      inference.validate_metadata_request(request)
      with self._manager.servable(request.model_spec) as servable:
        return inference.get_model_metadata(servable, request)
    except serving_error.ServingError as e:
      _abort(context, e)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService over a ModelManager."""

  def __init__(self, manager: model_manager.ModelManager):
    self._manager = manager

  def GetModelStatus(self, request, context):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument('Missing ModelSpec'))
    spec = request.model_spec
    version = spec.version.value if spec.HasField('version') else None
    try:
      states = self._manager.model_status(spec.name, version)
    except serving_error.ServingError as e:
      _abort(context, e)
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state, error in states:
      status = response.model_version_status.add()
      status.version = version
      status.state = state
      # Always present, as TF Serving sets it from the servable's health
      # (error_code 0 = OK).
      status.status.SetInParent()
      if error:
        status.status.error_code = _UNKNOWN_ERROR_CODE
        status.status.error_message = error
    return response

  def HandleReloadConfigRequest(self, request, context):
    response = model_management_pb2.ReloadConfigResponse()
    error = None
    if request.config.WhichOneof('config') != 'model_config_list':
      error = serving_error.invalid_argument(
          'ServerModelConfig type not supported by HandleReloadConfigRequest.'
          ' Only ModelConfigList is currently supported')
    else:
      try:
        self._manager.reload_config(request.config.model_config_list)
      except model_manager.ConfigError as e:
        error = serving_error.invalid_argument(str(e))
      except model_manager.ModelsUnavailableError as e:
        error = serving_error.failed_precondition(str(e))
    if error is not None:
      logging.error('ReloadConfig failed: %s', error.message)
      response.status.error_code = error.code.value[0]
      response.status.error_message = error.message
      context.set_code(error.code)
      context.set_details(error.message)
    return response


class ModelServer:
  """Loads the configured models, then serves them over gRPC."""

  def __init__(self, options: ServerOptions):
    self._options = options
    self._manager = model_manager.ModelManager(options.manager)
    self._server: Optional[grpc.Server] = None
    self._health = health.HealthServicer()
    self._config_poller: Optional[threading.Thread] = None
    self._stopped = threading.Event()
    self._stop_lock = threading.Lock()
    self.stop_requested = False
    self.port: Optional[int] = None

  def _initial_config(self) -> model_server_config_pb2.ModelServerConfig:
    if self._options.model_config_file:
      return read_model_config_file(self._options.model_config_file)
    if not self._options.model_base_path:
      raise ServerError(
          'Both server_options.model_base_path and '
          'server_options.model_config_file are empty! Pass '
          '--model_base_path=/abs/path (with --model_name) or '
          '--model_config_file=/path/models.config.')
    return single_model_config(self._options.model_name,
                               self._options.model_base_path)

  def start(self) -> int:
    """Loads every model, then opens the gRPC port.

    Returns:
      The bound port.

    Raises:
      ServerError: invalid config, a model that cannot load, or a port that
        cannot be bound.
    """
    config = self._initial_config()
    credentials = None
    if self._options.ssl_config_file:
      try:
        credentials = ssl_config.server_credentials(
            ssl_config.read_ssl_config_file(self._options.ssl_config_file))
      except ssl_config.SSLConfigError as e:
        raise ServerError(str(e)) from e
    self._manager.start()
    try:
      self._manager.reload_config(config.model_config_list)
    except (model_manager.ConfigError,
            model_manager.ModelsUnavailableError) as e:
      self._manager.stop()
      raise ServerError(str(e)) from e
    if self.stop_requested:
      raise ServerError('Stop requested while the models were loading.')

    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=self._options.grpc_max_threads,
            thread_name_prefix='grpc'),
        options=[('grpc.max_send_message_length', -1),
                 ('grpc.max_receive_message_length', -1),
                 ('grpc.so_reuseport', 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self._manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(self._manager), server)
    health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
    host = self._options.host
    if ':' in host and not host.startswith('['):
      host = f'[{host}]'
    address = f'{host}:{self._options.port}'
    try:
      if credentials is None:
        port = server.add_insecure_port(address)
      else:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as e:
      self._manager.stop()
      raise ServerError(f'Cannot listen on {address}: {e}') from e
    if port == 0:
      self._manager.stop()
      raise ServerError(
          f'Cannot listen on {address}: the port is in use or the host is '
          'not a local address. Pick another --port or --host.')
    server.start()
    self._server = server
    self.port = port
    for service in ('',) + _MODEL_SERVICES:
      self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
    if (self._options.model_config_file and
        self._options.model_config_file_poll_wait_seconds > 0):
      self._config_poller = threading.Thread(
          target=self._poll_config_file, name='config_poller', daemon=True)
      self._config_poller.start()
    logging.info('Running gRPC ModelServer at %s:%d%s ...',
                 self._options.host, port,
                 ' (TLS)' if credentials is not None else '')
    return port

  def _poll_config_file(self) -> None:
    wait = self._options.model_config_file_poll_wait_seconds
    while not self._stopped.wait(wait):
      try:
        config = read_model_config_file(self._options.model_config_file)
        self._manager.reload_config(config.model_config_list)
      except (ServerError, model_manager.ConfigError,
              model_manager.ModelsUnavailableError) as e:
        logging.error('Reloading %s failed; keeping the current models: %s',
                      self._options.model_config_file, e)

  def wait_for_termination(self) -> None:
    """Blocks until `stop()` has run."""
    self._stopped.wait()

  def stop(self) -> None:
    """Stops accepting RPCs, drains in-flight ones, unloads all models."""
    with self._stop_lock:
      if self.stop_requested:
        return
      self.stop_requested = True
    logging.info('Stopping: draining in-flight requests (up to %.0fs)',
                 self._options.drain_timeout_seconds)
    self._health.enter_graceful_shutdown()
    if self._server is not None:
      self._server.stop(self._options.drain_timeout_seconds).wait()
    self._manager.stop()
    self._stopped.set()
    logging.info('Server stopped.')
