"""Tests for run_lib (check and load modes, reports) with a fake server."""

import io
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from client import client_lib
from client import fake_server_testlib
from client import run_lib


class PercentileTest(parameterized.TestCase):

  @parameterized.parameters((50, 5), (90, 9), (99, 10), (100, 10), (1, 1))
  def test_nearest_rank(self, p, expected):
    self.assertEqual(run_lib.percentile(list(range(10, 0, -1)), p), expected)

  def test_empty(self):
    with self.assertRaisesRegex(ValueError, "no values"):
      run_lib.percentile([], 50)


class ProgressBarTest(absltest.TestCase):

  def test_non_tty_prints_quarters_and_final_count(self):
    stream = io.StringIO()
    bar = run_lib.ProgressBar("sig", 8, stream, width=8)
    for _ in range(8):
      bar.advance()
    bar.close()
    lines = stream.getvalue().splitlines()
    self.assertEqual(lines[-1], "sig [########] 8/8")
    self.assertLessEqual(len(lines), 5)


class RunTest(fake_server_testlib.ServerTestCase):

  def run_client(self, model_name="toy", **config):
    client = self.make_client(model_name)
    out, err = io.StringIO(), io.StringIO()
    code = run_lib.run(client, run_lib.RunConfig(**config), out, err)
    return code, out.getvalue(), err.getvalue()

  def test_text_reports_each_signature_and_fails_on_unknown_rank(self):
    code, out, _ = self.run_client()
    self.assertEqual(code, 1)  # "blob" has an input of unknown rank.
    self.assertIn("model 'toy' at", out)
    self.assertIn("version 2, 4 signature(s)", out)
    self.assertRegex(out, r"OK    scale  \(predict\)  [\d.]+ ms  version 2")
    self.assertRegex(out, r"out  y +float32\[1,3\]")
    self.assertRegex(out, r"FAIL  blob  \(predict\)  input 'data'.*unknown "
                     "rank")
    self.assertIn("3 of 4 signature(s) answered.", out)

  def test_json_with_inputs_from_files(self):
    tmp = self.create_tempdir().full_path
    np.save(os.path.join(tmp, "x.npy"), np.ones((2, 3), np.float32))
    np.savez(os.path.join(tmp, "f.npz"), f=np.array([[2.0], [4.0]]))
    code, out, _ = self.run_client(
        signature_names=["scale", "reg", "cls"], output_format="json",
        inputs=[f"x={tmp}/x.npy", f"reg:f={tmp}/f.npz"], max_values=3)
    self.assertEqual(code, 0, out)
    document = json.loads(out)
    self.assertTrue(document["ok"])
    self.assertEqual(list(document["signatures"]), ["scale", "reg", "cls"])
    scale = document["signatures"]["scale"]
    self.assertEqual(scale["inputs"]["x"],
                     {"dtype": "float32", "shape": [2, 3], "source": "file"})
    self.assertEqual(scale["outputs"]["y"],
                     {"dtype": "float32", "shape": [2, 3],
                      "values": [2.0, 2.0, 2.0]})
    self.assertEqual(scale["outputs"]["tag"]["values"], ["v2", "v2"])
    self.assertGreater(scale["latency_ms"], 0)
    self.assertEqual(document["signatures"]["reg"]["outputs"]["outputs"]
                     ["values"], [4.0, 8.0])
    cls = document["signatures"]["cls"]
    self.assertEqual(cls["outputs"]["classes"]["shape"], [1, 2])
    self.assertIn("empty tf.Examples", cls["inputs"]["inputs"]["source"])

  def test_unknown_model_reports_not_found(self):
    code, out, err = self.run_client(model_name="nope")
    self.assertEqual(code, 1)
    self.assertEqual(out, "")
    self.assertIn("NOT_FOUND: Servable not found for request: Latest(nope)",
                  err)

  def test_unknown_model_json(self):
    code, out, _ = self.run_client(model_name="nope", output_format="json")
    self.assertEqual(code, 1)
    document = json.loads(out)
    self.assertFalse(document["ok"])
    self.assertEqual(document["error"]["code"], "NOT_FOUND")

  def test_unknown_signature_name_lists_choices(self):
    code, _, err = self.run_client(signature_names=["scal"])
    self.assertEqual(code, 1)
    self.assertIn("has no signature 'scal' (--signature_name); it has: blob, "
                  "cls, reg, scale. Did you mean 'scale'?", err)

  def test_input_matching_no_signature_is_an_error(self):
    tmp = self.create_tempdir().full_path
    np.save(os.path.join(tmp, "q.npy"), np.ones(1))
    code, _, err = self.run_client(signature_names=["scale"],
                                   inputs=[f"q={tmp}/q.npy"])
    self.assertEqual(code, 1)
    self.assertIn("--input 'q'", err)
    self.assertIn("matches no input of the signatures being run; their "
                  "inputs are: x", err)

  @parameterized.parameters((7, 1), (25, 4))
  def test_load_mode_sends_exactly_n_requests_per_signature(
      self, requests, concurrency):
    calls = self.server.servicer.calls
    before = (calls["Predict"], calls["Regress"])
    code, out, err = self.run_client(
        signature_names=["scale", "reg"], requests=requests,
        concurrency=concurrency, output_format="json")
    self.assertEqual(code, 0, out)
    self.assertEqual((calls["Predict"] - before[0],
                      calls["Regress"] - before[1]), (requests, requests))
    document = json.loads(out)
    for name in ("scale", "reg"):
      load = document["load"][name]
      self.assertEqual((load["requests"], load["succeeded"], load["failed"]),
                       (requests, requests, 0))
      self.assertEqual(load["model_versions"], {"2": requests})
      self.assertLessEqual(load["latency_ms"]["p50"], load["latency_ms"]["p99"])
    self.assertIn(f"scale [{'#' * 30}] {requests}/{requests}", err)

  def test_load_mode_counts_failures_and_exits_1(self):
    client = client_lib.ServingClient(self.server.address, "toy",
                                      timeout_s=5.0)
    self.addCleanup(client.close)
    client.metadata()  # Cached: the injected failures hit Predict only.
    self.server.servicer.fail_next(
        fake_server_testlib.grpc.StatusCode.RESOURCE_EXHAUSTED, 3)
    out = io.StringIO()
    code = run_lib.run(
        client, run_lib.RunConfig(signature_names=["scale"], requests=10,
                                  concurrency=2, progress=False), out)
    self.assertEqual(code, 1)
    self.assertRegex(out.getvalue(), r"scale +10 +3 ")
    self.assertIn("3 x RESOURCE_EXHAUSTED: injected failure", out.getvalue())
    self.assertIn("7 of 10 request(s) succeeded.", out.getvalue())

if __name__ == "__main__":
  absltest.main()
