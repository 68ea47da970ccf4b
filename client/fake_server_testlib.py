"""A small in-process PredictionService for fast client unit tests.

It serves one model, "toy", at versions 1 and 2 (2 is the latest), with:

  scale     predict   x float32[-1,3] -> y = version * x, n = int64[batch]
                      (the row count), tag = string[batch] ("v<version>")
  blob      predict   data: unknown rank (no sample possible)
  cls       classify  feature "f" (floats) -> classes ["lo", "hi"],
                      scores [1 - mean(f), mean(f)]
  reg       regress   feature "f" (floats) -> sum(f) * version

Other model names answer NOT_FOUND like TF Serving. `fail_next(code, n)`
makes the next n calls fail with `code`. Every call is counted by method.
The end-to-end tests (tests/client_e2e_test.py) use the project's real server.
"""

import collections
import concurrent.futures
import threading
from typing import Dict

from absl.testing import parameterized
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from client import client_lib

MODEL_NAME = "toy"
VERSIONS = (1, 2)


def _tensor_info(name, dtype, dims):
  info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype)
  if dims is None:
    info.tensor_shape.unknown_rank = True
  else:
    info.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
  return info


def signature_defs() -> Dict[str, meta_graph_pb2.SignatureDef]:
  """The toy model's signatures."""
  return {
      "scale": meta_graph_pb2.SignatureDef(
          method_name="tensorflow/serving/predict",
          inputs={"x": _tensor_info("scale/x:0", types_pb2.DT_FLOAT, [-1, 3])},
          outputs={
              "y": _tensor_info("scale/y:0", types_pb2.DT_FLOAT, [-1, 3]),
              "n": _tensor_info("scale/n:0", types_pb2.DT_INT64, [-1]),
              "tag": _tensor_info("scale/tag:0", types_pb2.DT_STRING, [-1]),
          }),
      "blob": meta_graph_pb2.SignatureDef(
          method_name="tensorflow/serving/predict",
          inputs={"data": _tensor_info("blob/data:0", types_pb2.DT_FLOAT,
                                       None)},
          outputs={"sum": _tensor_info("blob/sum:0", types_pb2.DT_FLOAT, [])}),
      "cls": meta_graph_pb2.SignatureDef(
          method_name="tensorflow/serving/classify",
          inputs={"inputs": _tensor_info("cls/in:0", types_pb2.DT_STRING,
                                         [-1])},
          outputs={
              "classes": _tensor_info("cls/c:0", types_pb2.DT_STRING, [-1, 2]),
              "scores": _tensor_info("cls/s:0", types_pb2.DT_FLOAT, [-1, 2]),
          }),
      "reg": meta_graph_pb2.SignatureDef(
          method_name="tensorflow/serving/regress",
          inputs={"inputs": _tensor_info("reg/in:0", types_pb2.DT_STRING,
                                         [-1])},
          outputs={"outputs": _tensor_info("reg/out:0", types_pb2.DT_FLOAT,
                                           [-1])}),
  }


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """The toy model's PredictionService."""

  def __init__(self):
    self.calls = collections.Counter()
    self._lock = threading.Lock()
    self._fail_code = None
    self._fail_left = 0

  def fail_next(self, code: grpc.StatusCode, n: int) -> None:
    with self._lock:
      self._fail_code, self._fail_left = code, n

  def _resolve(self, method, model_spec, context):
    with self._lock:
      self.calls[method] += 1
      if self._fail_left > 0:
        self._fail_left -= 1
        context.abort(self._fail_code, "injected failure")
    if model_spec.name != MODEL_NAME:
      context.abort(
          grpc.StatusCode.NOT_FOUND,
          f"Servable not found for request: Latest({model_spec.name})")
    if model_spec.HasField("version"):
      version = model_spec.version.value
      if version not in VERSIONS:
        context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"Servable not found for request: Specific({model_spec.name}, "
            f"{version})")
    elif model_spec.version_label:
      if model_spec.version_label != "stable":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"Unrecognized servable version label: "
                      f"{model_spec.version_label}")
      version = 1
    else:
      version = VERSIONS[-1]
    signature = model_spec.signature_name or "serving_default"
    if method != "GetModelMetadata" and signature not in signature_defs():
      context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                    f"Serving signature key \"{signature}\" not found.")
    return version, signature

  def GetModelMetadata(self, request, context):
    version, _ = self._resolve("GetModelMetadata", request.model_spec, context)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in signature_defs().items():
      signature_map.signature_def[name].CopyFrom(sig)
    response.metadata["signature_def"].Pack(signature_map)
    return response

  def Predict(self, request, context):
    version, signature = self._resolve("Predict", request.model_spec, context)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature
    if signature != "scale" or set(request.inputs) != {"x"}:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"bad inputs {sorted(request.inputs)} for {signature}")
    x = tf.make_ndarray(request.inputs["x"])
    outputs = {"y": (x * version).astype(np.float32),
               "n": np.array([x.shape[0]] * x.shape[0], dtype=np.int64),
               "tag": np.array([f"v{version}".encode()] * x.shape[0],
                               dtype=object)}
    for alias, value in outputs.items():
      if not request.output_filter or alias in request.output_filter:
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response

  @staticmethod
  def _means(request):
    means = []
    for example in request.input.example_list.examples:
      values = list(example.features.feature["f"].float_list.value)
      means.append((sum(values), float(np.mean(values)) if values else 0.0))
    return means

  def Classify(self, request, context):
    version, _ = self._resolve("Classify", request.model_spec, context)
    response = classification_pb2.ClassificationResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    for _, mean in self._means(request):
      row = response.result.classifications.add()
      row.classes.add(label="lo", score=1 - mean)
      row.classes.add(label="hi", score=mean)
    return response

  def Regress(self, request, context):
    version, _ = self._resolve("Regress", request.model_spec, context)
    response = regression_pb2.RegressionResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    for total, _ in self._means(request):
      response.result.regressions.add(value=total * version)
    return response


class FakeServer:
  """Starts the toy PredictionService on a free local port.

  Usage: `server = FakeServer(); self.addCleanup(server.stop)`.
  """

  def __init__(self):
    self.servicer = _Servicer()
    self._server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        self.servicer, self._server)
    self.port = self._server.add_insecure_port("127.0.0.1:0")
    if not self.port:
      raise RuntimeError("could not bind a local port for the fake server")
    self._server.start()
    self.address = f"127.0.0.1:{self.port}"

  def stop(self) -> None:
    self._server.stop(grace=None)


class ServerTestCase(parameterized.TestCase):
  """A test case with one FakeServer for the class and clients of it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.server = FakeServer()

  @classmethod
  def tearDownClass(cls):
    cls.server.stop()
    super().tearDownClass()

  def make_client(self, model_name: str = MODEL_NAME,
                  **kwargs) -> client_lib.ServingClient:
    """A client of the fake server, closed when the test ends."""
    kwargs.setdefault("timeout_s", 5.0)
    client = client_lib.ServingClient(self.server.address, model_name,
                                      **kwargs)
    self.addCleanup(client.close)
    return client
