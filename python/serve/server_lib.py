"""A TF-Serving-compatible gRPC model server on TensorFlow's Python runtime.

`ModelServer` wires a `model_manager.ModelManager` to the gRPC services of
tensorflow_model_server: `tensorflow.serving.PredictionService` (Predict,
Classify, Regress, MultiInference, GetModelMetadata),
`tensorflow.serving.ModelService` (GetModelStatus, HandleReloadConfigRequest)
and `grpc.health.v1.Health` (which also answers per model name). With
`rest_api_port`, it also serves TF Serving's HTTP/REST API, the Prometheus
page of `monitoring_config_file` and /readyz (`rest_api`, `metrics`); both
APIs run requests through one `servicers.RequestRunner`, which records the
metrics. This module is the server's lifecycle only: what each request runs is
in `servicers`, and the options and model config file in `server_config`. As
in TF Serving, the ports open only after every configured model's latest
version is available; `stop()` stops accepting requests, drains the ones in
flight (gRPC and REST together), then unloads every version.

`serve_until_signal()` runs a server for the `//python/serve` binary: start and
stop happen in worker threads while the main thread only waits for signals
(`signal_waiter`), so SIGINT/SIGTERM act at once in every phase, every wait is
bounded, and a second signal ends the wait.
"""

import concurrent.futures
import dataclasses
import os
import signal
import threading
import time
from typing import Callable, Optional, Sequence, Tuple

from absl import logging
import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from python.serve import metrics as metrics_lib
from python.serve import model_manager
from python.serve import rest_api
from python.serve import server_config
from python.serve import servicers
from python.serve import signal_waiter
from python.serve import ssl_config

_MODEL_SERVICES = ('tensorflow.serving.PredictionService',
                   'tensorflow.serving.ModelService')


# How long stop() waits, after the drain deadline, for gRPC to cancel the RPCs
# still running and for the versions they hold (or a load that was under way)
# to be released. TensorFlow cannot interrupt a running Session.run or load.
CANCEL_GRACE_S = 5.0
# Exit status after a second signal cut the shutdown short.
EXIT_FORCED = 1
# Extra time serve_until_signal gives stop() beyond its own bound.
_STOP_SLACK_S = 2.0


class StartCancelledError(server_config.ServerError):
  """`ModelServer.stop()` was called while `start()` was loading models."""


class ModelServer:
  """Loads the configured models, then serves them over gRPC.

  The server itself, in this process (the `serve` binary runs one);
  `launcher.ServerProcess` is the other kind, a server in a subprocess.

  `start()` and `stop()` may run in different threads: a `stop()` during
  `start()` makes `start()` give up (StartCancelledError) without ever
  opening the port, and a `stop()` after it drains and closes the port.
  """

  def __init__(self, options: server_config.ServerOptions):
    self._options = options
    self.metrics = metrics_lib.Metrics()
    self._manager = model_manager.ModelManager(
        dataclasses.replace(options.manager, metrics=self.metrics))
    self._runner = servicers.RequestRunner(self._manager, self.metrics)
    self._health = servicers.ModelHealthServicer(self._manager)
    self._rest: Optional[rest_api.RestServer] = None
    self.rest_port: Optional[int] = None
    # Guards the hand-over between start() and stop(): _server and
    # _config_poller are published, and the port opened, only while no stop
    # has been requested.
    self._lock = threading.Lock()
    self._server: Optional[grpc.Server] = None
    self._config_poller: Optional[threading.Thread] = None
    self._stop_requested = threading.Event()
    self._stopped = threading.Event()
    self._stop_result = False
    self.port: Optional[int] = None

  @property
  def stop_requested(self) -> bool:
    """Whether `stop()` has been called."""
    return self._stop_requested.is_set()

  @property
  def shutdown_timeout_s(self) -> float:
    """The longest `stop()` takes: the drain plus cancelling and unloading."""
    return self._options.drain_timeout_seconds + CANCEL_GRACE_S

  def _initial_config(self) -> model_server_config_pb2.ModelServerConfig:
    if self._options.model_config_file:
      return server_config.read_model_config_file(
          self._options.model_config_file)
    if not self._options.model_base_path:
      raise server_config.ServerError(
          'Both server_options.model_base_path and '
          'server_options.model_config_file are empty! Pass '
          '--model_base_path=/abs/path (with --model_name) or '
          '--model_config_file=/path/models.config.')
    return server_config.single_model_config(self._options.model_name,
                               self._options.model_base_path)

  def _cancelled(self) -> StartCancelledError:
    return StartCancelledError('Stopped while starting, before the port '
                               'opened.')

  def start(self) -> int:
    """Loads every model, then opens the gRPC port.

    Returns:
      The bound port.

    Raises:
      StartCancelledError: `stop()` was called before the port opened.
      server_config.ServerError: invalid config, a model that cannot load, or
        a port that cannot be bound.
    """
    if self.stop_requested:
      raise self._cancelled()
    config = self._initial_config()
    prometheus = self._prometheus_options()
    # Request metrics are read only by the Prometheus page.
    self._runner.set_recording(bool(prometheus.enable))
    credentials = None
    if self._options.ssl_config_file:
      try:
        credentials = ssl_config.server_credentials(
            ssl_config.read_ssl_config_file(self._options.ssl_config_file))
      except ssl_config.SSLConfigError as e:
        raise server_config.ServerError(str(e)) from e
    self._manager.start()
    try:
      self._manager.reload_config(config.model_config_list)
    except (model_manager.ConfigError,
            model_manager.ModelsUnavailableError) as e:
      if self.stop_requested:
        raise self._cancelled() from e
      self._manager.stop()
      raise server_config.ServerError(str(e)) from e

    # Serving threads plus the control calls' own slots (serve-speed), so
    # that waiting reloads never take the threads of requests and health.
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=(self._options.grpc_max_threads +
                         self._options.manager.max_concurrent_control_calls),
            thread_name_prefix='grpc'),
        options=[('grpc.max_send_message_length', -1),
                 ('grpc.max_receive_message_length', -1),
                 ('grpc.so_reuseport', 0)] +
        list(self._options.grpc_channel_arguments))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        servicers.PredictionServicer(self._manager, self._runner), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        servicers.ModelServicer(self._manager, self._runner), server)
    if self._options.enable_grpc_healthcheck_service:
      health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
    addresses = []
    if self._options.port:
      host = self._options.host
      if ':' in host and not host.startswith('['):
        host = f'[{host}]'
      addresses.append(f'{host}:{self._options.port}')
    if self._options.grpc_socket_path:
      addresses.append(
          f'unix:{os.path.abspath(self._options.grpc_socket_path)}')
    with self._lock:
      if self.stop_requested:
        raise self._cancelled()
      port, bind_error = self._bind(server, addresses, credentials)
      if bind_error is None:
        rest_error = self._start_rest(prometheus)
        if rest_error is not None:
          self._manager.stop()
          raise rest_error
        server.start()
        self._server = server
        self.port = port
        for service in ('',) + _MODEL_SERVICES:
          self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if (self._options.model_config_file and
            self._options.model_config_file_poll_wait_seconds > 0):
          self._config_poller = threading.Thread(
              target=self._poll_config_file, name='config_poller',
              daemon=True)
          self._config_poller.start()
    if bind_error is not None:
      self._manager.stop()
      raise server_config.ServerError(bind_error)
    for address in addresses:
      logging.info('Running gRPC ModelServer at %s%s ...',
                   address if not address.endswith(':0') else
                   f'{address[:-2]}:{port}',
                   ' (TLS)' if credentials is not None else '')
    return port

  @staticmethod
  def _bind(server: grpc.Server, addresses: Sequence[str], credentials
           ) -> Tuple[int, Optional[str]]:
    """Adds every listening address; returns (TCP port, error or None)."""
    tcp_port = 0
    for address in addresses:
      try:
        if credentials is None:
          port = server.add_insecure_port(address)
        else:
          port = server.add_secure_port(address, credentials)
      except RuntimeError as e:
        return 0, f'Cannot listen on {address}: {e}'
      if not port:
        fix = ('the socket path is not writable or in use; pick another '
               '--grpc_socket_path' if address.startswith('unix:') else
               'the port is in use or the host is not a local address. Pick '
               'another --port or --host')
        return 0, f'Cannot listen on {address}: {fix}.'
      if not address.startswith('unix:'):
        tcp_port = port
    return tcp_port, None

  def _prometheus_options(self) -> metrics_lib.PrometheusOptions:
    if not self._options.monitoring_config_file:
      return metrics_lib.PrometheusOptions()
    try:
      options = metrics_lib.read_monitoring_config_file(
          self._options.monitoring_config_file)
    except metrics_lib.MonitoringConfigError as e:
      raise server_config.ServerError(str(e)) from e
    if options.enable and not self._options.rest_api_port:
      logging.warning('--monitoring_config_file enables Prometheus, but it is '
                      'served on the REST port and --rest_api_port is 0: no '
                      'metrics page. Pass --rest_api_port=8501.')
    return options

  def _start_rest(self, prometheus: metrics_lib.PrometheusOptions
                 ) -> Optional[server_config.ServerError]:
    """Opens the REST port (if configured); returns the error, if any."""
    if not self._options.rest_api_port:
      return None
    timeout_ms = self._options.rest_api_timeout_in_ms
    rest = rest_api.RestServer(
        rest_api.RestApiHandler(self._runner,
                                timeout_ms / 1000 if timeout_ms > 0 else None),
        host=self._options.host, port=self._options.rest_api_port,
        num_threads=self._options.rest_api_num_threads,
        enable_cors=self._options.rest_api_enable_cors_support,
        metrics=self.metrics, prometheus=prometheus,
        unready_models=self._manager.unready_models,
        drain_timeout_s=self._options.drain_timeout_seconds)
    try:
      self.rest_port = rest.start()
    except rest_api.RestServerError as e:
      return server_config.ServerError(str(e))
    self._rest = rest
    return None

  # --- end of REST API and monitoring ---------------------------------------

  def _poll_config_file(self) -> None:
    wait = self._options.model_config_file_poll_wait_seconds
    while not self._stop_requested.wait(wait):
      try:
        config = server_config.read_model_config_file(
            self._options.model_config_file)
        self._manager.reload_config(config.model_config_list)
      except (server_config.ServerError, model_manager.ConfigError,
              model_manager.ModelsUnavailableError) as e:
        if self.stop_requested:
          return
        logging.error('Reloading %s failed; keeping the current models: %s',
                      self._options.model_config_file, e)

  def stop(self) -> bool:
    """Stops accepting RPCs, drains in-flight ones, unloads all models.

    Thread-safe, and bounded by `shutdown_timeout_s`: RPCs still running
    after --drain_timeout_seconds are cancelled (as gRPC's `stop(grace)`
    does), then the versions get CANCEL_GRACE_S to be released. Called while
    `start()` is loading, it abandons the loading instead (nothing is being
    served, so there is nothing to drain). A second call waits for the first.

    Returns:
      True if everything stopped and unloaded in time; False if a request or
      a model load was still running in TensorFlow (the process should then
      exit without waiting for it).
    """
    with self._lock:
      first_call = not self._stop_requested.is_set()
      self._stop_requested.set()
      server = self._server
      poller = self._config_poller
      rest = self._rest
    if not first_call:
      self._stopped.wait(self.shutdown_timeout_s)
      return self._stop_result
    drain_s = (self._options.drain_timeout_seconds if server is not None
               else 0.0)
    deadline = time.monotonic() + drain_s + CANCEL_GRACE_S
    self._health.enter_graceful_shutdown()
    if rest is not None:
      rest.begin_stop()  # Drains in parallel with gRPC below.
    drained = True
    if server is not None:
      logging.info('Stopping: draining in-flight requests (up to %.1fs)',
                   drain_s)
      drained = server.stop(drain_s).wait(_remaining(deadline))
      if not drained:
        logging.warning('gRPC server still shutting down %.1fs after the '
                        'drain deadline.', CANCEL_GRACE_S)
    else:
      logging.info('Stopping before the port opened: abandoning the loading.')
    if rest is not None and not rest.wait_stopped(_remaining(deadline)):
      drained = False
      logging.warning('REST server still shutting down at the deadline.')
    unloaded = self._manager.stop(_remaining(deadline))
    if poller is not None:
      poller.join(_remaining(deadline))
    self._stop_result = (drained and unloaded and
                         not (poller is not None and poller.is_alive()))
    self._stopped.set()
    logging.info('Server stopped%s.', '' if self._stop_result else
                 ' (some work was still running in TensorFlow)')
    return self._stop_result


def _remaining(deadline: float) -> float:
  return max(0.0, deadline - time.monotonic())


def _in_thread(name: str, function: Callable[[], object],
               on_done: Callable[[], None]) -> concurrent.futures.Future:
  """Runs `function` in a daemon thread; `on_done` runs when it returns."""
  future = concurrent.futures.Future()

  def run():
    try:
      future.set_result(function())
    except BaseException as e:  # pylint: disable=broad-except
      future.set_exception(e)
    finally:
      on_done()

  threading.Thread(target=run, name=name, daemon=True).start()
  return future


def serve_until_signal(server: ModelServer,
                       signals: signal_waiter.SignalWaiter) -> int:
  """Starts `server`, serves until SIGINT/SIGTERM, then stops it.

  Call from the main thread with `signals` installed. `start()` and `stop()`
  run in daemon threads while this thread only waits on `signals`, so a
  signal is acted on at once in every phase, and no signal handler does
  any work. A signal during start-up abandons the loading; one while serving
  drains in-flight requests for up to --drain_timeout_seconds. A second
  signal during either ends the wait at once.

  Args:
    server: The server, not started yet.
    signals: Installed in the main thread; its `wake()` is used too.

  Returns:
    The exit status: 0 after a signal-initiated shutdown (also when it ran
    out of time, which is logged), EXIT_FORCED when a second signal cut it
    short. Work may still be running in daemon threads in either case, so
    the caller should end the process without interpreter teardown.

  Raises:
    server_config.ServerError: the server could not start (and no signal
      came).
  """
  starting = _in_thread('model_server_start', server.start, signals.wake)
  signum = None
  while signum is None and not starting.done():
    signum = signals.wait()
  if signum is None:
    starting.result()  # Raises ServerError if the start failed.
    while signum is None:  # None: a wake() from the finished start.
      signum = signals.wait()
  name = signal.Signals(signum).name
  logging.info('Received %s: stopping (send it again to exit at once).', name)
  stopping = _in_thread('model_server_stop', server.stop, signals.wake)
  deadline = time.monotonic() + server.shutdown_timeout_s + _STOP_SLACK_S
  while not (stopping.done() and starting.done()):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      logging.warning('Shutdown still running after %.1fs; exiting anyway.',
                      server.shutdown_timeout_s + _STOP_SLACK_S)
      return 0
    again = signals.wait(remaining)
    if again is not None:
      logging.warning('Received %s during shutdown: exiting now, without '
                      'waiting for requests in flight or a model load.',
                      signal.Signals(again).name)
      return EXIT_FORCED
  start_error = starting.exception()
  if start_error is not None and not isinstance(start_error,
                                                StartCancelledError):
    logging.warning('Start-up failed while stopping: %s', start_error)
  if stopping.exception() is not None:
    logging.error('Shutdown failed: %s', stopping.exception())
  return 0
