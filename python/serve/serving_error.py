"""The typed error every python/serve layer raises for a failed request.

A `ServingError` carries the gRPC status code TensorFlow Serving would return
for the same situation and a message that names what was sent and what was
expected. The gRPC servicers turn it into the RPC status unchanged.
"""

import grpc


class ServingError(Exception):
  """A request or load failure with the gRPC status code TF Serving uses.

  Attributes:
    code: The `grpc.StatusCode` to return to the client.
    message: Human readable detail, mirroring TF Serving's wording.
  """

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message

  def __str__(self) -> str:
    return f'{self.code.name}: {self.message}'


def invalid_argument(message: str) -> ServingError:
  """Returns an INVALID_ARGUMENT error."""
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> ServingError:
  """Returns a FAILED_PRECONDITION error."""
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def not_found(message: str) -> ServingError:
  """Returns a NOT_FOUND error."""
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def internal(message: str) -> ServingError:
  """Returns an INTERNAL error."""
  return ServingError(grpc.StatusCode.INTERNAL, message)


def unimplemented(message: str) -> ServingError:
  """Returns an UNIMPLEMENTED error."""
  return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def status_code_from_tf(error_code: int) -> grpc.StatusCode:
  """Maps a TensorFlow `error_codes_pb2.Code` value to a `grpc.StatusCode`.

  TensorFlow and gRPC share the canonical status code numbering.

  Args:
    error_code: The integer code of a `tf.errors.OpError`.

  Returns:
    The matching gRPC status code, UNKNOWN for unexpected values.
  """
  for code in grpc.StatusCode:
    if code.value[0] == error_code:
      return code
  return grpc.StatusCode.UNKNOWN
