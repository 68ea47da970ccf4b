"""Tests for report: the text and JSON of hand-built check and load reports."""

from absl.testing import absltest
import grpc
import numpy as np

from client import calls
from client import client_lib
from client import load_mode
from client import report


def _metadata():
  return client_lib.ModelMetadata("toy", 2, {"scale": None, "cls": None})


def _call_reports():
  ok = calls.CallReport(
      "scale", "predict",
      {"x": calls.InputInfo("float32", [1, 3], "sample")}, "Predict",
      client_lib.Result(
          "scale", "predict",
          {"y": np.array([[1.0, 2.5, 3.0]], np.float32),
           "tag": np.array([b"v2"], dtype=object)}, 2, 0.0123))
  failed = calls.CallReport("cls", "classify", {}, "Classify",
                            error_code="NOT_FOUND", error="NOT_FOUND: nope")
  return [ok, failed]


def _load_reports():
  return [
      load_mode.LoadReport("scale", "predict", 5,
                           [0.001, 0.002, 0.003, 0.004], 2.0,
                           {"UNAVAILABLE: gone": 1}, {"2": 4}),
      load_mode.LoadReport("cls", "classify", 5, [], 0.0, {}, {},
                           input_error="no features"),
  ]


class ReportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # No call is made: the reports read the client's name and address only.
    self.client = client_lib.ServingClient("localhost:1", "toy")
    self.addCleanup(self.client.close)

  def test_check_text(self):
    text = report.to_text(self.client, _metadata(), _call_reports(), [],
                          None, 2)
    self.assertEqual(text.splitlines(), [
        "model 'toy' at localhost:1: version 2, 2 signature(s)",
        "OK    scale  (predict)  12.3 ms  version 2",
        "        in   x                float32[1,3]     sample",
        "        out  y                float32[1,3]     [1, 2.5, ...]",
        "        out  tag              string[1]        ['v2']",
        "FAIL  cls  (classify)  NOT_FOUND: nope",
        "1 of 2 signature(s) answered.",
    ])

  def test_check_json(self):
    document = report.to_json(self.client, _metadata(), _call_reports(), [],
                              None, 2)
    self.assertFalse(document["ok"])
    self.assertEqual(
        (document["server"], document["protocol"], document["model_name"],
         document["model_version"], document["error"]),
        ("localhost:1", "grpc", "toy", 2, None))
    self.assertEqual(document["signatures"]["scale"], {
        "ok": True,
        "method": "predict",
        "model_version": 2,
        "latency_ms": 12.3,
        "rpc": "Predict",
        "inputs": {"x": {"dtype": "float32", "shape": [1, 3],
                         "source": "sample"}},
        "outputs": {
            "y": {"dtype": "float32", "shape": [1, 3], "values": [1.0, 2.5]},
            "tag": {"dtype": "string", "shape": [1], "values": ["v2"]},
        },
        "error": None,
    })
    self.assertEqual(document["signatures"]["cls"]["error"],
                     {"code": "NOT_FOUND", "message": "NOT_FOUND: nope"})
    self.assertNotIn("load", document)

  def test_load_text(self):
    text = report.to_text(self.client, _metadata(), [], _load_reports(), None,
                          2)
    self.assertEqual(text.splitlines()[1:], [
        "signature            requests failed     req/s   p50 ms   p90 ms"
        "   p99 ms  versions",
        "scale                       5      1       2.5     2.00     4.00"
        "     4.00  2:4",
        "    1 x UNAVAILABLE: gone",
        "cls                  not run: no features",
        "9 of 10 request(s) succeeded.",
    ])

  def test_load_json(self):
    document = report.to_json(self.client, _metadata(), [], _load_reports(),
                              None, 2)
    self.assertFalse(document["ok"])
    self.assertEqual(document["load"]["scale"], {
        "ok": False,
        "method": "predict",
        "requests": 5,
        "succeeded": 4,
        "failed": 1,
        "errors": {"UNAVAILABLE: gone": 1},
        "input_error": None,
        "model_versions": {"2": 4},
        "elapsed_s": 2.0,
        "throughput_rps": 2.5,
        "latency_ms": {"p50": 2.0, "p90": 4.0, "p99": 4.0, "mean": 2.5,
                       "max": 4.0},
    })
    self.assertEqual(document["load"]["cls"]["input_error"], "no features")
    self.assertEqual(document["load"]["cls"]["latency_ms"], {})

  def test_error(self):
    error = client_lib.RpcError("GetModelMetadata", grpc.StatusCode.NOT_FOUND,
                                "gone")
    self.assertEqual(
        report.to_text(self.client, None, [], [], error, 2),
        "error: model 'toy' at localhost:1: GetModelMetadata failed: "
        "NOT_FOUND: gone\n")
    document = report.to_json(self.client, None, [], [], error, 2)
    self.assertFalse(document["ok"])
    self.assertIsNone(document["model_version"])
    self.assertEqual(document["error"],
                     {"code": "NOT_FOUND",
                      "message": "GetModelMetadata failed: NOT_FOUND: gone"})

  def test_values_and_version_without_a_version(self):
    self.assertEqual(report.leading_values(np.array([[1, 2], [3, 4]]), 3),
                     [1, 2, 3])
    result = client_lib.Result("scale", "predict", {}, None, 0.001)
    entry = calls.CallReport("scale", "predict", {}, "Predict", result)
    text = report.to_text(self.client, _metadata(), [entry], [], None, 2)
    self.assertIn("OK    scale  (predict)  1.0 ms  version ?", text)


if __name__ == "__main__":
  absltest.main()
