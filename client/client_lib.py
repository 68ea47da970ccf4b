"""A signature-aware gRPC client for TensorFlow Serving's PredictionService.

`ServingClient` asks the server which signatures a model has
(`GetModelMetadata` with the `signature_def` field), builds sample inputs from
each signature's dtypes and shapes, and sends `Predict`, `Classify` or
`Regress` requests with a deadline on every call:

  from client import client_lib

  with client_lib.ServingClient("localhost:8500", "merged") as c:
    for name, sig in c.metadata().signatures.items():
      result = c.run(name, c.sample_inputs(name))
      print(name, result.model_version, result.outputs)

A server that is not there fails the first call at once (ConnectError, one
attempt) rather than after the deadline; `wait_for_server_s` makes the first
call retry with backoff while the server is UNAVAILABLE (e.g. still starting),
for that long and at most until the call's deadline. Every later error is
returned as is.
"""

import difflib
import threading
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from client import rest_transport
from client import serving_types
from client import tensors

# TF2 SavedModels hold a signature "__saved_model_init_op" (the init op, no
# tensors); names with this prefix are TensorFlow's own, not callable.
INTERNAL_SIGNATURE_PREFIX = "__"
# Transports: gRPC, or TF Serving's HTTP/REST API (rest_transport).
PROTOCOLS = ("grpc", "rest")

_INITIAL_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0

# The shared errors and types (serving_types), named here as users know them.
ClientError = serving_types.ClientError
RpcError = serving_types.RpcError
ConnectError = serving_types.ConnectError
SignatureError = serving_types.SignatureError
InputError = serving_types.InputError
TensorSpec = serving_types.TensorSpec
Signature = serving_types.Signature
ModelMetadata = serving_types.ModelMetadata
Result = serving_types.Result
ArrayLike = serving_types.ArrayLike
PREDICT = serving_types.PREDICT
CLASSIFY = serving_types.CLASSIFY
REGRESS = serving_types.REGRESS
METHOD_SHORT_NAMES = serving_types.METHOD_SHORT_NAMES
EXAMPLES_INPUT_ALIAS = serving_types.EXAMPLES_INPUT_ALIAS
# Array and tf.Example conversion (tensors), named here as users know them.
examples_from_features = tensors.examples_from_features
sample_array = tensors.sample_array


def _spec_from_tensor_info(info) -> TensorSpec:
  if info.tensor_shape.unknown_rank:
    shape = None
  else:
    shape = tuple(int(d.size) for d in info.tensor_shape.dim)
  return TensorSpec(name=info.name, dtype=tf.dtypes.as_dtype(info.dtype),
                    shape=shape)


def signature_from_proto(name: str, signature_def) -> Signature:
  """Converts a `SignatureDef` proto into a `Signature`."""
  return Signature(
      name=name,
      method_name=signature_def.method_name,
      inputs={k: _spec_from_tensor_info(v)
              for k, v in sorted(signature_def.inputs.items())},
      outputs={k: _spec_from_tensor_info(v)
               for k, v in sorted(signature_def.outputs.items())})


def closest_names(name: str, choices: Iterable[str]) -> List[str]:
  """Returns up to three of `choices` that look like `name`."""
  return difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)


def _unknown_name_message(kind: str, name: str, choices: Iterable[str],
                          where: str) -> str:
  choices = sorted(choices)
  listed = ", ".join(choices) or "(none)"
  message = f"{where} has no {kind} {name!r}; it has: {listed}."
  close = closest_names(name, choices)
  if close:
    message += f" Did you mean {close[0]!r}?"
  return message




class ServingClient:
  """A client for one model on a TensorFlow Serving compatible server.

  Thread-safe: calls may be issued from several threads over one channel.
  Use it as a context manager (or call `close()`) to release the channel.
  """

  def __init__(self,
               server: str,
               model_name: str,
               *,
               model_version: Optional[int] = None,
               version_label: Optional[str] = None,
               timeout_s: float = 10.0,
               wait_for_server_s: float = 0.0,
               tls: bool = False,
               root_cert: Optional[bytes] = None,
               client_cert: Optional[bytes] = None,
               client_key: Optional[bytes] = None,
               max_message_mb: int = 64,
               channel: Optional[grpc.Channel] = None,
               protocol: str = "grpc"):
    """Opens a channel to `server` (no call is made yet).

    Args:
      server: "host:port" (of the REST API with protocol="rest").
      model_name: the model to query.
      model_version: pin this version (exclusive with `version_label`).
      version_label: pin the version with this label (e.g. "stable").
      timeout_s: the deadline of every call.
      wait_for_server_s: how long the first call retries while the server
        is UNAVAILABLE (0: one attempt, so an absent server fails at once).
      tls: use TLS; the certificates are PEM bytes.
      root_cert: CA certificates to trust (default: the system's roots).
      client_cert: the client's certificate chain, for mutual TLS.
      client_key: the client's private key, for mutual TLS.
      max_message_mb: the largest request/response message, in MiB.
      channel: an existing channel to use instead (the other connection
        arguments are ignored; the client does not close it).
      protocol: "grpc", or "rest" for TF Serving's HTTP/REST API
        (`rest_transport`: same calls and results; no TLS, and results name
        no version, since REST answers carry none).

    Raises:
      ValueError: for inconsistent arguments.
    """
    if model_version is not None and version_label:
      raise ValueError(
          f"pin a version with model_version ({model_version}) or "
          f"version_label ({version_label!r}), not both")
    if not model_name:
      raise ValueError("model_name must not be empty")
    if timeout_s <= 0:
      raise ValueError(f"timeout_s must be > 0; got {timeout_s}")
    if wait_for_server_s < 0:
      raise ValueError(
          f"wait_for_server_s must be >= 0; got {wait_for_server_s}")
    if bool(client_cert) != bool(client_key):
      raise ValueError("client_cert and client_key go together (mutual TLS); "
                       "give both or neither")
    if not tls and (root_cert or client_cert):
      raise ValueError("certificates were given but tls is off; enable tls")
    if protocol not in PROTOCOLS:
      raise ValueError(f"protocol must be one of {PROTOCOLS}; got "
                       f"{protocol!r}")
    if protocol == "rest" and (tls or channel is not None):
      raise ValueError("TF Serving's REST API has no TLS and no gRPC "
                       "channel; use protocol='grpc' for tls or channel")
    self.protocol = protocol
    self.server = server
    self.model_name = model_name
    self.model_version = model_version
    self.version_label = version_label
    self.timeout_s = timeout_s
    self.wait_for_server_s = wait_for_server_s
    self._connected = threading.Event()
    self._metadata: Optional[ModelMetadata] = None
    if protocol == "rest":
      self._owns_channel = False
      self._channel = None
      self._stub = rest_transport.RestStub(
          server, lambda name: {alias: spec.dtype for alias, spec in
                                self.signature(name).outputs.items()})
      return
    self._owns_channel = channel is None
    if channel is None:
      limit = int(max_message_mb) * 1024 * 1024
      options = [
          ("grpc.max_send_message_length", limit),
          ("grpc.max_receive_message_length", limit),
          ("grpc.initial_reconnect_backoff_ms", 100),
          ("grpc.min_reconnect_backoff_ms", 100),
          ("grpc.max_reconnect_backoff_ms", 1000),
      ]
      if tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_cert, private_key=client_key,
            certificate_chain=client_cert)
        channel = grpc.secure_channel(server, credentials, options=options)
      else:
        channel = grpc.insecure_channel(server, options=options)
    self._channel = channel
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

  def __enter__(self) -> "ServingClient":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    """Closes the channel (if the client opened it)."""
    if self.protocol == "rest":
      self._stub.close()
    elif self._owns_channel:
      self._channel.close()

  def _model_spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=self.model_name,
                               signature_name=signature_name)
    if self.model_version is not None:
      spec.version.value = self.model_version
    elif self.version_label:
      spec.version_label = self.version_label
    return spec

  def _call(self, method: str, request, retry_unavailable: bool = False):
    """Calls `method` with the deadline; maps gRPC errors to RpcError."""
    rpc = getattr(self._stub, method)
    start = time.monotonic()
    deadline = start + self.timeout_s
    retry_until = min(start + self.wait_for_server_s, deadline)
    backoff = _INITIAL_BACKOFF_S
    attempts = 0
    while True:
      attempts += 1
      remaining = max(deadline - time.monotonic(), 0.001)
      try:
        response = rpc(request, timeout=remaining)
        self._connected.set()
        return response
      except grpc.RpcError as e:
        code, details = e.code(), e.details()
      if code not in (grpc.StatusCode.UNAVAILABLE,
                      grpc.StatusCode.DEADLINE_EXCEEDED):
        self._connected.set()
      connecting = retry_unavailable and not self._connected.is_set()
      if connecting and code == grpc.StatusCode.UNAVAILABLE:
        if time.monotonic() + backoff < retry_until:
          time.sleep(backoff)
          backoff = min(backoff * 2, _MAX_BACKOFF_S)
          continue
      if connecting and code in (grpc.StatusCode.UNAVAILABLE,
                                 grpc.StatusCode.DEADLINE_EXCEEDED):
        raise ConnectError(self.server, time.monotonic() - start, attempts,
                           code, details)
      raise RpcError(method, code, details)

  def metadata(self, refresh: bool = False) -> ModelMetadata:
    """Asks the server for the model's signatures (GetModelMetadata).

    The first call retries with backoff while the server is UNAVAILABLE, for
    `wait_for_server_s`. The answer is cached; `refresh=True` asks again.

    Args:
      refresh: ignore the cached answer.

    Returns:
      The model's name, version and signatures.

    Raises:
      ConnectError: if the server cannot be reached (within
        `wait_for_server_s`, or the deadline).
      RpcError: if the server answers with an error (e.g. NOT_FOUND).
    """
    if self._metadata is not None and not refresh:
      return self._metadata
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=self._model_spec(), metadata_field=["signature_def"])
    response = self._call("GetModelMetadata", request, retry_unavailable=True)
    if "signature_def" not in response.metadata:
      raise RpcError("GetModelMetadata", grpc.StatusCode.INTERNAL,
                     "the response has no 'signature_def' metadata; got "
                     f"fields {sorted(response.metadata)}")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signature_map):
      raise RpcError("GetModelMetadata", grpc.StatusCode.INTERNAL,
                     "'signature_def' metadata is not a SignatureDefMap")
    signatures = {
        name: signature_from_proto(name, sig)
        for name, sig in sorted(signature_map.signature_def.items())
        if not name.startswith(INTERNAL_SIGNATURE_PREFIX)}
    version = (response.model_spec.version.value
               if response.model_spec.HasField("version") else None)
    self._metadata = ModelMetadata(
        model_name=response.model_spec.name or self.model_name,
        version=version, signatures=signatures)
    return self._metadata

  def signature(self, signature_name: str) -> Signature:
    """Returns one signature of the model.

    Raises:
      SignatureError: if the model has no such signature (lists the ones it
        has and the closest name).
      ConnectError, RpcError: as `metadata()`.
    """
    signatures = self.metadata().signatures
    if signature_name not in signatures:
      raise SignatureError(_unknown_name_message(
          "signature", signature_name, signatures,
          f"model {self.model_name!r} at {self.server}"))
    return signatures[signature_name]

  def sample_inputs(self, signature_name: str, batch_size: int = 1,
                    seed: int = 0) -> Dict[str, np.ndarray]:
    """Makes inputs for a signature from its dtypes and shapes.

    One array per input alias, unknown dimensions set to `batch_size`. For
    signatures that take tf.Examples (`Signature.takes_examples`) the
    features are not in the signature, so this returns {} (empty
    tf.Examples; `client.example_features` learns the features).

    Args:
      signature_name: the signature.
      batch_size: the size of unknown dimensions.
      seed: the random seed.

    Returns:
      input alias (or feature name) -> array.

    Raises:
      InputError: if an input has unknown rank (give it explicitly).
      SignatureError, ConnectError, RpcError: as `signature()`.
    """
    signature = self.signature(signature_name)
    if signature.takes_examples:
      return {}
    rng = np.random.default_rng(seed)
    inputs = {}
    for alias, spec in signature.inputs.items():
      if spec.shape is None:
        raise InputError(
            f"input {alias!r} ({spec.name}) of signature {signature_name!r} "
            f"has unknown rank, so the client cannot make a sample; pass it "
            f"with --input={signature_name}:{alias}=FILE.npy")
      inputs[alias] = tensors.sample_array(spec, batch_size, rng)
    return inputs

  def predict(self, signature_name: str, inputs: Mapping[str, ArrayLike],
              output_filter: Sequence[str] = ()) -> Result:
    """Sends a PredictRequest.

    Args:
      signature_name: the signature.
      inputs: input alias -> array; converted to the signature's dtypes.
      output_filter: output aliases to return (default: all).

    Returns:
      The outputs and the version that answered.

    Raises:
      InputError: for unknown or missing aliases, or unconvertible values.
      SignatureError, ConnectError, RpcError: as `signature()`.
    """
    signature = self.signature(signature_name)
    unknown = sorted(set(inputs) - set(signature.inputs))
    missing = sorted(set(signature.inputs) - set(inputs))
    if unknown or missing:
      raise InputError(
          f"signature {signature_name!r} takes inputs "
          f"{sorted(signature.inputs)}. Sent extra: {unknown}. Missing but "
          f"required: {missing}.")
    request = predict_pb2.PredictRequest(
        model_spec=self._model_spec(signature_name),
        output_filter=list(output_filter))
    for alias, value in inputs.items():
      array = tensors.coerce_input(signature, alias, signature.inputs[alias],
                                   value)
      request.inputs[alias].CopyFrom(
          tf.make_tensor_proto(array, dtype=signature.inputs[alias].dtype))
    start = time.perf_counter()
    response = self._call("Predict", request)
    latency = time.perf_counter() - start
    outputs = {alias: tf.make_ndarray(tensor)
               for alias, tensor in sorted(response.outputs.items())}
    return Result(signature_name, "predict", outputs,
                  _version_of(response), latency)

  def _examples_input(self, signature: Signature,
                      inputs: Union[Mapping[str, ArrayLike],
                                    Sequence[example_pb2.Example]],
                      batch_size: int):
    if isinstance(inputs, Mapping):
      serialized = inputs.get(EXAMPLES_INPUT_ALIAS)
      if (len(inputs) == 1 and serialized is not None
          and np.asarray(serialized, dtype=object).dtype == object
          and all(isinstance(v, bytes)
                  for v in np.asarray(serialized, dtype=object).reshape(-1))):
        examples = []
        rows = np.asarray(serialized, dtype=object).reshape(-1)
        for i, data in enumerate(rows):
          example = example_pb2.Example()
          try:
            example.ParseFromString(data)
          except Exception as e:  # protobuf's DecodeError
            raise InputError(
                f"input {EXAMPLES_INPUT_ALIAS!r} of signature "
                f"{signature.name!r}: row {i} is not a serialized tf.Example "
                f"({e})") from e
          examples.append(example)
      else:
        examples = tensors.examples_from_features(inputs, batch_size)
    else:
      examples = list(inputs)
    return input_pb2.Input(
        example_list=input_pb2.ExampleList(examples=examples))

  def classify(self, signature_name: str,
               inputs: Union[Mapping[str, ArrayLike],
                             Sequence[example_pb2.Example]],
               batch_size: int = 1) -> Result:
    """Sends a ClassificationRequest.

    Args:
      signature_name: a classify signature.
      inputs: tf.Examples, or feature name -> array (one Example per row),
        or {"inputs": serialized Examples}. {} sends `batch_size` empty
        Examples.
      batch_size: the number of empty Examples when `inputs` is {}.

    Returns:
      outputs "classes" (bytes [batch, k]) and "scores" (float32 [batch, k]).

    Raises:
      InputError, SignatureError, ConnectError, RpcError.
    """
    signature = self.signature(signature_name)
    request = classification_pb2.ClassificationRequest(
        model_spec=self._model_spec(signature_name),
        input=self._examples_input(signature, inputs, batch_size))
    start = time.perf_counter()
    response = self._call("Classify", request)
    latency = time.perf_counter() - start
    rows = response.result.classifications
    width = max((len(r.classes) for r in rows), default=0)
    classes = np.full((len(rows), width), b"", dtype=object)
    scores = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
      for j, klass in enumerate(row.classes):
        classes[i, j] = klass.label.encode("utf-8") if isinstance(
            klass.label, str) else klass.label
        scores[i, j] = klass.score
    return Result(signature_name, "classify",
                  {"classes": classes, "scores": scores},
                  _version_of(response), latency)

  def regress(self, signature_name: str,
              inputs: Union[Mapping[str, ArrayLike],
                            Sequence[example_pb2.Example]],
              batch_size: int = 1) -> Result:
    """Sends a RegressionRequest.

    Args:
      signature_name: a regress signature.
      inputs: as for `classify()`.
      batch_size: the number of empty Examples when `inputs` is {}.

    Returns:
      output "outputs" (float32 [batch]).

    Raises:
      InputError, SignatureError, ConnectError, RpcError.
    """
    signature = self.signature(signature_name)
    request = regression_pb2.RegressionRequest(
        model_spec=self._model_spec(signature_name),
        input=self._examples_input(signature, inputs, batch_size))
    start = time.perf_counter()
    response = self._call("Regress", request)
    latency = time.perf_counter() - start
    values = np.array([r.value for r in response.result.regressions],
                      dtype=np.float32)
    return Result(signature_name, "regress", {"outputs": values},
                  _version_of(response), latency)

  def run(self, signature_name: str,
          inputs: Mapping[str, ArrayLike],
          batch_size: int = 1) -> Result:
    """Calls the right RPC for the signature's method.

    Predict signatures get `predict(inputs)`; classify and regress ones get
    `classify`/`regress` with tf.Examples built from `inputs` (features),
    unless their `inputs` is not a string tensor: then `predict(inputs)`
    (see `Signature.takes_examples`).

    Raises:
      InputError: for a method the client cannot call.
      SignatureError, ConnectError, RpcError: as the calls.
    """
    signature = self.signature(signature_name)
    if signature.method_name in METHOD_SHORT_NAMES:
      if signature.rpc == "Classify":
        return self.classify(signature_name, inputs, batch_size)
      if signature.rpc == "Regress":
        return self.regress(signature_name, inputs, batch_size)
      return self.predict(signature_name, inputs)
    raise InputError(
        f"signature {signature_name!r} has method {signature.method_name!r}; "
        f"the client calls {', '.join(sorted(METHOD_SHORT_NAMES.values()))}")


def _version_of(response) -> Optional[int]:
  if response.model_spec.HasField("version"):
    return int(response.model_spec.version.value)
  return None
