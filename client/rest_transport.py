"""TF Serving's HTTP/REST API as a PredictionService stub (--protocol=rest).

`RestStub` answers the four calls the client makes, GetModelMetadata,
Predict, Classify and Regress, with the same request and response protos as
the gRPC stub, so everything above `ServingClient._call` is shared. The JSON
is TF Serving's (g3doc/api_rest.md):

* GetModelMetadata: `GET /v1/models/<name>[/versions/<N>|/labels/<L>]/metadata`.
* Predict: `POST .../<name>...:predict` in the columnar format
  (`{"signature_name": ..., "inputs": {alias: value}}`); the answer's
  `"outputs"` is the bare value when one output is asked for, as TF Serving
  returns it. Strings that are not UTF-8 (serialized tf.Examples) go as
  `{"b64": ...}`; outputs come back as the signature's dtypes.
* Classify / Regress: `{"signature_name": ..., "examples": [...],
  "context": {...}}`; features become JSON lists, bytes that are not UTF-8
  `{"b64": ...}`.

Errors: TF Serving's `{"error": "..."}` with its HTTP status; the status is
mapped back to the gRPC code whose HTTP status it is (util/net_http's map),
so the client reports REST failures as it reports gRPC ones. Connection
failures are UNAVAILABLE, timeouts DEADLINE_EXCEEDED.

The REST API has no TLS in TF Serving, and answers carry no model_spec, so
REST results name no version.
"""

import base64
import http.client
import json
import socket
import threading
from typing import Any, Callable, Mapping, Optional
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

# HTTP status -> the gRPC code TF Serving maps to it (several codes share a
# status; the first is the one a client sees).
_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# A function that returns {output alias: tf.DType} of a signature.
OutputDtypes = Callable[[str], Mapping[str, tf.dtypes.DType]]


class RestCallError(grpc.RpcError):
  """A failed REST call, shaped like a grpc.RpcError (code(), details())."""

  def __init__(self, code: grpc.StatusCode, details: str):
    super().__init__(details)
    self._code = code
    self._details = details

  def code(self) -> grpc.StatusCode:
    return self._code

  def details(self) -> str:
    return self._details


def status_to_code(status: int) -> grpc.StatusCode:
  """The gRPC code of an HTTP status TF Serving answers with."""
  if status in _HTTP_TO_GRPC:
    return _HTTP_TO_GRPC[status]
  return (grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else
          grpc.StatusCode.UNKNOWN)


def _string_json(value: bytes) -> Any:
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError:
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_json(array: np.ndarray) -> Any:
  """A numpy array as TF Serving's JSON (nested lists, b64 for binary)."""
  if array.dtype == object or array.dtype.kind in ("S", "U"):
    flat = [_string_json(v if isinstance(v, bytes) else str(v).encode())
            for v in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape).tolist()
  if array.dtype.kind == "c":
    raise RestCallError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "complex tensors have no JSON form in TF Serving's REST API; use "
        "--protocol=grpc")
  return array.tolist()


def _tensor_json(tensor) -> Any:
  return array_json(tf.make_ndarray(tensor))


def _decode_string(value: Any) -> bytes:
  if isinstance(value, dict) and set(value) == {"b64"}:
    return base64.b64decode(value["b64"])
  if isinstance(value, str):
    return value.encode("utf-8")
  raise ValueError(f"expected a string or {{\"b64\": ...}}, got {value!r}")


def json_array(value: Any, dtype: tf.dtypes.DType) -> np.ndarray:
  """TF Serving's JSON value of an output as an array of `dtype`."""
  if dtype == tf.string:
    array = np.asarray(value, dtype=object)
    flat = [_decode_string(v) for v in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)
  return np.asarray(value, dtype=dtype.as_numpy_dtype)


def _feature_json(feature: feature_pb2.Feature) -> Any:
  kind = feature.WhichOneof("kind")
  if kind == "float_list":
    # Integral floats stay decimals ("2.0"), so TF Serving keeps float_list;
    # json.dumps writes NaN and Infinity, which TF Serving's parser accepts.
    values = [float(v) for v in feature.float_list.value]
  elif kind == "int64_list":
    values = [int(v) for v in feature.int64_list.value]
  elif kind == "bytes_list":
    values = [_string_json(v) for v in feature.bytes_list.value]
  else:
    values = []
  return values


def _example_json(example: example_pb2.Example) -> dict:
  return {name: _feature_json(feature)
          for name, feature in sorted(example.features.feature.items())}


def _examples_body(request) -> dict:
  body = {"signature_name": request.model_spec.signature_name}
  which = request.input.WhichOneof("kind")
  if which == "example_list":
    examples = request.input.example_list.examples
  elif which == "example_list_with_context":
    examples = request.input.example_list_with_context.examples
    body["context"] = _example_json(
        request.input.example_list_with_context.context)
  else:
    examples = []
  body["examples"] = [_example_json(e) for e in examples]
  return body


class RestStub:
  """PredictionService over TF Serving's REST API (see the module docstring).

  Thread-safe: each thread keeps its own HTTP connection (keep-alive).
  """

  def __init__(self, server: str, output_dtypes: OutputDtypes):
    """`server` is "host:port" of the REST API (--rest_api_port)."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
      raise ValueError(
          f"server {server!r} must be host:port of the REST API, e.g. "
          "localhost:8501")
    self._host = host.strip("[]") or "localhost"
    self._port = int(port)
    self._output_dtypes = output_dtypes
    self._local = threading.local()

  def close(self) -> None:
    connection = getattr(self._local, "connection", None)
    if connection is not None:
      connection.close()
      self._local.connection = None

  # --- HTTP -------------------------------------------------------------

  def _connection(self, timeout: float) -> http.client.HTTPConnection:
    connection = getattr(self._local, "connection", None)
    if connection is None:
      connection = http.client.HTTPConnection(self._host, self._port,
                                              timeout=timeout)
      self._local.connection = connection
    connection.timeout = timeout
    if connection.sock is not None:
      connection.sock.settimeout(timeout)
    return connection

  def _request(self, method: str, path: str, body: Optional[dict],
               timeout: float) -> dict:
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"} if data else {}
    for attempt in range(2):  # A kept-alive connection the server closed.
      connection = self._connection(timeout)
      try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read()
        break
      except (socket.timeout, TimeoutError) as e:
        self.close()
        raise RestCallError(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"Deadline Exceeded ({timeout:.1f}s)") from e
      except (http.client.RemoteDisconnected, BrokenPipeError,
              ConnectionResetError) as e:
        self.close()
        if attempt:
          raise RestCallError(grpc.StatusCode.UNAVAILABLE,
                              f"the REST server closed the connection: {e}"
                              ) from e
      except OSError as e:
        self.close()
        raise RestCallError(
            grpc.StatusCode.UNAVAILABLE,
            f"failed to connect to http://{self._host}:{self._port}: "
            f"{e.strerror or e}") from e
    try:
      doc = json.loads(text.decode("utf-8")) if text else {}
    except (UnicodeDecodeError, ValueError) as e:
      raise RestCallError(
          status_to_code(response.status) if response.status >= 400 else
          grpc.StatusCode.INTERNAL,
          f"HTTP {response.status}: the answer is not JSON: "
          f"{text[:200]!r}") from e
    if response.status >= 400 or (isinstance(doc, dict) and "error" in doc):
      message = doc.get("error") if isinstance(doc, dict) else None
      raise RestCallError(status_to_code(response.status),
                          str(message or f"HTTP {response.status}"))
    if not isinstance(doc, dict):
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          f"the answer is not a JSON object: {text[:200]!r}")
    return doc

  @staticmethod
  def _model_path(spec: model_pb2.ModelSpec) -> str:
    path = "/v1/models/" + urllib.parse.quote(spec.name, safe="")
    if spec.HasField("version"):
      path += f"/versions/{spec.version.value}"
    elif spec.version_label:
      path += "/labels/" + urllib.parse.quote(spec.version_label, safe="")
    return path

  # --- the PredictionService calls ----------------------------------------

  def GetModelMetadata(self, request, timeout: float):  # pylint: disable=invalid-name
    doc = self._request("GET", self._model_path(request.model_spec) +
                        "/metadata", None, timeout)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    try:
      json_format.ParseDict(doc.get("model_spec", {}), response.model_spec,
                            ignore_unknown_fields=True)
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      json_format.ParseDict(
          doc.get("metadata", {}).get("signature_def", {}), signature_map,
          ignore_unknown_fields=True)
    except (json_format.ParseError, AttributeError) as e:
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          f"the metadata answer does not parse: {e}") from e
    response.metadata["signature_def"].Pack(signature_map)
    return response

  def Predict(self, request: predict_pb2.PredictRequest, timeout: float):  # pylint: disable=invalid-name
    spec = request.model_spec
    body = {"signature_name": spec.signature_name,
            "inputs": {alias: _tensor_json(tensor)
                       for alias, tensor in sorted(request.inputs.items())}}
    # TF Serving's REST API has no output filter: every output comes back,
    # and the filter is applied here.
    doc = self._request("POST", self._model_path(spec) + ":predict", body,
                        timeout)
    dtypes = dict(self._output_dtypes(spec.signature_name))
    if "outputs" not in doc:
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          f"the predict answer has no \"outputs\": "
                          f"{sorted(doc)}")
    outputs = doc["outputs"]
    if len(dtypes) == 1 and not (isinstance(outputs, dict) and
                                 set(outputs) == set(dtypes)):
      outputs = {next(iter(dtypes)): outputs}
    if not isinstance(outputs, dict):
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          "the predict answer's \"outputs\" is not an object "
                          f"of the outputs {sorted(dtypes)}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = spec.name
    response.model_spec.signature_name = spec.signature_name
    wanted = set(request.output_filter or outputs)
    for alias, value in outputs.items():
      if alias not in wanted:
        continue
      dtype = dtypes.get(alias)
      if dtype is None:
        raise RestCallError(grpc.StatusCode.INTERNAL,
                            f"the predict answer has output {alias!r}, which "
                            f"the signature lacks ({sorted(dtypes)})")
      try:
        array = json_array(value, dtype)
      except (TypeError, ValueError) as e:
        raise RestCallError(
            grpc.StatusCode.INTERNAL,
            f"output {alias!r} is not a {dtype.name} tensor: {e}") from e
      response.outputs[alias].CopyFrom(tf.make_tensor_proto(array,
                                                            dtype=dtype))
    return response

  def Classify(self, request, timeout: float):  # pylint: disable=invalid-name
    doc = self._request("POST",
                        self._model_path(request.model_spec) + ":classify",
                        _examples_body(request), timeout)
    response = classification_pb2.ClassificationResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.ClearField("version")
    try:
      for row in doc.get("results", []):
        classifications = response.result.classifications.add()
        for label, score in row:
          klass = classifications.classes.add()
          klass.label = str(label)
          klass.score = float(score)
    except (TypeError, ValueError) as e:
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          f"the classify answer does not parse: {e}") from e
    return response

  def Regress(self, request, timeout: float):  # pylint: disable=invalid-name
    doc = self._request("POST",
                        self._model_path(request.model_spec) + ":regress",
                        _examples_body(request), timeout)
    response = regression_pb2.RegressionResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.ClearField("version")
    try:
      for value in doc.get("results", []):
        response.result.regressions.add().value = float(value)
    except (TypeError, ValueError) as e:
      raise RestCallError(grpc.StatusCode.INTERNAL,
                          f"the regress answer does not parse: {e}") from e
    return response
