"""Arrays and tf.Examples for a signature's inputs.

`coerce_input` converts a caller's value to the dtype of a signature's input,
refusing lossy conversions; `sample_array` makes a sample value from a
tensor's dtype and shape; `examples_from_features` turns feature arrays into
one tf.Example per row. They are apart from `client_lib` so that the
conversions are tested (and read) without a server or a channel.
"""

from typing import List, Mapping, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from client import serving_types

ArrayLike = serving_types.ArrayLike
InputError = serving_types.InputError


def examples_from_features(
    features: Mapping[str, ArrayLike],
    batch_size: int = 1) -> List[example_pb2.Example]:
  """Builds one tf.Example per row of the feature arrays.

  Args:
    features: feature name -> array whose first dimension is the batch; each
      row is flattened into the feature's list. Floats become `float_list`,
      integers and booleans `int64_list`, bytes and str `bytes_list`.
    batch_size: how many (empty) Examples to build when `features` is empty.

  Returns:
    The Examples, one per row.

  Raises:
    InputError: if the arrays disagree on the batch size, are scalars, or
      have a dtype that a tf.Example cannot hold.
  """
  if not features:
    return [example_pb2.Example() for _ in range(batch_size)]
  arrays = {}
  for name, value in features.items():
    array = np.asarray(value)
    if array.ndim == 0:
      raise InputError(
          f"feature {name!r} is a scalar; give it a batch dimension "
          f"(shape [batch] or [batch, ...]), e.g. [{array.item()!r}]")
    arrays[name] = array
  batches = {name: a.shape[0] for name, a in arrays.items()}
  if len(set(batches.values())) != 1:
    raise InputError(
        "features disagree on the batch size (first dimension): "
        + ", ".join(f"{n}={b}" for n, b in sorted(batches.items()))
        + ". Give every feature one row per example (with several classify "
        "or regress signatures, scope each --input as SIGNATURE:NAME=FILE).")
  batch = next(iter(batches.values()))
  examples = [example_pb2.Example() for _ in range(batch)]
  for name, array in sorted(arrays.items()):
    kind = array.dtype.kind
    if kind not in "fiubSUO":
      raise InputError(
          f"feature {name!r} has dtype {array.dtype}, which a tf.Example "
          "cannot hold; use floats, integers, booleans, bytes or strings")
    for row, example in zip(array.reshape(batch, -1), examples):
      feature = example.features.feature[name]
      if kind == "f":
        feature.float_list.value.extend(float(v) for v in row)
      elif kind in "iub":
        feature.int64_list.value.extend(int(v) for v in row)
      else:
        feature.bytes_list.value.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v)
            for v in row)
  return examples


def coerce_input(signature: serving_types.Signature, alias: str,
                 spec: serving_types.TensorSpec,
                 value: ArrayLike) -> np.ndarray:
  """Converts `value` to the dtype and shape of `spec`.

  A lossy conversion (float64 to int32, strings to numbers) is refused
  rather than done: the server would answer with values the caller never
  sent. Safe widening and same-kind casts (float64 to float32) are done, as
  .npy files are often saved as float64.

  Args:
    signature: the signature (named in errors).
    alias: the input alias (named in errors).
    spec: the input's dtype and shape; -1 dimensions take any size.
    value: the caller's value.

  Returns:
    The array, in the spec's numpy dtype (object of bytes for DT_STRING).

  Raises:
    InputError: for strings given to a numeric input (or the reverse), a
      lossy conversion, or a rank or dimension that does not fit.
  """
  want = spec.dtype
  where = f"input {alias!r} of signature {signature.name!r}"
  if want == tf.string:
    array = np.asarray(value, dtype=object)
    flat = [v.encode("utf-8") if isinstance(v, str) else v
            for v in array.reshape(-1)]
    if not all(isinstance(v, bytes) for v in flat):
      raise InputError(f"{where} wants strings (DT_STRING); got "
                       f"{np.asarray(value).dtype}")
    return np.array(flat, dtype=object).reshape(array.shape)
  array = np.asarray(value)
  target = np.dtype(want.as_numpy_dtype)
  if array.dtype.kind in "SUO":
    raise InputError(
        f"{where} wants {want.name}; got {array.dtype} (strings)")
  if array.dtype != target and not np.can_cast(array.dtype, target,
                                              casting="same_kind"):
    raise InputError(
        f"{where} wants {want.name}; got {array.dtype}, which does not "
        f"convert without losing values. Save the input as {target.name}.")
  array = array.astype(target)
  if spec.shape is not None:
    if array.ndim != len(spec.shape):
      raise InputError(
          f"{where} wants rank {len(spec.shape)} ({spec.describe()}); got "
          f"shape {list(array.shape)}")
    for i, (want_dim, got_dim) in enumerate(zip(spec.shape, array.shape)):
      if want_dim >= 0 and want_dim != got_dim:
        raise InputError(
            f"{where} wants {spec.describe()}; got shape {list(array.shape)} "
            f"(dimension {i} must be {want_dim})")
  return array


def sample_array(spec: serving_types.TensorSpec, batch_size: int = 1,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """Makes a sample value for one tensor from its dtype and shape.

  Unknown dimensions become `batch_size`. Floats are standard normal,
  integers uniform in [0, 10), booleans random, strings b"sample".

  Args:
    spec: the tensor's dtype and shape.
    batch_size: the size of every unknown (-1) dimension.
    rng: the random generator (a seeded one by default).

  Returns:
    The array.

  Raises:
    InputError: if the rank is unknown or the dtype has no sample.
  """
  if spec.shape is None:
    raise InputError(f"tensor {spec.name!r} has unknown rank")
  rng = rng or np.random.default_rng(0)
  shape = tuple(batch_size if d < 0 else d for d in spec.shape)
  dtype = spec.dtype
  if dtype == tf.string:
    return np.full(shape, b"sample", dtype=object)
  if dtype == tf.bool:
    return rng.integers(0, 2, size=shape).astype(bool)
  if dtype.is_floating:
    return rng.standard_normal(shape).astype(dtype.as_numpy_dtype)
  if dtype.is_complex:
    values = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return values.astype(dtype.as_numpy_dtype)
  if dtype.is_integer:
    return rng.integers(0, 10, size=shape).astype(dtype.as_numpy_dtype)
  raise InputError(
      f"tensor {spec.name!r} has dtype {dtype.name}, for which the client "
      "makes no sample")
