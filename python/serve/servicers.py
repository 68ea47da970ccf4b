"""The request side of the model server: what each RPC and REST call runs.

`RequestRunner` is the call path both APIs share (resolve the version, run,
record the metrics), so the gRPC servicers here and `rest_api.RestApiHandler`
validate, fail and count alike. `PredictionServicer` and `ModelServicer` are
tensorflow.serving.PredictionService and ModelService; `ModelHealthServicer`
is grpc.health.v1 answering per model name too. They hold no server state:
`server_lib.ModelServer` builds them over its `model_manager.ModelManager`
and owns ports, start-up and shutdown, so request handling can be read and
changed without the lifecycle.
"""

from typing import Callable, Optional

from absl import logging
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.serve import inference
from python.serve import metrics as metrics_lib
from python.serve import model_manager
from python.serve import serving_error


def _abort(context: grpc.ServicerContext,
           error: serving_error.ServingError) -> None:
  context.abort(error.code, error.message)


def _internal(error: Exception) -> serving_error.ServingError:
  """An unexpected failure: one log line (no traceback), INTERNAL."""
  logging.error('Request failed with an internal error: %s: %s',
                type(error).__name__, str(error)[:500])
  return serving_error.internal(
      f'{type(error).__name__}: {str(error)[:500]}')


def _timeout(context: grpc.ServicerContext) -> Optional[float]:
  remaining = context.time_remaining()
  return remaining if remaining is not None and remaining < 1e8 else None


# --- The call path shared by gRPC and REST (issue 12) ----------------------

_RUNS = {'Predict': inference.predict, 'Classify': inference.classify,
         'Regress': inference.regress}


class RequestRunner:
  """Runs requests for both APIs: resolve the version, run, record metrics.

  The gRPC servicers and `rest_api.RestApiHandler` both call this, so the
  two entrypoints share validation, errors and instrumentation.
  """

  def __init__(self, manager: model_manager.ModelManager,
               metrics: metrics_lib.Metrics):
    self._manager = manager
    self._metrics = metrics
    # Request metrics are only readable on the Prometheus page; without it
    # (set_recording(False)) requests skip them (~15 us each in Python).
    self._recording = True

  def set_recording(self, enabled: bool) -> None:
    """Whether requests record their metrics (on iff Prometheus is on)."""
    self._recording = enabled

  def run(self, api: str, request, timeout_s: Optional[float],
          entrypoint: str, fill: Optional[Callable] = None):
    """Runs a Predict/Classify/Regress request and records its metrics.

    Args:
      api: 'Predict', 'Classify' or 'Regress'.
      request: The request proto (model_spec set).
      timeout_s: Deadline of the TensorFlow run, or None.
      entrypoint: metrics_lib.ENTRYPOINT_GRPC or ENTRYPOINT_REST.
      fill: Optional `fill(servable)` completing the request once the
        version is resolved (REST builds its tensors from the signature).

    Returns:
      The response proto.

    Raises:
      ServingError: as TF Serving would fail the request.
    """
    spec = request.model_spec
    if not self._recording:
      with self._manager.servable(spec) as servable:
        if fill is not None:
          fill(servable)
        return _RUNS[api](servable, request, timeout_s)
    with self._metrics.request(spec.name, api, entrypoint) as record:
      with self._manager.servable(spec) as servable:
        try:
          if fill is not None:
            fill(servable)
        finally:
          name = spec.signature_name or inference.DEFAULT_SIGNATURE
          if name in servable.signatures:
            record.signature_name = name
        return _RUNS[api](self._metrics.timed(servable, spec.name, api),
                          request, timeout_s)

  def metadata(self, request):
    """GetModelMetadata, as the gRPC and REST APIs answer it."""
    inference.validate_metadata_request(request)
    with self._manager.servable(request.model_spec) as servable:
      return inference.get_model_metadata(servable, request)

  def status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus, as the gRPC and REST APIs answer it."""
    spec = request.model_spec
    version = spec.version.value if spec.HasField('version') else None
    states = self._manager.model_status(spec.name, version)
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state, error in states:
      status = response.model_version_status.add()
      status.version = version
      status.state = state
      # Always present, as TF Serving sets it from the servable's health
      # (error_code 0 = OK).
      status.status.SetInParent()
      if error:
        status.status.error_code = error.code.value[0]
        status.status.error_message = error.message
    return response


class ModelHealthServicer(health.HealthServicer):
  """grpc.health.v1 that also answers per model name (issue 12).

  Check(service=<model name>) is SERVING while that configured model has an
  available version, NOT_SERVING while it has none (a failed or pending
  load) and once the server stops; other names answer as set with `set()`
  ('' and the two services). Watch is the base class's (set() names only).
  """

  def __init__(self, manager: model_manager.ModelManager):
    super().__init__()
    self._manager = manager
    self._stopping = False

  def enter_graceful_shutdown(self):
    self._stopping = True
    super().enter_graceful_shutdown()

  def Check(self, request, context):
    available = self._manager.model_availability().get(request.service)
    if available is None:
      return super().Check(request, context)
    serving = available and not self._stopping
    return health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVING if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING)

# --- end of the shared call path -------------------------------------------


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer
                        ):
  """tensorflow.serving.PredictionService over a ModelManager."""

  def __init__(self, manager: model_manager.ModelManager,
               runner: RequestRunner):
    self._manager = manager
    self._runner = runner

  def _call(self, context: grpc.ServicerContext, request, api: str):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument(
          'Missing ModelSpec: set model_spec.name (and optionally version, '
          'version_label, signature_name).'))
    try:
      return self._runner.run(api, request, _timeout(context),
                              metrics_lib.ENTRYPOINT_GRPC)
    except serving_error.ServingError as e:
      _abort(context, e)
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, _internal(e))

  def Predict(self, request, context):
    return self._call(context, request, 'Predict')

  def Classify(self, request, context):
    return self._call(context, request, 'Classify')

  def Regress(self, request, context):
    return self._call(context, request, 'Regress')

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
    except Exception as e:  # pylint: disable=broad-except
      _abort(context, _internal(e))

  def GetModelMetadata(self, request, context):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument('Missing ModelSpec'))
    try:
      return self._runner.metadata(request)
    except serving_error.ServingError as e:
      _abort(context, e)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService over a ModelManager."""

  def __init__(self, manager: model_manager.ModelManager,
               runner: RequestRunner):
    self._manager = manager
    self._runner = runner

  def GetModelStatus(self, request, context):
    if not request.HasField('model_spec'):
      _abort(context, serving_error.invalid_argument('Missing ModelSpec'))
    try:
      return self._runner.status(request)
    except serving_error.ServingError as e:
      _abort(context, e)

  def HandleReloadConfigRequest(self, request, context):
    response = model_management_pb2.ReloadConfigResponse()
    error = None
    if request.config.WhichOneof('config') != 'model_config_list':
      error = serving_error.invalid_argument(
          'ServerModelConfig type not supported by HandleReloadConfigRequest.'
          ' Only ModelConfigList is currently supported')
    else:
      # --- control-call isolation (serve-speed): a reload waits in one of
      # the manager's control slots, bounded by the caller's deadline, never
      # in a thread that serving calls and health checks need.
      try:
        with self._manager.control_call():
          self._manager.reload_config(request.config.model_config_list,
                                      _timeout(context))
      except model_manager.ControlCallsExhaustedError as e:
        error = serving_error.ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
      # --- end control-call isolation
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
