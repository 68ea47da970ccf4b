"""JSON <-> TF Serving request/response protos, as tensorflow_model_server does.

Mirrors tensorflow_serving/util/json_tensor.cc (the REST API's body format,
documented in g3doc/api_rest.md):

* Predict requests: `{"signature_name": ..., "instances": [...]}` (row
  format: one element per batch item, a list of objects when the signature has
  several inputs) or `{"inputs": ...}` (columnar: one value per input, or an
  object keyed by input alias). Each value is checked against the input's
  dtype from the signature: lossless float/double conversion, ints for
  integer types, `{"b64": "..."}` for binary strings. NaN and Infinity parse.
* Predict responses: `{"predictions": [...]}` for row requests and
  `{"outputs": ...}` for columnar ones; a single output is written without its
  alias, several as objects keyed by alias. String outputs whose alias ends in
  `_bytes` are written as `{"b64": "..."}`. Floats are written in the shortest
  form that reads back to the same value, NaN/Infinity as such.
* Classify/regress requests: `{"signature_name", "context", "examples"}` ->
  an `Input` of tf.Examples (`example_list` or `example_list_with_context`);
  responses `{"results": ...}`.
* Errors: `{"error": "<message>"}` (`error_json`).

Every parse error is a `ServingError` with INVALID_ARGUMENT (UNIMPLEMENTED for
a dtype JSON cannot carry) and TF Serving's message wording.
"""

import base64
import binascii
import enum
import json
import math
from typing import Any, Callable, List, Mapping, Optional, Tuple

import numpy as np
from google.protobuf import json_format
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from python.serve import serving_error

SIGNATURE_KEY = 'signature_name'
INSTANCES_KEY = 'instances'
INPUTS_KEY = 'inputs'
CONTEXT_KEY = 'context'
EXAMPLES_KEY = 'examples'
PREDICTIONS_KEY = 'predictions'
OUTPUTS_KEY = 'outputs'
RESULTS_KEY = 'results'
BASE64_KEY = 'b64'
BYTES_SUFFIX = '_bytes'

_INT32 = (-2**31, 2**31 - 1)
_INT64 = (-2**63, 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_FLOAT_MAX_INT = 2**24 - 1
_DOUBLE_MAX_INT = 2**53 - 1
_FLOAT_MAX = float(np.finfo(np.float32).max)

TensorInfoMap = Mapping[str, meta_graph_pb2.TensorInfo]
# dtypes `_TensorBuilder.add_nested` converts in bulk.
_FAST_DTYPES = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
                types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64}


class PredictFormat(enum.Enum):
  """Which predict body format a request used (JsonPredictRequestFormat)."""
  ROW = 'row'
  COLUMNAR = 'columnar'


def _invalid(message: str) -> serving_error.ServingError:
  return serving_error.invalid_argument(message)


def _status_string(error: serving_error.ServingError) -> str:
  """A nested error as TF's Status::ToString prints it."""
  return f'{error.code.name}: {error.message}'


def dtype_string(dtype: int) -> str:
  """TensorFlow's DataTypeString: DT_FLOAT -> 'float'."""
  try:
    return types_pb2.DataType.Name(dtype)[3:].lower()
  except ValueError:
    return f'unknown dtype {dtype}'


def _json_type(value: Any) -> str:
  if value is None:
    return 'Null'
  if value is True:
    return 'True'
  if value is False:
    return 'False'
  if isinstance(value, dict):
    return 'Object'
  if isinstance(value, list):
    return 'Array'
  if isinstance(value, str):
    return 'String'
  return 'Number'


def _value_string(value: Any) -> str:
  """A JSON value pretty-printed for messages, like rapidjson's writer."""
  return json.dumps(value, indent=4, allow_nan=True)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_range(value: Any, bounds: Tuple[int, int]) -> bool:
  return _is_int(value) and bounds[0] <= value <= bounds[1]


def _is_lossless(value: Any, max_int: int, max_abs: float) -> bool:
  if isinstance(value, float):
    return not math.isfinite(value) or -max_abs <= value <= max_abs
  return abs(value) <= max_int


def _type_error(value: Any, dtype: int) -> serving_error.ServingError:
  return _invalid(f'JSON Value: {_value_string(value)} Type: '
                  f'{_json_type(value)} is not of expected type: '
                  f'{dtype_string(dtype)}')


def _lossy_error(value: Any, target: str) -> serving_error.ServingError:
  return _invalid(f'Cannot convert JSON value: {_value_string(value)} to '
                  f'{target} without loss of precision.')


def _format_error(value: Any, text: str) -> serving_error.ServingError:
  return _invalid(f'JSON Value: {_value_string(value)} {text}')


def parse_json(body: bytes) -> dict:
  """Parses a request body; the top level must be an object.

  Args:
    body: The raw HTTP body (UTF-8 JSON; NaN and Infinity allowed).

  Returns:
    The parsed object.

  Raises:
    ServingError: empty body, invalid JSON or a non-object top level.
  """
  if not body:
    raise _invalid('JSON Parse error: The document is empty')
  try:
    text = body.decode('utf-8') if isinstance(body, bytes) else body
    doc = json.loads(text)
  except UnicodeDecodeError as e:
    raise _invalid(f'JSON Parse error: Invalid encoding in string. at '
                   f'offset: {e.start}') from e
  except json.JSONDecodeError as e:
    raise _invalid(f'JSON Parse error: {e.msg} at offset: {e.pos}') from e
  except RecursionError as e:
    raise _invalid('JSON Parse error: document nested too deeply') from e
  if not isinstance(doc, dict):
    raise _format_error(doc, 'Is not object')
  return doc


def _signature_name(doc: dict) -> Optional[str]:
  if SIGNATURE_KEY not in doc:
    return None
  name = doc[SIGNATURE_KEY]
  if not isinstance(name, str):
    raise _invalid(f'JSON Value: {_value_string(doc)} not formatted '
                   "correctly. 'signature_name' key must be a string value.")
  return name


def _is_base64_object(value: Any) -> bool:
  return (isinstance(value, dict) and len(value) == 1 and
          isinstance(value.get(BASE64_KEY), str))


def _decode_base64(value: Any) -> bytes:
  if not _is_base64_object(value):
    raise _invalid(f'JSON Value: {_value_string(value)} not formatted '
                   'correctly for base64 data')
  text = value[BASE64_KEY]
  try:
    # absl::Base64Unescape accepts the standard and the web-safe alphabet,
    # with or without padding.
    padded = text + '=' * (-len(text) % 4)
    if '-' in text or '_' in text:
      return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)
  except (binascii.Error, ValueError) as e:
    raise _invalid('Unable to base64 decode') from e


class _TensorBuilder:
  """Accumulates the values of one TensorProto of a fixed dtype."""

  def __init__(self, dtype: int):
    self.dtype = dtype
    self.values: List[Any] = []  # Leaves added one by one, after _chunks.
    self._chunks: List[np.ndarray] = []  # From add_nested.

  def add(self, value: Any) -> None:
    """Appends one leaf value, checked like AddValueToTensor."""
    dtype = self.dtype
    if isinstance(value, dict):
      if dtype != types_pb2.DT_STRING:
        raise _type_error(value, dtype)
      self.values.append(_decode_base64(value))
      return
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_HALF,
                 types_pb2.DT_BFLOAT16):
      if not _is_number(value):
        raise _type_error(value, dtype)
      if not _is_lossless(value, _FLOAT_MAX_INT, _FLOAT_MAX):
        raise _lossy_error(value, 'float')
      self.values.append(float(value))
    elif dtype == types_pb2.DT_DOUBLE:
      if not _is_number(value):
        raise _type_error(value, dtype)
      if not _is_lossless(value, _DOUBLE_MAX_INT, float('inf')):
        raise _lossy_error(value, 'double')
      self.values.append(float(value))
    elif dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8,
                   types_pb2.DT_UINT8):
      if not _in_range(value, _INT32):
        raise _type_error(value, dtype)
      self.values.append(value)
    elif dtype == types_pb2.DT_STRING:
      if not isinstance(value, str):
        raise _type_error(value, dtype)
      self.values.append(value.encode('utf-8', 'surrogatepass'))
    elif dtype == types_pb2.DT_INT64:
      if not _in_range(value, _INT64):
        raise _type_error(value, dtype)
      self.values.append(value)
    elif dtype == types_pb2.DT_BOOL:
      if not isinstance(value, bool):
        raise _type_error(value, dtype)
      self.values.append(value)
    elif dtype == types_pb2.DT_UINT32:
      if not _in_range(value, _UINT32):
        raise _type_error(value, dtype)
      self.values.append(value)
    elif dtype == types_pb2.DT_UINT64:
      if not _in_range(value, _UINT64):
        raise _type_error(value, dtype)
      self.values.append(value)
    else:
      raise serving_error.unimplemented(
          f'Conversion of JSON Value: {_value_string(value)} to type: '
          f'{dtype_string(dtype)}')

  def add_nested(self, value: Any, shape: List[int]) -> bool:
    """Appends a whole nested list at once when it is plain valid numbers.

    The fast path for float/double/int32/int64 tensors: a rectangular list
    of `shape` whose leaves are all JSON decimals (float dtypes) or all
    integers (int dtypes), in range. Returns False, adding nothing, when any
    value needs the element-wise checks and messages of `_fill`/`add`.
    """
    np_dtype = _FAST_DTYPES.get(self.dtype)
    if np_dtype is None or not shape:
      return False
    try:
      objects = np.array(value, dtype=object)
    except ValueError:
      return False
    if list(objects.shape) != shape:
      return False
    leaves = objects.reshape(-1).tolist()
    want = float if np_dtype in (np.float32, np.float64) else int
    if any(type(v) is not want for v in leaves):  # pylint: disable=C0123
      return False
    try:
      array = np.array(leaves, np.float64 if want is float else np.int64)
    except OverflowError:
      return False
    if np_dtype == np.float32:
      finite = array[np.isfinite(array)]
      if finite.size and np.abs(finite).max() > _FLOAT_MAX:
        return False
    elif np_dtype == np.int32 and array.size and not (
        _INT32[0] <= array.min() and array.max() <= _INT32[1]):
      return False
    if self.values:
      self._chunks.append(np.asarray(self.values, np_dtype))
      self.values = []
    self._chunks.append(array.astype(np_dtype))
    return True

  def to_proto(self, shape: List[int]) -> tensor_pb2.TensorProto:
    """The TensorProto of the accumulated values with `shape`."""
    proto = tensor_pb2.TensorProto(dtype=self.dtype)
    for size in shape:
      proto.tensor_shape.dim.add().size = size
    dtype = self.dtype
    values = self.values
    if self._chunks:
      np_dtype = _FAST_DTYPES[dtype]
      proto.tensor_content = np.concatenate(
          self._chunks + [np.asarray(values, np_dtype)]).astype(
              np.dtype(np_dtype).newbyteorder('<')).tobytes()
    elif dtype == types_pb2.DT_FLOAT:
      proto.float_val.extend(values)
    elif dtype == types_pb2.DT_HALF:
      proto.half_val.extend(
          np.asarray(values, np.float16).view(np.uint16).tolist())
    elif dtype == types_pb2.DT_BFLOAT16:
      bits = np.asarray(values, np.float32).view(np.uint32) >> 16
      proto.half_val.extend(bits.tolist())
    elif dtype == types_pb2.DT_DOUBLE:
      proto.double_val.extend(values)
    elif dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8,
                   types_pb2.DT_UINT8):
      proto.int_val.extend(values)
    elif dtype == types_pb2.DT_STRING:
      proto.string_val.extend(values)
    elif dtype == types_pb2.DT_INT64:
      proto.int64_val.extend(values)
    elif dtype == types_pb2.DT_BOOL:
      proto.bool_val.extend(values)
    elif dtype == types_pb2.DT_UINT32:
      proto.uint32_val.extend(values)
    elif dtype == types_pb2.DT_UINT64:
      proto.uint64_val.extend(values)
    return proto


def _dense_shape(value: Any) -> List[int]:
  """GetDenseTensorShape: the sizes along the first element of each level."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _fill(value: Any, level: int, shape: List[int],
          builder: _TensorBuilder) -> int:
  """FillTensorProto: adds the leaves of `value`; returns how many."""
  rank = len(shape)
  if not isinstance(value, list):
    if level != rank:
      raise _invalid(f'JSON Value: {_value_string(value)} found at incorrect '
                     f'level: {level + 1} in the JSON DOM. Expected at level: '
                     f'{rank}')
    builder.add(value)
    return 1
  if level >= rank:
    raise _invalid(f'Encountered list at unexpected level: {level} expected '
                   f'< {rank}')
  if len(value) != shape[level]:
    raise _invalid(f'Encountered list at unexpected size: {len(value)} at '
                   f'level: {level} expected size: {shape[level]}')
  count = 0
  for item in value:
    count += _fill(item, level + 1, shape, builder)
  return count


def _is_element_object(value: Any) -> bool:
  return isinstance(value, dict) and not _is_base64_object(value)


def _shape_string(shape: List[int]) -> str:
  return '[' + ','.join(str(d) for d in shape) + ']'


class _RowInput:
  """One named input collected from the items of an "instances" list."""

  def __init__(self, dtype: int):
    self.builder = _TensorBuilder(dtype)
    self.shape: Optional[List[int]] = None
    self.size = 0

  def add_item(self, item: Any) -> None:
    shape = _dense_shape(item)
    if self.builder.add_nested(item, shape):
      size = math.prod(shape)
    else:
      size = _fill(item, 0, shape, self.builder)
    if self.shape is None:
      self.shape, self.size = shape, size
    elif self.size != size:
      raise _invalid(f'Expecting tensor size: {self.size} but got: {size}')
    elif self.shape != shape:
      raise _invalid(f'Expecting shape {_shape_string(self.shape)} but got: '
                     f'{_shape_string(shape)}')


def _tensors_from_instances(instances: list, infos: TensorInfoMap
                           ) -> Mapping[str, tensor_pb2.TensorProto]:
  """FillTensorMapFromInstancesList."""
  if not isinstance(instances[0], dict) and len(infos) > 1:
    raise _invalid('instances is a plain list, but expecting list of objects '
                   'as multiple input tensors required as per tensorinfo_map')
  elements_are_objects = _is_element_object(instances[0])
  names = sorted(infos)
  inputs = {}
  for index, element in enumerate(instances):
    if elements_are_objects:
      if not _is_element_object(element):
        raise _invalid(f'Expecting object but got list at item {index} of '
                       'input list')
      for name, item in element.items():
        try:
          if name not in infos:
            raise _invalid(
                f'JSON object: does not have named input: {name}')
          row = inputs.setdefault(name, _RowInput(infos[name].dtype))
          row.add_item(item)
        except serving_error.ServingError as e:
          raise _invalid(f'Failed to process element: {index} key: {name} of '
                         f"'instances' list. Error: {_status_string(e)}"
                        ) from e
      if sorted(element) != names:
        raise _invalid(f'Failed to process element: {index} of \'instances\' '
                       f'list. JSON object: {_value_string(element)} must '
                       f'only have keys: {",".join(names)}')
    else:
      if _is_element_object(element):
        raise _invalid(f'Expecting value/list but got object at item {index} '
                       'of input list')
      name = names[0]
      try:
        row = inputs.setdefault(name, _RowInput(infos[name].dtype))
        row.add_item(element)
      except serving_error.ServingError as e:
        raise _invalid(f'Failed to process element: {index} of \'instances\' '
                       f'list. Error: {_status_string(e)}') from e
  return {name: row.builder.to_proto([len(instances)] + row.shape)
          for name, row in inputs.items()}


def _columnar_tensor(value: Any, dtype: int) -> tensor_pb2.TensorProto:
  shape = _dense_shape(value)
  builder = _TensorBuilder(dtype)
  if not builder.add_nested(value, shape):
    _fill(value, 0, shape, builder)
  return builder.to_proto(shape)


def _tensors_from_inputs(value: Any, infos: TensorInfoMap
                        ) -> Mapping[str, tensor_pb2.TensorProto]:
  """FillTensorMapFromInputsMap."""
  if not isinstance(value, dict) or _is_base64_object(value):
    if len(infos) > 1:
      raise _invalid('inputs is a plain value/list, but expecting an object '
                     'as multiple input tensors required as per '
                     'tensorinfo_map')
    name = next(iter(infos))
    return {name: _columnar_tensor(value, infos[name].dtype)}
  tensors = {}
  for name in sorted(infos):
    if name not in value:
      raise _invalid(f"Missing named input: {name} in 'inputs' object.")
    tensors[name] = _columnar_tensor(value[name], infos[name].dtype)
  return tensors


def fill_predict_request(
    body: bytes, get_input_infos: Callable[[str], TensorInfoMap],
    request: predict_pb2.PredictRequest) -> PredictFormat:
  """FillPredictRequestFromJson: fills `request.inputs` from a JSON body.

  Args:
    body: The HTTP body.
    get_input_infos: Signature name ('' = default) -> its input TensorInfos;
      raises ServingError when the model or signature is unknown.
    request: The request to fill (its model_spec name/version already set).

  Returns:
    The body's format, which decides the response's format.

  Raises:
    ServingError: the body does not match TF Serving's format or the
      signature's inputs.
  """
  doc = parse_json(body)
  name = _signature_name(doc)
  if name is not None:
    request.model_spec.signature_name = name
  signature_name = request.model_spec.signature_name
  infos = get_input_infos(signature_name)
  if not infos:
    raise _invalid('Failed to get input map for signature: '
                   f'{signature_name or "DEFAULT"}')
  has_instances = INSTANCES_KEY in doc
  has_inputs = INPUTS_KEY in doc
  if has_instances and has_inputs:
    raise _format_error(doc, 'Not formatted correctly expecting only one of '
                        f"'{INPUTS_KEY}' or '{INSTANCES_KEY}' keys to exist ")
  if has_instances:
    instances = doc[INSTANCES_KEY]
    if not isinstance(instances, list):
      raise _format_error(doc, f"Excepting '{INSTANCES_KEY}' to be an "
                          'list/array')
    if not instances:
      raise _format_error(doc, f"No values in '{INSTANCES_KEY}' array")
    tensors = _tensors_from_instances(instances, infos)
    fmt = PredictFormat.ROW
  elif has_inputs:
    tensors = _tensors_from_inputs(doc[INPUTS_KEY], infos)
    fmt = PredictFormat.COLUMNAR
  else:
    raise _invalid("Missing 'inputs' or 'instances' key")
  for alias, tensor in tensors.items():
    request.inputs[alias].CopyFrom(tensor)
  return fmt


# --- tf.Examples for classify / regress -------------------------------------

_KIND_NAMES = {'bytes_list': 'bytes', 'float_list': 'float',
               'int64_list': 'int64', None: 'UNKNOWN'}


def _feature_kind_error(name: str, feature: feature_pb2.Feature
                       ) -> serving_error.ServingError:
  kind = _KIND_NAMES[feature.WhichOneof('kind')]
  return _invalid(f'Unexpected element type in feature: {name} expecting '
                  f'type: {kind}')


def _check_kind(name: str, feature: feature_pb2.Feature, kind: str) -> None:
  current = feature.WhichOneof('kind')
  if current is not None and current != kind:
    raise _feature_kind_error(name, feature)


def _add_feature_value(value: Any, name: str,
                       feature: feature_pb2.Feature) -> None:
  """AddValueToFeature."""
  if value is None or isinstance(value, list) or (
      isinstance(value, dict) and not _is_base64_object(value)):
    raise _invalid(f'Feature: {name} has element with unexpected JSON type: '
                   f'{_json_type(value)}')
  if isinstance(value, bool):
    _check_kind(name, feature, 'int64_list')
    feature.int64_list.value.append(int(value))
  elif isinstance(value, dict):
    _check_kind(name, feature, 'bytes_list')
    feature.bytes_list.value.append(_decode_base64(value))
  elif isinstance(value, str):
    _check_kind(name, feature, 'bytes_list')
    feature.bytes_list.value.append(value.encode('utf-8', 'surrogatepass'))
  elif isinstance(value, float) or (_is_int(value) and
                                    not -2**63 <= value < 2**64):
    _check_kind(name, feature, 'float_list')
    if not _is_lossless(value, _FLOAT_MAX_INT, _FLOAT_MAX):
      raise _lossy_error(value, 'float')
    feature.float_list.value.append(float(value))
  else:
    _check_kind(name, feature, 'int64_list')
    if value > _INT64[1]:
      raise _invalid(f'Feature: {name} has uint64 element. Only int64 is '
                     'supported.')
    feature.int64_list.value.append(value)


def _example_from_json(value: Any, example: example_pb2.Example) -> None:
  """MakeExampleFromJsonObject."""
  if not isinstance(value, dict):
    raise _invalid(f'Example must be JSON object but got JSON '
                   f'{_json_type(value)}')
  for name, content in value.items():
    feature = feature_pb2.Feature()
    for item in content if isinstance(content, list) else [content]:
      _add_feature_value(item, name, feature)
    example.features.feature[name].CopyFrom(feature)


def fill_examples_request(body: bytes, request) -> None:
  """FillClassificationRequestFromJson / FillRegressionRequestFromJson.

  Args:
    body: The HTTP body.
    request: A ClassificationRequest or RegressionRequest to fill.

  Raises:
    ServingError: the body does not match TF Serving's format (whose
      message says "When method is classify" for regress requests too).
  """
  doc = parse_json(body)
  name = _signature_name(doc)
  if name is not None:
    request.model_spec.signature_name = name
  model_input = request.input
  has_context = CONTEXT_KEY in doc
  if has_context:
    _example_from_json(doc[CONTEXT_KEY],
                       model_input.example_list_with_context.context)
  if EXAMPLES_KEY not in doc:
    raise _format_error(doc, f"When method is classify, key '{EXAMPLES_KEY}' "
                        'is expected and was not found')
  examples = doc[EXAMPLES_KEY]
  if not isinstance(examples, list):
    raise _format_error(doc, f"Expecting '{EXAMPLES_KEY}' value to be an "
                        'list/array')
  if not examples:
    raise _format_error(doc, f"'{EXAMPLES_KEY}' value is an empty array")
  target = (model_input.example_list_with_context.examples if has_context
            else model_input.example_list.examples)
  for value in examples:
    _example_from_json(value, target.add())


# --- responses ---------------------------------------------------------------


class _Raw(str):
  """A number already formatted as JSON text."""


def format_decimal(value: float, is_float32: bool) -> str:
  """WriteDecimal: shortest round-tripping text, NaN/Infinity spelled out."""
  if math.isnan(value):
    return 'NaN'
  if math.isinf(value):
    return '-Infinity' if value < 0 else 'Infinity'
  text = '%.6g' % value
  if is_float32:
    if np.float32(float(text)) != np.float32(value):
      text = '%.9g' % value
  elif float(text) != value:
    text = '%.17g' % value
  if '.' not in text and 'e' not in text:
    text += '.0'
  return text


def _dump(value: Any) -> str:
  if isinstance(value, _Raw):
    return str(value)
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, int):
    return str(value)
  if isinstance(value, str):
    return json.dumps(value, ensure_ascii=False)
  if isinstance(value, dict):
    return '{' + ', '.join(f'{json.dumps(k, ensure_ascii=False)}: {_dump(v)}'
                           for k, v in value.items()) + '}'
  return '[' + ', '.join(_dump(v) for v in value) + ']'


def _document(key: str, items: List[str]) -> str:
  """`{"key": [item, item, ...]}` with one (JSON text) item per line."""
  if not items:
    return '{\n    "%s": []\n}' % key
  body = ',\n        '.join(items)
  return '{\n    "%s": [\n        %s\n    ]\n}' % (key, body)


_SPECIAL_DECIMALS = {'nan': 'NaN', '-nan': 'NaN', 'inf': 'Infinity',
                     '-inf': '-Infinity'}


def _decimal_strings(array: np.ndarray, is_float32: bool) -> np.ndarray:
  """`format_decimal` over a whole float array (same text, in bulk)."""
  flat = array.reshape(-1)
  values = flat.astype(np.float64).tolist()
  out = ['%.6g' % v for v in values]
  if out:
    back = np.array(out, np.float64)
    if is_float32:
      lossy = back.astype(np.float32) != flat.astype(np.float32)
      digits = '%.9g'
    else:
      lossy = back != flat
      digits = '%.17g'
    lossy &= np.isfinite(back)
    for i in np.flatnonzero(lossy).tolist():
      out[i] = digits % values[i]
    out = [_SPECIAL_DECIMALS.get(t) or
           (t if '.' in t or 'e' in t else t + '.0') for t in out]
  return np.array(out + [None], dtype=object)[:-1].reshape(array.shape)


def _leaf_strings(tensor: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
  """The JSON text of every element of `tensor` (an object array, its shape).

  AddSingleValueAndAdvance: floats as `format_decimal`, strings of an alias
  ending in `_bytes` as `{"b64": ...}`, other strings as text.
  """
  dtype = tensor.dtype
  array = tf.make_ndarray(tensor)
  if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
    return _decimal_strings(array.astype(np.float32), True)
  if dtype == types_pb2.DT_DOUBLE:
    return _decimal_strings(array, False)
  if dtype == types_pb2.DT_BOOL:
    return np.where(array, 'true', 'false').astype(object)
  if dtype in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32,
               types_pb2.DT_INT64, types_pb2.DT_UINT8, types_pb2.DT_UINT16,
               types_pb2.DT_UINT32, types_pb2.DT_UINT64):
    return array.astype(str).astype(object)
  if dtype == types_pb2.DT_STRING:
    if alias.endswith(BYTES_SUFFIX):
      convert = lambda v: '{"%s": "%s"}' % (  # pylint: disable=g-long-lambda
          BASE64_KEY, base64.b64encode(v).decode('ascii'))
    else:
      convert = lambda v: json.dumps(v.decode('utf-8', 'replace'),
                                     ensure_ascii=False)
    flat = [convert(v) for v in array.reshape(-1)]
    return np.array(flat + [None], dtype=object)[:-1].reshape(array.shape)
  raise _invalid('Failed to write JSON value for tensor type: '
                 f'{dtype_string(dtype)}')


def _text(strings) -> str:
  """Nested JSON arrays of already-formatted leaves (AddTensorValues).

  Args:
    strings: An object array of leaf texts, or one leaf text (an element of
      a 1-D array).
  """
  if isinstance(strings, str):
    return strings
  if strings.ndim == 0:
    return strings.item()
  if strings.ndim == 1:
    return '[' + ', '.join(strings.tolist()) + ']'
  return '[' + ', '.join(_text(row) for row in strings) + ']'


def _shape(tensor: tensor_pb2.TensorProto) -> List[int]:
  return [d.size for d in tensor.tensor_shape.dim]


def _key(alias: str) -> str:
  return json.dumps(alias, ensure_ascii=False)


def predict_response_json(outputs: Mapping[str, tensor_pb2.TensorProto],
                          fmt: PredictFormat) -> str:
  """MakeJsonFromTensors: the response body for a PredictResponse's outputs.

  Args:
    outputs: alias -> output tensor.
    fmt: The request's format.

  Returns:
    The JSON text.

  Raises:
    ServingError: no outputs, or row format with outputs that have no batch
      dimension or disagree on it.
  """
  if not outputs:
    raise _invalid('Cannot convert empty tensor map to JSON')
  aliases = sorted(outputs)
  if fmt == PredictFormat.COLUMNAR:
    texts = {alias: _text(_leaf_strings(outputs[alias], alias))
             for alias in aliases}
    if len(aliases) == 1:
      content = texts[aliases[0]]
    else:
      content = '{' + ', '.join(f'{_key(a)}: {texts[a]}' for a in aliases) + '}'
    return '{\n    "%s": %s\n}' % (OUTPUTS_KEY, content)
  batch_size = 0
  for alias in aliases:
    shape = _shape(outputs[alias])
    if not shape:
      raise _invalid(f'Tensor name: {alias} has no shape information ')
    if shape[0] < 1:
      raise _invalid(f'Tensor name: {alias} has invalid batch size: '
                     f'{shape[0]}')
    if batch_size and shape[0] != batch_size:
      raise _invalid(f'Tensor name: {alias} has inconsistent batch size: '
                     f'{shape[0]} expecting: {batch_size}')
    batch_size = shape[0]
  strings = {alias: _leaf_strings(outputs[alias], alias) for alias in aliases}
  if len(aliases) == 1:
    items = [_text(row) for row in strings[aliases[0]]]
  else:
    items = ['{' + ', '.join(f'{_key(a)}: {_text(strings[a][i])}'
                             for a in aliases) + '}'
             for i in range(batch_size)]
  return _document(PREDICTIONS_KEY, items)


def classification_json(result: classification_pb2.ClassificationResult
                       ) -> str:
  """MakeJsonFromClassificationResult: `{"results": [[[label, score]...]]}`."""
  if not result.classifications:
    raise _invalid('Cannot convert empty ClassificationResults to JSON')
  items = [_dump([[c.label, _Raw(format_decimal(c.score, True))]
                  for c in classifications.classes])
           for classifications in result.classifications]
  return _document(RESULTS_KEY, items)


def regression_json(result: regression_pb2.RegressionResult) -> str:
  """MakeJsonFromRegressionResult: `{"results": [v1, v2, ...]}`."""
  if not result.regressions:
    raise _invalid('Cannot convert empty RegressionResults to JSON')
  values = [_Raw(format_decimal(r.value, True)) for r in result.regressions]
  return '{\n    "%s": %s\n}' % (RESULTS_KEY, _dump(values))


def _proto_json(message) -> str:
  """MessageToJsonString with TF Serving's options for status/metadata."""
  try:
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, indent=1,
        always_print_fields_with_no_presence=True)
  except TypeError:  # protobuf < 5.26 names the option differently.
    return json_format.MessageToJson(  # pylint: disable=unexpected-keyword-arg
        message, preserving_proto_field_name=True, indent=1,
        including_default_value_fields=True)


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> str:
  """The GET /v1/models/<name> body (ToJsonString of GetModelStatusResponse)."""
  return _proto_json(response)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse
                 ) -> str:
  """The GET .../metadata body: model_spec plus the unpacked SignatureDefMap.

  Raises:
    ServingError: the response has no signature_def metadata (INTERNAL).
  """
  if 'signature_def' not in response.metadata:
    raise serving_error.internal(
        "Failed to find 'signature_def' key in the GetModelMetadataResponse "
        'metadata map.')
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  if not response.metadata['signature_def'].Unpack(signature_map):
    raise serving_error.internal(
        "Failed to unpack 'Any' object to 'SignatureDefMap'.")
  return ('{\n"model_spec":' + _proto_json(response.model_spec) + ',\n'
          '"metadata": {"signature_def": ' + _proto_json(signature_map) +
          '}\n}\n')


def error_json(message: str) -> str:
  """MakeJsonFromStatus: `{"error": "<message>"}`."""
  return '{\n    "error": %s\n}' % json.dumps(message, ensure_ascii=False)
