"""TF Serving's HTTP/REST API (and the Prometheus page) on aiohttp.

`RestApiHandler` is tensorflow_model_server's http_rest_api_handler.cc: it
routes a request (case-insensitive paths, `versions/N` and `labels/L`
variants), turns the JSON body into the same request proto the gRPC API takes
(`json_tensor`), runs it through the call path the gRPC servicers use (a
`Backend`, see servicers.RequestRunner), and answers JSON or
`{"error": "..."}` with TF Serving's gRPC -> HTTP status map:

  POST /v1/models/<name>[/versions/<N>|/labels/<L>]:(predict|classify|regress)
  GET  /v1/models/<name>[/versions/<N>|/labels/<L>]            (status)
  GET  /v1/models/<name>[/versions/<N>|/labels/<L>]/metadata

`RestServer` serves it on aiohttp in a thread of its own (its event loop
never runs TensorFlow: every request runs in a pool of
`--rest_api_num_threads` threads), plus:

* the Prometheus page at the MonitoringConfig's path (`metrics`);
* `GET /readyz`, this project's readiness extension: 200 only while every
  configured model has an available version (TF Serving's status URL answers
  200 whatever the state, serving#671 and #1754), 503 otherwise and while
  the server stops;
* with `--rest_api_enable_cors_support`, TF Serving's CORS headers on every
  answer and a 200 for preflight OPTIONS requests.

aiohttp rather than uvicorn+starlette: the server lives inside a process that
gRPC and TensorFlow already own, so it must run as a component started and
stopped by `server_lib.ModelServer` in a thread, without installing signal
handlers or owning the main loop; aiohttp's AppRunner/TCPSite API is exactly
that, with a bounded graceful shutdown, and the same package is the HTTP client
the tests use. uvicorn is built to be the process's entry point.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import re
import threading
import urllib.parse
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from absl import logging
from aiohttp import web
import grpc
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from python.serve import json_tensor
from python.serve import metrics as metrics_lib
from python.serve import serving_error

READINESS_PATH = '/readyz'
JSON_CONTENT_TYPE = 'application/json'
DEFAULT_SIGNATURE = 'serving_default'
CORS_HEADERS = (('Access-Control-Allow-Origin', '*'),
                ('Access-Control-Allow-Methods', 'POST, GET'),
                ('Access-Control-Allow-Headers', 'Content-Type'))
# aiohttp refuses bodies over 1 MiB by default; TF Serving sets no limit.
MAX_BODY_BYTES = 2**31 - 1

_API_PATH = re.compile(r'/v1/.*', re.IGNORECASE | re.DOTALL)
_PREDICTION_PATH = re.compile(
    r'/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
    r':(classify|regress|predict)', re.IGNORECASE)
_STATUS_PATH = re.compile(
    r'/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
    r'(?:/(metadata))?', re.IGNORECASE)
_INT64_MAX = 2**63 - 1

# net_http's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
  """The HTTP status TF Serving answers for a gRPC status code."""
  return HTTP_STATUS.get(code, 500)


class Backend(Protocol):
  """The request path shared with the gRPC servicers (servicers)."""

  def run(self, api: str, request, timeout_s: Optional[float],
          entrypoint: str, fill: Optional[Callable] = None):
    """Resolves, fills (`fill(servable)`), runs and records a request."""

  def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
              ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata."""

  def status(self, request: get_model_status_pb2.GetModelStatusRequest
            ) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus."""


class RestApiHandler:
  """http_rest_api_handler.cc: (method, path, body) -> (HTTP status, JSON).

  Blocking (it runs TensorFlow); thread-safe.
  """

  def __init__(self, backend: Backend, timeout_s: Optional[float]):
    """Args: backend: the shared call path; timeout_s: run deadline."""
    self._backend = backend
    self._timeout_s = timeout_s

  def process(self, method: str, path: str, body: bytes) -> Tuple[int, str]:
    """Answers one REST request.

    Args:
      method: The HTTP method.
      path: The URI path, still percent-encoded (no query string).
      body: The request body.

    Returns:
      (HTTP status, response JSON text).
    """
    try:
      return 200, self._dispatch(method, path, body)
    except serving_error.ServingError as e:
      return http_status(e.code), json_tensor.error_json(e.message)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception('REST request %s %s failed', method, path)
      return 500, json_tensor.error_json(f'{type(e).__name__}: {e}')

  def _dispatch(self, method: str, path: str, body: bytes) -> str:
    malformed = serving_error.invalid_argument(
        f'Malformed request: {method} {path}')
    if method == 'POST':
      match = _PREDICTION_PATH.fullmatch(path)
      if not match:
        raise malformed
      name, version, label, verb = match.groups()
      spec = _model_spec(name, version, label)
      verb = verb.lower()
      if verb == 'predict':
        return self._predict(spec, body)
      return self._classify_or_regress(verb, spec, body)
    if method == 'GET':
      match = _STATUS_PATH.fullmatch(path)
      if not match:
        raise malformed
      name, version, label, subresource = match.groups()
      if not name:
        raise serving_error.invalid_argument('Missing model name in request.')
      spec = _model_spec(name, version, label)
      if subresource and subresource.lower() == 'metadata':
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.metadata_field.append('signature_def')
        request.model_spec.CopyFrom(spec)
        return json_tensor.metadata_json(self._backend.metadata(request))
      request = get_model_status_pb2.GetModelStatusRequest()
      request.model_spec.CopyFrom(spec)
      return json_tensor.status_json(self._backend.status(request))
    raise malformed

  def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(spec)
    formats = []

    def fill(servable):
      def input_infos(signature_name: str):
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
          raise serving_error.invalid_argument(
              f'Serving signature name: "{name}" not found in signature def')
        return signature.inputs
      formats.append(json_tensor.fill_predict_request(body, input_infos,
                                                      request))

    response = self._backend.run('Predict', request, self._timeout_s,
                                 metrics_lib.ENTRYPOINT_REST, fill)
    return json_tensor.predict_response_json(response.outputs, formats[0])

  def _classify_or_regress(self, verb: str, spec: model_pb2.ModelSpec,
                           body: bytes) -> str:
    if verb == 'classify':
      request = classification_pb2.ClassificationRequest()
      api = 'Classify'
    else:
      request = regression_pb2.RegressionRequest()
      api = 'Regress'
    request.model_spec.CopyFrom(spec)

    def fill(unused_servable):
      json_tensor.fill_examples_request(body, request)

    response = self._backend.run(api, request, self._timeout_s,
                                 metrics_lib.ENTRYPOINT_REST, fill)
    if verb == 'classify':
      return json_tensor.classification_json(response.result)
    return json_tensor.regression_json(response.result)


def _decode(text: str, what: str) -> str:
  try:
    return urllib.parse.unquote(text, errors='strict')
  except UnicodeDecodeError as e:
    raise serving_error.invalid_argument(
        f'Failed to decode {what}:{text}') from e


def _model_spec(name: str, version: Optional[str], label: Optional[str]
               ) -> model_pb2.ModelSpec:
  """FillModelSpecWithNameVersionAndLabel from the path's parts."""
  spec = model_pb2.ModelSpec(name=_decode(name, 'model name'))
  if version:
    number = int(version)
    if number > _INT64_MAX:
      raise serving_error.invalid_argument(
          f'Failed to convert version: {version} to numeric.')
    spec.version.value = number
  if label:
    spec.version_label = _decode(label, 'model version label')
  return spec


class RestServerError(RuntimeError):
  """The REST port cannot be opened."""


class RestServer:
  """TF Serving's HTTP server: the REST API, Prometheus page and readiness.

  `start()` binds the port and serves from a thread of its own;
  `begin_stop()` closes the port and lets requests in flight finish for up
  to `drain_timeout_s`; `wait_stopped()` waits for that.
  """

  def __init__(self, handler: RestApiHandler, *, host: str, port: int,
               num_threads: int, enable_cors: bool,
               metrics: Optional[metrics_lib.Metrics] = None,
               prometheus: Optional[metrics_lib.PrometheusOptions] = None,
               unready_models: Optional[Callable[[], List[str]]] = None,
               drain_timeout_s: float = 30.0):
    """Configures (does not start) the server.

    Args:
      handler: Answers /v1/ requests.
      host: Address to bind.
      port: Port to bind (0: any free port).
      num_threads: Threads running requests (--rest_api_num_threads).
      enable_cors: Add TF Serving's CORS headers.
      metrics: The server's metrics, for the Prometheus page.
      prometheus: Whether and where to serve that page.
      unready_models: Configured models without an available version, for
        /readyz; None answers 200 while serving.
      drain_timeout_s: How long stopping waits for requests in flight.
    """
    self._handler = handler
    self._host = host
    self._port = port
    self._enable_cors = enable_cors
    self._metrics = metrics
    self._prometheus = prometheus or metrics_lib.PrometheusOptions()
    self._unready_models = unready_models
    self._drain_timeout_s = drain_timeout_s
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=num_threads, thread_name_prefix='rest')
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._stop_event: Optional[asyncio.Event] = None
    self._thread: Optional[threading.Thread] = None
    self._started = threading.Event()
    self._stopped = threading.Event()
    self._stopping = False
    self._start_error: Optional[BaseException] = None
    self.port: Optional[int] = None

  # --- lifecycle -----------------------------------------------------------

  def start(self) -> int:
    """Binds the port and starts serving.

    Returns:
      The bound port.

    Raises:
      RestServerError: the port cannot be bound.
    """
    self._thread = threading.Thread(target=self._serve, name='rest_server',
                                    daemon=True)
    self._thread.start()
    self._started.wait()
    if self._start_error is not None:
      self._executor.shutdown(wait=False)
      raise RestServerError(
          f'Cannot listen on {self._host}:{self._port} for the REST API: '
          f'{self._start_error}. Pick another --rest_api_port or --host.')
    logging.info('Exporting HTTP/REST API at:%s:%d ...', self._host,
                 self.port)
    return self.port

  def _serve(self) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    self._loop = loop
    self._stop_event = asyncio.Event()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_route('*', '/{path:.*}', self._route)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=self._drain_timeout_s)
    try:
      loop.run_until_complete(runner.setup())
      site = web.TCPSite(runner, self._host, self._port)
      loop.run_until_complete(site.start())
      self.port = runner.addresses[0][1]
    except OSError as e:
      self._start_error = e
      loop.run_until_complete(runner.cleanup())
      loop.close()
      self._started.set()
      self._stopped.set()
      return
    self._started.set()
    try:
      loop.run_until_complete(self._stop_event.wait())
      loop.run_until_complete(runner.cleanup())
    finally:
      loop.close()
      self._executor.shutdown(wait=False)
      self._stopped.set()

  def begin_stop(self) -> None:
    """Closes the port; requests in flight get `drain_timeout_s` to finish."""
    self._stopping = True
    if self._loop is not None and not self._stopped.is_set():
      with contextlib.suppress(RuntimeError):  # The loop already closed.
        self._loop.call_soon_threadsafe(self._stop_event.set)

  def wait_stopped(self, timeout_s: Optional[float] = None) -> bool:
    """Waits for `begin_stop` to finish; returns whether it did."""
    if self._thread is None:
      return True
    return self._stopped.wait(timeout_s)

  # --- requests ------------------------------------------------------------

  async def _route(self, request: web.Request) -> web.StreamResponse:
    path = request.rel_url.raw_path
    if self._prometheus.enable and path == self._prometheus.path:
      text = self._metrics.page() if self._metrics else ''
      return web.Response(text=text, content_type='text/plain',
                          charset='utf-8')
    if path == READINESS_PATH and request.method in ('GET', 'HEAD'):
      return await self._readiness()
    if not _API_PATH.fullmatch(path):
      return web.Response(status=404, text='Not Found')
    if request.method == 'OPTIONS' and self._enable_cors:
      return self._response(200, '')
    body = await request.read()
    loop = asyncio.get_running_loop()
    status, text = await loop.run_in_executor(
        self._executor, self._handler.process, request.method, path, body)
    return self._response(status, text)

  def _response(self, status: int, text: str) -> web.Response:
    response = web.Response(status=status, text=text,
                            content_type=JSON_CONTENT_TYPE)
    if self._enable_cors:
      for name, value in CORS_HEADERS:
        response.headers[name] = value
    return response

  async def _readiness(self) -> web.Response:
    if self._stopping:
      return self._readiness_response(False, 'server is stopping')
    if self._unready_models is None:
      return self._readiness_response(True, '')
    loop = asyncio.get_running_loop()
    unready = await loop.run_in_executor(self._executor, self._unready_models)
    if unready:
      return self._readiness_response(
          False, f'models without an available version: {unready}')
    return self._readiness_response(True, '')

  def _readiness_response(self, ready: bool, reason: str) -> web.Response:
    body: Dict[str, object] = {'ready': ready}
    if reason:
      body['reason'] = reason
    return self._response(200 if ready else 503, json.dumps(body))
