"""TensorProto <-> numpy with the semantics of TensorFlow's C++ `Tensor`.

TF Serving parses request tensors with `Tensor::FromProto` and writes Predict
outputs with `Tensor::AsProtoField` (or `AsProtoTensorContent` under
--enable_serialization_as_tensor_content). The Python helpers differ:
`tf.make_ndarray` refuses a typed value list shorter than the shape (C++ fills
the rest with the last value, and zeros for an empty list), and
`tf.make_tensor_proto` writes numbers into `tensor_content` where clients of
TF Serving read `float_val`. This module does what the C++ runtime does.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

_BFLOAT16 = tf.bfloat16.as_numpy_dtype

# dtype -> (numpy dtype, typed value field of TensorProto).
_TYPED_FIELDS = {
    types_pb2.DT_FLOAT: (np.float32, 'float_val'),
    types_pb2.DT_DOUBLE: (np.float64, 'double_val'),
    types_pb2.DT_INT32: (np.int32, 'int_val'),
    types_pb2.DT_UINT8: (np.uint8, 'int_val'),
    types_pb2.DT_INT16: (np.int16, 'int_val'),
    types_pb2.DT_INT8: (np.int8, 'int_val'),
    types_pb2.DT_UINT16: (np.uint16, 'int_val'),
    types_pb2.DT_INT64: (np.int64, 'int64_val'),
    types_pb2.DT_UINT32: (np.uint32, 'uint32_val'),
    types_pb2.DT_UINT64: (np.uint64, 'uint64_val'),
    types_pb2.DT_BOOL: (np.bool_, 'bool_val'),
    types_pb2.DT_STRING: (np.object_, 'string_val'),
    types_pb2.DT_HALF: (np.float16, 'half_val'),
    types_pb2.DT_BFLOAT16: (_BFLOAT16, 'half_val'),
    types_pb2.DT_COMPLEX64: (np.complex64, 'scomplex_val'),
    types_pb2.DT_COMPLEX128: (np.complex128, 'dcomplex_val'),
}
_HALF_TYPES = (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)
_COMPLEX_TYPES = (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128)
# DataTypeString() of the C++ runtime, as it appears in its messages.
_CPP_NAMES = {types_pb2.DT_FLOAT: 'float', types_pb2.DT_DOUBLE: 'double',
              types_pb2.DT_HALF: 'half'}
# Bound on the elements of one parsed tensor (a shape claiming more is
# refused before any allocation).
MAX_ELEMENTS = 1 << 31


class TensorParseError(ValueError):
  """The TensorProto is not a valid tensor (C++ FromProto fails)."""


def _enum_name(dtype: int) -> str:
  try:
    return types_pb2.DataType.Name(dtype)
  except ValueError:
    return str(dtype)


def cpp_dtype_name(dtype: int) -> str:
  """The dtype as TensorFlow's C++ messages spell it (float, int32, ...)."""
  if dtype in _CPP_NAMES:
    return _CPP_NAMES[dtype]
  try:
    return tf.dtypes.as_dtype(dtype).name
  except TypeError:
    return f'unknown dtype {dtype}'


def _shape(proto: tensor_pb2.TensorProto):
  shape = proto.tensor_shape
  if shape.unknown_rank:
    raise TensorParseError('the shape has unknown rank')
  dims = []
  count = 1
  for dim in shape.dim:
    if dim.size < 0:
      raise TensorParseError(f'dimension {dim.size} is negative')
    dims.append(dim.size)
    count *= dim.size
    if count > MAX_ELEMENTS:
      raise TensorParseError(f'shape {dims}... holds more than '
                             f'{MAX_ELEMENTS} elements')
  return dims, count


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """Parses a TensorProto like C++ `Tensor::FromProto`.

  Args:
    proto: The request tensor.

  Returns:
    The value; strings as an object array of bytes.

  Raises:
    TensorParseError: invalid dtype or shape, tensor_content of the wrong
      size, or more typed values than elements.
  """
  entry = _TYPED_FIELDS.get(proto.dtype)
  if entry is None:
    raise TensorParseError(
        f'dtype {_enum_name(proto.dtype)} cannot be sent in a request')
  np_dtype, field = entry
  dims, count = _shape(proto)
  if proto.tensor_content:
    if proto.dtype == types_pb2.DT_STRING:
      try:
        return tf.make_ndarray(proto)
      except Exception as e:  # pylint: disable=broad-except
        raise TensorParseError(f'bad string tensor_content: {e}') from e
    itemsize = np.dtype(np_dtype).itemsize
    if len(proto.tensor_content) != count * itemsize:
      raise TensorParseError(
          f'tensor_content holds {len(proto.tensor_content)} bytes; shape '
          f'{dims} of {cpp_dtype_name(proto.dtype)} needs {count * itemsize}')
    return np.frombuffer(proto.tensor_content,
                         dtype=np_dtype).reshape(dims).copy()
  values = getattr(proto, field)
  if proto.dtype in _HALF_TYPES:
    flat = np.array(values, dtype=np.uint16).view(np_dtype)
  elif proto.dtype in _COMPLEX_TYPES:
    parts = np.array(values, dtype=np.float64)
    if len(parts) % 2:
      raise TensorParseError('complex values come in (real, imag) pairs')
    flat = (parts[0::2] + 1j * parts[1::2]).astype(np_dtype)
  elif proto.dtype == types_pb2.DT_STRING:
    flat = np.empty(len(values), dtype=object)
    flat[:] = list(values)
  else:
    flat = np.array(values, dtype=np_dtype)
  given = len(flat)
  if given > count:
    raise TensorParseError(
        f'{given} values for shape {dims} ({count} elements)')
  if given == count:
    return flat.reshape(dims)
  if given == 0:
    if proto.dtype == types_pb2.DT_STRING:
      out = np.empty(count, dtype=object)
      out[:] = b''
      return out.reshape(dims)
    return np.zeros(dims, dtype=np_dtype)
  out = np.empty(count, dtype=flat.dtype)
  out[:given] = flat
  out[given:] = flat[-1]
  return out.reshape(dims)


def _set_shape(shape: tensor_shape_pb2.TensorShapeProto, dims) -> None:
  for size in dims:
    shape.dim.add().size = int(size)


def _proto_dtype(value: np.ndarray) -> int:
  if value.dtype == np.object_:
    return types_pb2.DT_STRING
  if value.dtype == _BFLOAT16:
    return types_pb2.DT_BFLOAT16
  return tf.dtypes.as_dtype(value.dtype).as_datatype_enum


def from_ndarray(value, as_tensor_content: bool = False
                ) -> tensor_pb2.TensorProto:
  """Serializes an output like `Tensor::AsProtoField` / AsProtoTensorContent.

  Args:
    value: A fetched value (numpy array or scalar; bytes for strings).
    as_tensor_content: Numbers go to tensor_content instead of *_val.

  Returns:
    The TensorProto.
  """
  value = np.asarray(value)
  proto = tensor_pb2.TensorProto()
  proto.dtype = _proto_dtype(value)
  _set_shape(proto.tensor_shape, value.shape)
  flat = value.reshape([-1])
  if proto.dtype == types_pb2.DT_STRING:
    proto.string_val.extend(
        v if isinstance(v, bytes) else str(v).encode('utf-8') for v in flat)
    return proto
  if as_tensor_content:
    proto.tensor_content = np.ascontiguousarray(flat).tobytes()
    return proto
  field = _TYPED_FIELDS[proto.dtype][1]
  if proto.dtype in _HALF_TYPES:
    data = flat.view(np.uint16).astype(np.int32).tolist()
  elif proto.dtype in _COMPLEX_TYPES:
    pairs = np.empty(2 * len(flat), dtype=np.float64)
    pairs[0::2] = flat.real
    pairs[1::2] = flat.imag
    data = pairs.astype(np.float32 if proto.dtype == types_pb2.DT_COMPLEX64
                        else np.float64).tolist()
  else:
    data = flat.tolist()
  getattr(proto, field).extend(data)
  return proto
