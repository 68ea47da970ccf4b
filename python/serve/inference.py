"""Request semantics of TF Serving's PredictionService on one servable.

Mirrors tensorflow_serving/servables/tensorflow/{predict_util, classifier,
regressor, multi_inference, get_model_metadata_impl}.cc: the same signature
lookup, input/output validation, status codes and message wording, with the
valid choices appended where TF Serving leaves them out. Each function takes an
already resolved `Servable` (see `model_manager`) and returns the response
proto or raises `ServingError`.
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from python.serve import servable as servable_lib
from python.serve import serving_error
from python.serve import tensor_codec

DEFAULT_SIGNATURE = 'serving_default'
# TensorFlow's own constants (signature_constants.h in C++).
PREDICT_METHOD = tf.saved_model.PREDICT_METHOD_NAME
CLASSIFY_METHOD = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS_METHOD = tf.saved_model.REGRESS_METHOD_NAME
CLASSIFY_INPUTS = 'inputs'
CLASSIFY_CLASSES = 'classes'
CLASSIFY_SCORES = 'scores'
REGRESS_INPUTS = 'inputs'
REGRESS_OUTPUTS = 'outputs'
SIGNATURE_DEF_FIELD = 'signature_def'

_Servable = servable_lib.Servable


def _join(names: Iterable[str]) -> str:
  return ','.join(sorted(names))


def make_model_spec(name: str, signature_name: Optional[str], version: int,
                    model_spec: model_pb2.ModelSpec) -> None:
  """Fills a response ModelSpec like TF Serving's MakeModelSpec."""
  model_spec.Clear()
  model_spec.name = name
  if signature_name is not None:
    model_spec.signature_name = signature_name or DEFAULT_SIGNATURE
  model_spec.version.value = version


def _get_signature_for_predict(servable: _Servable, signature_name: str):
  signature = servable.signatures.get(signature_name)
  if signature is None:
    raise serving_error.failed_precondition(
        f'Serving signature key "{signature_name}" not found. Signatures of '
        f'model {servable.name} version {servable.version}: '
        f'{{{_join(servable.signatures)}}}.')
  if (servable.options.enable_signature_method_name_check and
      signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD,
                                    REGRESS_METHOD)):
    raise serving_error.internal(
        'Expected prediction signature method_name to be one of '
        f'{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. '
        f'Was: {signature.method_name}')
  return signature


def _parse_predict_inputs(signature, request: predict_pb2.PredictRequest
                         ) -> Dict[str, np.ndarray]:
  """Checks and parses inputs like TF Serving's PreProcessPrediction.

  The alias set first (fewer inputs are allowed only when the signature has
  defaults), then each signature input from the request or its default
  (`Tensor::FromProto` semantics), then the dtype the graph expects, which
  TF Serving's session checks when it binds the feeds (arg order: the
  signature's aliases, sorted).

  Args:
    signature: The SignatureDef.
    request: The PredictRequest.

  Returns:
    Feed tensor name -> value.

  Raises:
    ServingError: INVALID_ARGUMENT with TF Serving's wording.
  """
  sent = set(request.inputs)
  expected = set(signature.inputs)
  defaults = signature.defaults
  if len(sent) > len(expected) or (len(sent) < len(expected) and
                                   not defaults):
    raise serving_error.invalid_argument(
        f'input size does not match signature: {len(sent)}!={len(expected)} '
        f'len({{{_join(sent)}}}) != len({{{_join(expected)}}}). '
        f'Sent extra: {{{_join(sent - expected)}}}. '
        f'Missing but required: {{{_join(expected - sent)}}}.')
  feeds = {}
  used = set()
  for index, alias in enumerate(sorted(expected)):
    info = signature.inputs[alias]
    if alias in request.inputs:
      tensor_proto = request.inputs[alias]
      used.add(alias)
    elif alias in defaults:
      tensor_proto = defaults[alias]
    else:
      raise serving_error.invalid_argument(
          f'Signature input alias: {alias}(feed name: {info.name}) not found '
          f'in request and no default value provided. Inputs expected to be '
          f'in the request {{{_join(sent)}}}, or default input alias set: '
          f'{_join(defaults)}. The signature\'s inputs: {{{_join(expected)}}}.')
    try:
      value = tensor_codec.to_ndarray(tensor_proto)
    except tensor_codec.TensorParseError as e:
      raise serving_error.invalid_argument(
          f'tensor parsing error: {alias} ({e})') from e
    if info.dtype and tensor_proto.dtype != info.dtype:
      raise serving_error.invalid_argument(
          f'Expects arg[{index}] to be '
          f'{tensor_codec.cpp_dtype_name(info.dtype)} but '
          f'{tensor_codec.cpp_dtype_name(tensor_proto.dtype)} is provided '
          f'(input alias "{alias}", feed name {info.name})')
    feeds[info.name] = value
  if sent and used != sent:
    raise serving_error.invalid_argument(
        f'Inputs contains invalid name. Used request inputs: {_join(used)}, '
        f'request input: {_join(sent)}')
  return feeds


def _output_aliases(signature, output_filter: Sequence[str]) -> List[str]:
  if not output_filter:
    return sorted(signature.outputs)
  seen = set()
  for alias in output_filter:
    if alias not in signature.outputs:
      raise serving_error.invalid_argument(
          f'output tensor alias not found in signature: {alias} Outputs '
          f'expected to be in the set {{{_join(signature.outputs)}}}.')
    if alias in seen:
      raise serving_error.invalid_argument(
          f'duplicate output tensor alias: {alias}')
    seen.add(alias)
  return list(output_filter)


class _PredictPlan:
  """What Predict needs of one signature, computed once per servable.

  The sorted aliases with their feed names and dtypes, the feeds in the
  sorted-name order the session callable takes, and for requests without
  an output_filter the output aliases and the distinct fetches.
  """

  __slots__ = ('signature', 'inputs', 'expected', 'has_defaults',
               'feed_order', 'aliases', 'fetches', 'unique', 'positions')

  def __init__(self, signature):
    self.signature = signature
    self.expected = frozenset(signature.inputs)
    self.has_defaults = bool(signature.defaults)
    # (index, alias, feed name, dtype) in sorted alias order.
    self.inputs = tuple(
        (i, alias, signature.inputs[alias].name, signature.inputs[alias].dtype)
        for i, alias in enumerate(sorted(signature.inputs)))
    names = [name for _, _, name, _ in self.inputs]
    # Positions of the inputs in sorted feed-name order (None when two
    # aliases share a tensor, which the generic path handles).
    self.feed_order = (tuple(sorted(range(len(names)),
                                    key=lambda i: names[i]))
                       if len(set(names)) == len(names) else None)
    self.aliases, self.fetches, self.unique, self.positions = (
        _fetch_plan(signature, sorted(signature.outputs)))


def _fetch_plan(signature, aliases: Sequence[str]):
  fetches = [signature.outputs[alias].name for alias in aliases]
  unique = tuple(sorted(set(fetches)))
  index = {name: i for i, name in enumerate(unique)}
  return list(aliases), fetches, unique, [index[n] for n in fetches]


def _predict_plan(servable: _Servable, signature_name: str) -> _PredictPlan:
  plan = servable.plans.get(signature_name)
  if plan is None:
    plan = _PredictPlan(servable.signatures[signature_name])
    servable.plans[signature_name] = plan
  return plan


def prepare(servable: _Servable) -> None:
  """Does at load what every request would: plans and session callables.

  Args:
    servable: A freshly loaded version, before warmup.
  """
  for name in servable.signatures:
    plan = _predict_plan(servable, name)
    feeds = tuple(sorted({n for _, _, n, _ in plan.inputs}))
    try:
      servable.callable_for(feeds, plan.unique, at_load=True)
    except Exception:  # pylint: disable=broad-except
      # A signature the graph cannot run as declared fails on its request,
      # with the runtime's message, as TF Serving's does.
      pass


def _plan_feeds(plan: _PredictPlan, request: predict_pb2.PredictRequest
               ) -> Optional[Tuple[Tuple[str, ...], list]]:
  """The fast path of `_parse_predict_inputs`: every alias sent, once."""
  if plan.feed_order is None:
    return None
  inputs = request.inputs
  if len(inputs) != len(plan.inputs):
    return None
  values = []
  for index, alias, name, dtype in plan.inputs:
    if alias not in inputs:
      return None
    tensor_proto = inputs[alias]
    try:
      value = tensor_codec.to_ndarray(tensor_proto)
    except tensor_codec.TensorParseError as e:
      raise serving_error.invalid_argument(
          f'tensor parsing error: {alias} ({e})') from e
    if dtype and tensor_proto.dtype != dtype:
      raise serving_error.invalid_argument(
          f'Expects arg[{index}] to be '
          f'{tensor_codec.cpp_dtype_name(dtype)} but '
          f'{tensor_codec.cpp_dtype_name(tensor_proto.dtype)} is provided '
          f'(input alias "{alias}", feed name {name})')
    values.append(value)
  order = plan.feed_order
  return (tuple(plan.inputs[i][2] for i in order),
          [values[i] for i in order])


def predict(servable: _Servable, request: predict_pb2.PredictRequest,
            timeout_s: Optional[float] = None) -> predict_pb2.PredictResponse:
  """Runs a PredictRequest like TF Serving's RunPredict.

  Args:
    servable: The resolved model version.
    request: The request; its model_spec names the signature.
    timeout_s: Optional runtime deadline.

  Returns:
    The PredictResponse with outputs and the resolved model_spec.

  Raises:
    ServingError: unknown signature (FAILED_PRECONDITION), bad inputs or
      output_filter (INVALID_ARGUMENT), runtime failures.
  """
  signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
  signature = _get_signature_for_predict(servable, signature_name)
  plan = _predict_plan(servable, signature_name)
  fed = _plan_feeds(plan, request)
  if fed is None:
    feeds = _parse_predict_inputs(signature, request)
    names = tuple(sorted(feeds))
    fed = (names, [feeds[n] for n in names])
  if request.output_filter:
    aliases, fetches, unique, positions = _fetch_plan(
        signature, _output_aliases(signature, request.output_filter))
  else:
    aliases, fetches, unique, positions = (plan.aliases, plan.fetches,
                                           plan.unique, plan.positions)
  values = servable.run_sorted(fed[0], fed[1], unique, timeout_s)
  response = predict_pb2.PredictResponse()
  as_content = servable.options.serialize_as_tensor_content
  outputs = response.outputs
  for alias, position in zip(aliases, positions):
    outputs[alias].CopyFrom(
        tensor_codec.from_ndarray(values[position], as_content))
  make_model_spec(request.model_spec.name, signature_name, servable.version,
                  response.model_spec)
  return response


def serialized_examples(model_input: input_pb2.Input) -> np.ndarray:
  """Turns an Input proto into a 1-D string array of serialized Examples.

  For `example_list_with_context` each entry is the context's serialization
  followed by the example's, which parses as the merge of both (features of
  the example win), exactly as TF Serving builds it.

  Args:
    model_input: The request's `input` field.

  Returns:
    A numpy object array of bytes, one per example.

  Raises:
    ServingError: the input holds no examples (INVALID_ARGUMENT).
  """
  kind = model_input.WhichOneof('kind')
  if kind == 'example_list':
    serialized = [e.SerializeToString()
                  for e in model_input.example_list.examples]
  elif kind == 'example_list_with_context':
    with_context = model_input.example_list_with_context
    context = with_context.context.SerializeToString()
    serialized = [context + e.SerializeToString()
                  for e in with_context.examples]
  else:
    serialized = []
  if not serialized:
    raise serving_error.invalid_argument(
        'Input is empty. Send examples in input.example_list.examples or '
        'input.example_list_with_context.examples.')
  return np.array(serialized, dtype=object)


def _find_signature(servable: _Servable, signature_name: str, method: str,
                    kind: str):
  signature = servable.signatures.get(signature_name)
  if signature is None:
    raise serving_error.invalid_argument(
        f'No signature was found with the name: {signature_name}. Signatures '
        f'of model {servable.name} version {servable.version}: '
        f'{{{_join(servable.signatures)}}}.')
  if signature.method_name != method:
    raise serving_error.invalid_argument(
        f'Expected {kind} signature method_name to be {method}. Was: '
        f'{signature.method_name}')
  return signature


def _preprocess_classification(signature) -> Tuple[str, List[str]]:
  if signature.method_name != CLASSIFY_METHOD:
    raise serving_error.invalid_argument(
        'Expected classification signature method_name to be '
        f'{CLASSIFY_METHOD}. Was: {signature.method_name}')
  if len(signature.inputs) != 1:
    raise serving_error.invalid_argument('Expected one input Tensor.')
  if len(signature.outputs) not in (1, 2):
    raise serving_error.invalid_argument(
        f'Expected one or two output Tensors, found {len(signature.outputs)}')
  if CLASSIFY_INPUTS not in signature.inputs:
    raise serving_error.invalid_argument(
        'No classification inputs found in SignatureDef: expected input alias '
        f'"{CLASSIFY_INPUTS}", got {{{_join(signature.inputs)}}}')
  outputs = [signature.outputs[key].name
             for key in (CLASSIFY_CLASSES, CLASSIFY_SCORES)
             if key in signature.outputs]
  if not outputs:
    raise serving_error.invalid_argument(
        'Expected classification signature outputs to contain at least one '
        f'of "{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}". Signature outputs: '
        f'{{{_join(signature.outputs)}}}')
  return signature.inputs[CLASSIFY_INPUTS].name, outputs


def _postprocess_classification(
    signature, num_examples: int, values: Dict[str, np.ndarray],
    result: classification_pb2.ClassificationResult) -> None:
  classes = scores = None
  if CLASSIFY_CLASSES in signature.outputs:
    classes = values[signature.outputs[CLASSIFY_CLASSES].name]
  if CLASSIFY_SCORES in signature.outputs:
    scores = values[signature.outputs[CLASSIFY_SCORES].name]
  for label, tensor, want in (('classes', classes, np.object_),
                              ('scores', scores, np.float32)):
    if tensor is None:
      continue
    if tensor.ndim != 2:
      raise serving_error.invalid_argument(
          'Expected Tensor shape: [batch_size num_classes] but got '
          f'{list(tensor.shape)} for {label}')
    if tensor.dtype != want:
      want_name = 'DT_STRING' if want is np.object_ else 'DT_FLOAT'
      raise serving_error.invalid_argument(
          f'Expected {label} Tensor of {want_name}. Got: {tensor.dtype}')
    if tensor.shape[0] != num_examples:
      raise serving_error.invalid_argument(
          f'Expected {label} output batch size of {num_examples}. Got: '
          f'{tensor.shape[0]}')
  if classes is not None and scores is not None:
    if classes.shape[1] != scores.shape[1]:
      raise serving_error.invalid_argument(
          'Tensors class and score should match in dim_size(1). Got '
          f'{classes.shape[1]} vs. {scores.shape[1]}')
  num_classes = (classes if classes is not None else scores).shape[1]
  for i in range(num_examples):
    classifications = result.classifications.add()
    for c in range(num_classes):
      cls = classifications.classes.add()
      if classes is not None:
        cls.label = classes[i, c].decode('utf-8', 'replace')
      if scores is not None:
        cls.score = float(scores[i, c])


def _preprocess_regression(signature) -> Tuple[str, List[str]]:
  if signature.method_name != REGRESS_METHOD:
    raise serving_error.invalid_argument(
        f'Expected regression signature method_name to be {REGRESS_METHOD}. '
        f'Was: {signature.method_name}')
  if len(signature.inputs) != 1:
    raise serving_error.invalid_argument('Expected one input Tensor.')
  if len(signature.outputs) != 1:
    raise serving_error.invalid_argument('Expected one output Tensor.')
  if REGRESS_INPUTS not in signature.inputs:
    raise serving_error.invalid_argument(
        'No regression inputs found in SignatureDef: expected input alias '
        f'"{REGRESS_INPUTS}", got {{{_join(signature.inputs)}}}')
  if REGRESS_OUTPUTS not in signature.outputs:
    raise serving_error.invalid_argument(
        'No regression outputs found in SignatureDef: expected output alias '
        f'"{REGRESS_OUTPUTS}", got {{{_join(signature.outputs)}}}')
  return (signature.inputs[REGRESS_INPUTS].name,
          [signature.outputs[REGRESS_OUTPUTS].name])


def _postprocess_regression(signature, num_examples: int,
                            values: Dict[str, np.ndarray],
                            result: regression_pb2.RegressionResult) -> None:
  output = values[signature.outputs[REGRESS_OUTPUTS].name]
  if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
    raise serving_error.invalid_argument(
        'Expected output Tensor shape to be either [batch_size] or '
        f'[batch_size, 1] but got {list(output.shape)}')
  if output.shape[0] != num_examples:
    raise serving_error.invalid_argument(
        'Input batch size did not match output batch size: '
        f'{num_examples} vs. {output.shape[0]}')
  if output.dtype != np.float32:
    raise serving_error.invalid_argument(
        f'Expected output Tensor of DT_FLOAT.  Got: {output.dtype}')
  for value in output.reshape([-1]):
    result.regressions.add().value = float(value)


def _run_examples(servable: _Servable, model_input: input_pb2.Input,
                  input_names: Iterable[str], output_names: Sequence[str],
                  timeout_s: Optional[float]
                 ) -> Tuple[int, Dict[str, np.ndarray]]:
  """Feeds the serialized examples to every input tensor named."""
  examples = serialized_examples(model_input)
  fetches = sorted(set(output_names))
  values = servable.run({name: examples for name in set(input_names)},
                        fetches, timeout_s)
  return len(examples), dict(zip(fetches, values))


def classify(servable: _Servable,
             request: classification_pb2.ClassificationRequest,
             timeout_s: Optional[float] = None
            ) -> classification_pb2.ClassificationResponse:
  """Runs a ClassificationRequest like TF Serving's RunClassify.

  Args:
    servable: The resolved model version.
    request: Examples in `input.example_list[_with_context]`.
    timeout_s: Optional runtime deadline.

  Returns:
    The ClassificationResponse.

  Raises:
    ServingError: unknown or non-classify signature, empty input, bad outputs.
  """
  signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
  signature = _find_signature(servable, signature_name, CLASSIFY_METHOD,
                              'classification')
  input_name, output_names = _preprocess_classification(signature)
  response = classification_pb2.ClassificationResponse()
  make_model_spec(request.model_spec.name, signature_name, servable.version,
                  response.model_spec)
  num_examples, values = _run_examples(servable, request.input, [input_name],
                                       output_names, timeout_s)
  _postprocess_classification(signature, num_examples, values, response.result)
  return response


def regress(servable: _Servable, request: regression_pb2.RegressionRequest,
            timeout_s: Optional[float] = None
           ) -> regression_pb2.RegressionResponse:
  """Runs a RegressionRequest like TF Serving's RunRegress.

  Args:
    servable: The resolved model version.
    request: Examples in `input.example_list[_with_context]`.
    timeout_s: Optional runtime deadline.

  Returns:
    The RegressionResponse.

  Raises:
    ServingError: unknown or non-regress signature, empty input, bad outputs.
  """
  signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
  signature = _find_signature(servable, signature_name, REGRESS_METHOD,
                              'regression')
  input_name, output_names = _preprocess_regression(signature)
  response = regression_pb2.RegressionResponse()
  make_model_spec(request.model_spec.name, signature_name, servable.version,
                  response.model_spec)
  num_examples, values = _run_examples(servable, request.input, [input_name],
                                       output_names, timeout_s)
  _postprocess_regression(signature, num_examples, values, response.result)
  return response


def multi_inference(servable: _Servable,
                    request: inference_pb2.MultiInferenceRequest,
                    timeout_s: Optional[float] = None
                   ) -> inference_pb2.MultiInferenceResponse:
  """Runs classify/regress tasks on one input like TF Serving's MultiInference.

  Args:
    servable: The version resolved from the first task's model_spec.
    request: Tasks (same model, distinct signatures) and one shared input.
    timeout_s: Optional runtime deadline.

  Returns:
    One result per task, in task order.

  Raises:
    ServingError: inconsistent tasks, unsupported methods, bad signatures.
  """
  model_name = ''
  input_names = set()
  signature_names = set()
  output_names = set()
  plan = []
  for task in request.tasks:
    if not task.model_spec.name:
      raise serving_error.invalid_argument(
          'Found ModelSpec with an empty model name.')
    if not model_name:
      model_name = task.model_spec.name
    elif model_name != task.model_spec.name:
      raise serving_error.invalid_argument(
          'All ModelSpecs in a MultiInferenceRequest must access the same '
          f'model name. Got {model_name} and {task.model_spec.name}.')
    signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
    if signature_name in signature_names:
      raise serving_error.invalid_argument(
          f'Duplicate evaluation of signature: {signature_name}')
    signature_names.add(signature_name)
    signature = servable.signatures.get(signature_name)
    if signature is None:
      raise serving_error.invalid_argument(
          'Requested signature not found in model graph: '
          f'{signature_name}. Signatures: {{{_join(servable.signatures)}}}.')
    if task.method_name == CLASSIFY_METHOD:
      task_input, task_outputs = _preprocess_classification(signature)
    elif task.method_name == REGRESS_METHOD:
      task_input, task_outputs = _preprocess_regression(signature)
    else:
      raise serving_error.unimplemented(
          f'Unsupported signature method_name: {task.method_name}. Expected '
          f'{CLASSIFY_METHOD} or {REGRESS_METHOD}.')
    # Since 2020 TF Serving feeds the examples to each task's own input
    # tensor, so tasks need not share one.
    input_names.add(task_input)
    output_names.update(task_outputs)
    plan.append((task, signature_name, signature))

  num_examples, values = _run_examples(servable, request.input, input_names,
                                       sorted(output_names), timeout_s)
  response = inference_pb2.MultiInferenceResponse()
  for task, signature_name, signature in plan:
    result = response.results.add()
    if task.method_name == CLASSIFY_METHOD:
      _postprocess_classification(signature, num_examples, values,
                                  result.classification_result)
    else:
      _postprocess_regression(signature, num_examples, values,
                              result.regression_result)
    make_model_spec(task.model_spec.name, signature_name, servable.version,
                    result.model_spec)
  return response


def validate_metadata_request(
    request: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
  """Checks metadata_field like TF Serving's ValidateGetModelMetadataRequest.

  Args:
    request: The request.

  Raises:
    ServingError: no field or an unsupported field (INVALID_ARGUMENT).
  """
  if not request.metadata_field:
    raise serving_error.invalid_argument(
        'GetModelMetadataRequest must specify at least one metadata_field. '
        f'Supported: {{{SIGNATURE_DEF_FIELD}}}.')
  for field in request.metadata_field:
    if field != SIGNATURE_DEF_FIELD:
      raise serving_error.invalid_argument(
          f'Metadata field {field} is not supported. Supported: '
          f'{{{SIGNATURE_DEF_FIELD}}}.')


def get_model_metadata(
    servable: _Servable,
    request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
  """Returns the packed SignatureDefMap of a servable.

  Args:
    servable: The resolved model version.
    request: A request already checked by `validate_metadata_request`.

  Returns:
    The response with model_spec (name, version) and metadata.
  """
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.name = request.model_spec.name
  response.model_spec.version.value = servable.version
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for name, signature in servable.signatures.items():
    signature_map.signature_def[name].CopyFrom(signature)
  response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
  return response
