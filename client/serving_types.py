"""The errors and types that client_lib and tensors share.

They live apart from `client_lib` (the RPC) so that `tensors` (arrays and
tf.Examples) can check inputs against a `Signature` and raise `InputError`
without importing the client that calls it. Users keep naming them through
`client_lib` (`client_lib.InputError`, `client_lib.Signature`, ...), which
re-exports every one of them.
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
import tensorflow as tf

# TensorFlow's own method-name constants (signature_constants.h in C++).
PREDICT = tf.saved_model.PREDICT_METHOD_NAME
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS = tf.saved_model.REGRESS_METHOD_NAME
METHOD_SHORT_NAMES = {
    PREDICT: "predict", CLASSIFY: "classify", REGRESS: "regress"}

# The input alias of classify and regress signatures (serialized tf.Examples).
EXAMPLES_INPUT_ALIAS = "inputs"

ArrayLike = Union[np.ndarray, Sequence[Any]]


class ClientError(Exception):
  """Base class of every error raised by the client (client_lib, tensors)."""


class RpcError(ClientError):
  """The server answered a call with a non-OK status.

  Attributes:
    method: the RPC, e.g. "Predict".
    code: the `grpc.StatusCode`.
    details: the server's message.
  """

  def __init__(self, method: str, code: grpc.StatusCode, details: str):
    self.method = method
    self.code = code
    self.details = details or ""
    super().__init__(f"{method} failed: {code.name}: {self.details}")


class ConnectError(RpcError):
  """The server could not be reached before the deadline."""

  def __init__(self, server: str, waited_s: float, attempts: int,
               code: grpc.StatusCode, details: str):
    self.server = server
    self.waited_s = waited_s
    self.attempts = attempts
    super().__init__("connect", code, details)
    tried = (f"{attempts} attempts in {waited_s:.1f} s" if attempts > 1
             else "1 attempt")
    self.args = (
        f"could not reach the server at {server} ({tried}; last error "
        f"{code.name}: {' '.join(details.split())}). "
        "Check that the server is running, that --server is host:port and "
        "that --tls matches the server (with TLS: --root_cert names the CA "
        "of the server's certificate, and --client_cert/--client_key are "
        "given when the server verifies clients); for a server that is still "
        "starting, pass --wait_for_server=SECONDS.",)


class SignatureError(ClientError):
  """A signature name that the model does not have."""


class InputError(ClientError):
  """Inputs that do not fit a signature (alias, dtype, rank, batch)."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One input or output of a signature, as the server describes it.

  Attributes:
    name: the tensor name inside the SavedModel graph.
    dtype: the TensorFlow dtype (a `tf.dtypes.DType`).
    shape: dimension sizes, -1 for unknown; None when the rank is unknown.
  """
  name: str
  dtype: tf.dtypes.DType
  shape: Optional[Tuple[int, ...]]

  def describe(self) -> str:
    """Returns e.g. "float32[-1,640]" or "string[?]" for unknown rank."""
    if self.shape is None:
      dims = "?"
    else:
      dims = ",".join(str(d) for d in self.shape)
    return f"{self.dtype.name}[{dims}]"


@dataclasses.dataclass(frozen=True)
class Signature:
  """One signature of the served model.

  Attributes:
    name: the signature key, e.g. "hyaudio_1".
    method_name: the full method name, e.g. "tensorflow/serving/predict".
    inputs: input alias -> TensorSpec.
    outputs: output alias -> TensorSpec.
  """
  name: str
  method_name: str
  inputs: Mapping[str, TensorSpec]
  outputs: Mapping[str, TensorSpec]

  @property
  def method(self) -> str:
    """The short method name: predict, classify, regress (or the full one)."""
    return METHOD_SHORT_NAMES.get(self.method_name, self.method_name)

  @property
  def takes_examples(self) -> bool:
    """True if Classify/Regress with tf.Examples is how to call it.

    That is a classify or regress signature whose `inputs` is a string
    tensor (serialized tf.Examples). A classify or regress signature whose
    `inputs` is another tensor (TF Serving's `regress_x2_to_y3` takes a
    float) cannot parse Examples; it is called with Predict, as TF Serving
    allows for any signature.
    """
    if self.method_name not in (CLASSIFY, REGRESS):
      return False
    spec = self.inputs.get(EXAMPLES_INPUT_ALIAS)
    return spec is None or spec.dtype == tf.string

  @property
  def rpc(self) -> str:
    """The RPC the client sends: Classify, Regress or Predict."""
    if self.takes_examples:
      return "Classify" if self.method_name == CLASSIFY else "Regress"
    return "Predict"


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  """What `GetModelMetadata` says about a model.

  Attributes:
    model_name: the model name the server answered for.
    version: the version that answered (None if the server did not say).
    signatures: signature name -> Signature, sorted by name.
  """
  model_name: str
  version: Optional[int]
  signatures: Mapping[str, Signature]


@dataclasses.dataclass(frozen=True)
class Result:
  """The answer to one Predict, Classify or Regress call.

  Attributes:
    signature_name: the signature that was called.
    method: predict, classify or regress.
    outputs: output alias -> array. Classify gives "classes" (bytes,
      [batch, k]) and "scores" (float32, [batch, k]); regress gives
      "outputs" (float32, [batch]).
    model_version: the version that answered (None if not reported).
    latency_s: wall time of the call in seconds.
  """
  signature_name: str
  method: str
  outputs: Mapping[str, np.ndarray]
  model_version: Optional[int]
  latency_s: float
