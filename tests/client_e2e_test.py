"""End-to-end: //client against the project's server (or the real one).

Builds the bundled examples, publishes them as versions 1 and 2 of one merged
SavedModel (2 adds the signature hyaudio_2), serves both versions (version
label "stable" = 1) and checks the client binary and library against it:
every signature answered, JSON output, inputs from .npy/.npz/.json, the
classify and regress paths, pinned versions, an unknown model, an
unreachable server (at once, not after --timeout), load mode counts, bad
usage (one line, exit 2; --help exit 0), a clean stderr, and the README's
Python API section run from another directory. Two more servers run the same
bundle with --ssl_config_file (TLS, then mutual TLS) for the client's
--tls/--root_cert/--client_cert/--client_key, with certificates made by the
openssl tool at test time. One more serves a TF-Serving-shaped half_plus_two
(tests/testdata) whose classify/regress signatures require the feature `x`:
the client answers its 5 signatures with no flag but --server and
--model_name (features learned from the server's errors), and with
--model_base_path (features from the graph's ParseExample op).
"""

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import grpc
import numpy as np

from client import calls
from client import client_lib
from client import run_lib
from examples import demo_lib
from examples.digits import digits_model
from examples.regress import diabetes_model
from python.merge import merge_lib
from python.serve import launcher
from python.serve import tls_testlib
from tests.testdata import tf_serving_models

MODEL = "merged"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ log lines (severity, MMDD (0000 before absl::InitializeLog),
# ..., the C++ file and line).
_LOG_LINE = re.compile(r"(?m)^[IWEF]\d{4} .* [\w/]+\.(cc|h):\d+\] ")


def repo_root() -> str:
  """The import root: the runfiles tree under Bazel, else the checkout."""
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir and os.path.isdir(os.path.join(srcdir, "tf_serving_merge")):
    return os.path.join(srcdir, "tf_serving_merge")
  return _REPO_ROOT


def client_command() -> list:
  """The //client binary (Bazel runfiles), else its script on this Python."""
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir:
    binary = os.path.join(srcdir, "tf_serving_merge", "client", "client")
    if os.path.exists(binary):
      return [binary]
  return [sys.executable, os.path.join(_REPO_ROOT, "client", "client_main.py")]


def run_client_binary(*flags: str) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [_REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                      if p])
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # The binary's own default: quiet.
  return subprocess.run(client_command() + list(flags), capture_output=True,
                        text=True, env=env, timeout=300, check=False)


class ClientEndToEndTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.work = tempfile.mkdtemp(prefix="client_e2e_",
                                dir=absltest.get_default_test_tmpdir())
    examples_dir = os.path.join(cls.work, "examples")
    built = demo_lib.build_examples(examples_dir)
    cls.spec = built["spec"]
    cls.digits = built["digits"]
    cls.diabetes = built["diabetes"]
    cls.base = os.path.join(cls.work, "models", MODEL)
    merge_lib.merge_and_publish(built["spec"], cls.base, version=1)
    merge_lib.merge_and_publish(
        demo_lib.write_second_spec(examples_dir, built["spec"]), cls.base,
        version=2)
    config = os.path.join(cls.work, "models.config")
    with open(config, "w") as f:
      f.write(
          "model_config_list {\n  config {\n"
          f'    name: "{MODEL}"\n    base_path: "{cls.base}"\n'
          '    model_platform: "tensorflow"\n'
          "    model_version_policy { all {} }\n"
          '    version_labels { key: "stable" value: 1 }\n'
          "  }\n}\n")
    cls.server = launcher.ServerProcess(model_config_file=config,
                                        log_dir=cls.work)
    cls.server.start()
    cls.address = cls.server.address

  @classmethod
  def tearDownClass(cls):
    cls.server.stop()
    super().tearDownClass()

  def make_client(self, **kwargs):
    client = client_lib.ServingClient(self.address, MODEL, timeout_s=30.0,
                                      **kwargs)
    self.addCleanup(client.close)
    return client

  def run_in_process(self, client=None, **config):
    out, err = io.StringIO(), io.StringIO()
    code = run_lib.run(client or self.make_client(),
                       run_lib.RunConfig(**config), out, err)
    return code, out.getvalue(), err.getvalue()

  def test_binary_answers_every_signature_as_json(self):
    done = run_client_binary(f"--server={self.address}",
                             f"--model_name={MODEL}",
                             f"--model_base_path={self.base}",
                             "--format=json", "--batch_size=2")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertEqual(done.stderr, "")  # No TensorFlow chatter, no E0000.
    document = json.loads(done.stdout)
    self.assertTrue(document["ok"])
    self.assertEqual(document["model_version"], 2)
    signatures = document["signatures"]
    self.assertEqual(
        sorted(signatures),
        ["diabetes", "digits", "digits_classify", "hyaudio", "hyaudio_2",
         "serving_default"])
    for name, entry in signatures.items():
      self.assertTrue(entry["ok"], f"{name}: {entry['error']}")
      self.assertEqual(entry["model_version"], 2)
      self.assertGreater(entry["latency_ms"], 0)
    self.assertEqual(signatures["hyaudio"]["inputs"]["inputs"],
                     {"dtype": "float32", "shape": [2, 640],
                      "source": "sample"})
    probs = signatures["hyaudio"]["outputs"]["probs"]
    self.assertEqual((probs["dtype"], probs["shape"]), ("float32", [2, 10]))
    classes = signatures["digits_classify"]["outputs"]["classes"]
    self.assertEqual(classes["shape"], [2, 10])
    self.assertEqual(classes["values"][:3], ["0", "1", "2"])
    self.assertEqual(signatures["digits_classify"]["method"], "classify")
    self.assertEqual(signatures["diabetes"]["method"], "regress")
    self.assertEqual(signatures["diabetes"]["outputs"]["outputs"]["shape"], [2])
    # The merge wrote warmup records: the Examples come from there.
    for name in ("digits_classify", "diabetes"):
      inputs = signatures[name]["inputs"]["inputs"]
      self.assertEqual(inputs["features_from"], "warmup", name)
      self.assertIn(f"from the warmup records of {self.base}/2",
                    inputs["source"], name)
      self.assertEqual(inputs["shape"], [2], name)
      self.assertEqual(signatures[name]["rpc"],
                       "Classify" if name == "digits_classify" else "Regress")

  def test_inputs_from_npy_npz_and_json(self):
    images = np.load(self.digits.test_images)[:40]
    labels = np.load(self.digits.test_labels)[:40]
    tmp = self.create_tempdir().full_path
    np.save(os.path.join(tmp, "images.npy"), images)
    with open(os.path.join(tmp, "audio.json"), "w") as f:
      json.dump({"inputs": np.ones((3, 640)).tolist()}, f)
    code, out, err = self.run_in_process(
        signature_names=["digits", "hyaudio", "diabetes"],
        inputs=[f"images={tmp}/images.npy", f"hyaudio:{tmp}/audio.json",
                f"diabetes:{self.diabetes.test_features}"],
        output_format="json", max_values=1000)
    self.assertEqual(code, 0, out + err)
    signatures = json.loads(out)["signatures"]
    predicted = signatures["digits"]["outputs"]["classes"]["values"]
    self.assertLess(digits_model.error_rate(np.array(predicted), labels), 0.15)
    self.assertEqual(signatures["hyaudio"]["outputs"]["probs"]["shape"],
                     [3, 10])
    regressed = signatures["diabetes"]["outputs"]["outputs"]["values"]
    targets = np.load(self.diabetes.test_targets)
    self.assertAlmostEqual(diabetes_model.rmse(np.array(regressed), targets),
                           self.diabetes.test_rmse, places=2)
    for name in ("digits", "diabetes"):
      self.assertTrue(
          all(i["source"].startswith("file")
              for i in signatures[name]["inputs"].values()), name)
    # JSON numbers load as float64; what is shown is what is sent.
    self.assertEqual(signatures["hyaudio"]["inputs"]["inputs"],
                     {"dtype": "float32", "shape": [3, 640],
                      "source": "file (float64, sent as float32)"})
    self.assertEqual(signatures["digits"]["inputs"]["images"]["source"],
                     "file")

  def test_classify_agrees_with_predict(self):
    client = self.make_client()
    images = np.load(self.digits.test_images)
    labels = np.load(self.digits.test_labels)
    predicted = client.predict("digits", {"images": images})
    classified = client.classify("digits_classify",
                                 {digits_model.FEATURE: images})
    self.assertEqual(classified.outputs["scores"].shape, (len(images), 10))
    best = np.argmax(classified.outputs["scores"], axis=1)
    labels_of_best = [int(classified.outputs["classes"][i, b])
                      for i, b in enumerate(best)]
    np.testing.assert_array_equal(labels_of_best, predicted.outputs["classes"])
    self.assertAlmostEqual(
        digits_model.error_rate(predicted.outputs["classes"], labels),
        1 - self.digits.test_accuracy, places=6)
    np.testing.assert_allclose(classified.outputs["scores"],
                               predicted.outputs["probabilities"], atol=1e-5)

  def test_regress_matches_the_trained_model(self):
    with np.load(self.diabetes.test_features) as archive:
      features = {name: archive[name] for name in archive.files}
    result = self.make_client().regress("diabetes", features)
    self.assertEqual(result.outputs["outputs"].shape, (89,))
    self.assertAlmostEqual(
        diabetes_model.rmse(result.outputs["outputs"],
                            np.load(self.diabetes.test_targets)),
        self.diabetes.test_rmse, places=2)

  @parameterized.named_parameters(
      ("version_1", {"model_version": 1}, 1),
      ("label_stable", {"version_label": "stable"}, 1),
      ("version_2", {"model_version": 2}, 2),
      ("latest", {}, 2))
  def test_pinned_version(self, kwargs, version):
    client = self.make_client(**kwargs)
    metadata = client.metadata()
    self.assertEqual(metadata.version, version)
    self.assertEqual("hyaudio_2" in metadata.signatures, version == 2)
    code, out, err = self.run_in_process(client, output_format="json")
    self.assertEqual(code, 0, out + err)
    versions = {e["model_version"]
                for e in json.loads(out)["signatures"].values()}
    self.assertEqual(versions, {version})

  def test_binary_pins_version(self):
    done = run_client_binary(f"--server={self.address}",
                             f"--model_name={MODEL}",
                             "--model_version=1", "--signature_name=digits")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertRegex(done.stdout, r"OK +digits +\(predict\) .* version 1\n")

  def test_unknown_version_shows_not_found(self):
    code, _, err = self.run_in_process(self.make_client(model_version=7))
    self.assertEqual(code, 1)
    self.assertIn("NOT_FOUND", err)

  def test_binary_unknown_model_exits_1_with_not_found(self):
    done = run_client_binary(f"--server={self.address}", "--model_name=nope")
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    self.assertIn("error: model 'nope' at", done.stderr)
    self.assertIn("GetModelMetadata failed: NOT_FOUND:", done.stderr)
    self.assertIn("nope", done.stderr.split("NOT_FOUND:", 1)[1])

  def test_binary_unreachable_server_fails_at_once(self):
    address = f"127.0.0.1:{launcher.free_port()}"
    start = time.monotonic()
    done = run_client_binary(f"--server={address}", f"--model_name={MODEL}",
                             "--timeout=120", "--format=json")
    elapsed = time.monotonic() - start
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    error = json.loads(done.stdout)["error"]
    self.assertEqual(error["code"], "UNAVAILABLE")
    self.assertIn(f"could not reach the server at {address} (1 attempt;",
                  error["message"])
    # Far below --timeout: the process (TensorFlow import included) ends as
    # soon as the one connection attempt is refused.
    self.assertLess(elapsed, 60)
    # In process, the call itself takes well under a second.
    client = client_lib.ServingClient(address, MODEL, timeout_s=120.0)
    self.addCleanup(client.close)
    start = time.monotonic()
    with self.assertRaises(client_lib.ConnectError):
      client.metadata()
    self.assertLess(time.monotonic() - start, 2)

  def test_binary_unknown_signature_names_the_model_once(self):
    done = run_client_binary(f"--server={self.address}",
                             f"--model_name={MODEL}", "--signature_name=digitz")
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    self.assertEqual(done.stderr.count(f"model {MODEL!r} at {self.address}"),
                     1, done.stderr)
    self.assertStartsWith(
        done.stderr, f"error: model {MODEL!r} at {self.address} has no "
        "signature 'digitz' (--signature_name)")
    self.assertIn("Did you mean 'digits'?", done.stderr)

  def test_binary_help_exits_0(self):
    done = run_client_binary("--help")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn("--model_base_path", done.stdout)
    self.assertNotRegex(done.stderr, _LOG_LINE)

  def test_readme_python_api_runs_from_another_directory(self):
    """The README's Python API section, as a user would run it."""
    with open(os.path.join(repo_root(), "README.md"), encoding="utf-8") as f:
      readme = f.read()
    section = readme.split("### Python API", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    self.assertNotEmpty(blocks, "no ```python block in ### Python API")
    work = self.create_tempdir().full_path
    base = os.path.join(work, "models", "merged")
    script = "\n".join(blocks)
    for placeholder, value in (("/data/merge.toml", self.spec),
                               ("/models/merged", base),
                               ("localhost:8500", self.address)):
      self.assertIn(placeholder, script)
      script = script.replace(placeholder, value)
    # The README's instructions: its interpreter (the Bazel venv, which runs
    # this test), the repository as the import root, any directory.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": repo_root(),
           "HOME": os.environ.get("HOME", work)}
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertTrue(os.path.isdir(os.path.join(base, "1")), done.stdout)
    self.assertIn("digits", done.stdout)
    self.assertNotRegex(done.stderr, _LOG_LINE)
    self.assertNotIn("E0000", done.stderr)

  def start_tls_server(self, client_verify: bool) -> launcher.ServerProcess:
    """Serves the bundle over TLS (mutual TLS with client_verify)."""
    if not hasattr(self, "certs"):  # Made once, kept for the whole class.
      certs_dir = os.path.join(self.work, "certs")
      os.makedirs(certs_dir, exist_ok=True)
      type(self).certs = tls_testlib.make_certificates(certs_dir)
    certs = self.certs
    config = self.create_tempfile(
        content=tls_testlib.ssl_config_text(certs, client_verify)).full_path
    read = tls_testlib.read
    credentials = grpc.ssl_channel_credentials(
        read(certs.ca_cert),
        private_key=read(certs.client_key) if client_verify else None,
        certificate_chain=read(certs.client_cert) if client_verify else None)
    server = launcher.ServerProcess(
        MODEL, self.base, extra_flags=[f"--ssl_config_file={config}"],
        log_dir=self.create_tempdir().full_path,
        channel_credentials=credentials)
    server.start()
    self.addCleanup(server.stop)
    return server

  def test_binary_over_tls(self):
    server = self.start_tls_server(client_verify=False)
    done = run_client_binary(f"--server={server.address}",
                             f"--model_name={MODEL}", "--signature_name=digits",
                             "--tls", f"--root_cert={self.certs.ca_cert}")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertRegex(done.stdout, r"OK +digits +\(predict\) .* version 2\n")
    # A plaintext client cannot talk to a TLS port.
    code, _, err = self.run_in_process(
        client_lib.ServingClient(server.address, MODEL, timeout_s=3.0),
        signature_names=["digits"])
    self.assertEqual(code, 1)
    self.assertIn("UNAVAILABLE", err)

  def test_binary_over_mutual_tls(self):
    server = self.start_tls_server(client_verify=True)
    certs = self.certs
    done = run_client_binary(
        f"--server={server.address}", f"--model_name={MODEL}",
        "--signature_name=diabetes", "--tls", f"--root_cert={certs.ca_cert}",
        f"--client_cert={certs.client_cert}",
        f"--client_key={certs.client_key}")
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertRegex(done.stdout,
                     r"OK +diabetes +\(regress\) .* version 2\n")
    # Without a client certificate, or with one from another CA: refused.
    read = tls_testlib.read
    for name, key, cert in (
        ("no client certificate", None, None),
        ("rogue client certificate", read(certs.rogue_client_key),
         read(certs.rogue_client_cert))):
      client = client_lib.ServingClient(
          server.address, MODEL, timeout_s=3.0, tls=True,
          root_cert=read(certs.ca_cert), client_key=key, client_cert=cert)
      code, _, err = self.run_in_process(client, signature_names=["digits"])
      self.assertEqual(code, 1, name)
      self.assertIn("UNAVAILABLE", err, name)
      self.assertIn("--client_cert/--client_key are given when the server "
                    "verifies clients", err, name)

  @parameterized.named_parameters(
      ("pickle_input", ["--input=images=/no/such/file.pkl"],
       "pickle files are refused"),
      ("version_and_label", ["--model_version=1", "--version_label=stable"],
       "model_version"),
      ("unknown_flag", ["--modle_version=1"], "modle_version"))
  def test_binary_bad_usage_exits_2_in_one_line(self, flags, message):
    done = run_client_binary(f"--server={self.address}",
                             f"--model_name={MODEL}", *flags)
    self.assertEqual(done.returncode, 2, done.stderr[-3000:])
    lines = done.stderr.splitlines()
    self.assertLen(lines, 2, done.stderr)  # No help text above the error.
    self.assertStartsWith(lines[0], "error: ")
    self.assertIn(message, lines[0])
    self.assertEqual(lines[1], "Run with --help to see the flags.")

  def test_unknown_signature_lists_the_models_signatures(self):
    code, _, err = self.run_in_process(signature_names=["digit"])
    self.assertEqual(code, 1)
    self.assertIn("has no signature 'digit' (--signature_name); it has: "
                  "diabetes, digits, digits_classify, hyaudio, hyaudio_2, "
                  "serving_default. Did you mean 'digits'?", err)

  def test_load_mode_counts_exactly_n_requests_per_signature(self):
    code, out, err = self.run_in_process(
        signature_names=["digits", "digits_classify", "diabetes"],
        requests=37, concurrency=3, output_format="json")
    self.assertEqual(code, 0, out + err)
    load = json.loads(out)["load"]
    self.assertEqual(sorted(load), ["diabetes", "digits", "digits_classify"])
    for name, entry in load.items():
      self.assertEqual((entry["requests"], entry["succeeded"],
                        entry["failed"]), (37, 37, 0), name)
      self.assertEqual(entry["model_versions"], {"2": 37})
      latency = entry["latency_ms"]
      self.assertLessEqual(latency["p50"], latency["p90"])
      self.assertLessEqual(latency["p90"], latency["p99"])
    self.assertIn("digits_classify [", err)  # The progress bar.



class HalfPlusTwoTest(parameterized.TestCase):
  """TF-Serving-shaped half_plus_two bundles: `x` required by the parsers.

  One server serves the TF1 bundle (5 signatures; v1 ParseExample in its
  classify/regress signatures) and the TF2 one (6 predict signatures, three
  of which parse serialized Examples with ParseExampleV2 inside functions).
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    work = tempfile.mkdtemp(prefix="half_plus_two_",
                            dir=absltest.get_default_test_tmpdir())
    cls.base = os.path.join(work, "half_plus_two")
    tf_serving_models.write_half_plus_two(cls.base)
    cls.tf2_base = os.path.join(work, "half_plus_two_tf2")
    tf_serving_models.write_half_plus_two_tf2(cls.tf2_base)
    config = tf_serving_models.write_model_config(
        os.path.join(work, "models.config"),
        {"half_plus_two": cls.base, "half_plus_two_tf2": cls.tf2_base})
    cls.rest_port = launcher.free_port()
    cls.server = launcher.ServerProcess(
        model_config_file=config, log_dir=work,
        extra_flags=[f"--rest_api_port={cls.rest_port}"])
    cls.server.start()

  @classmethod
  def tearDownClass(cls):
    cls.server.stop()
    super().tearDownClass()

  def run_binary(self, *flags, model="half_plus_two", server=None):
    done = run_client_binary(f"--server={server or self.server.address}",
                             f"--model_name={model}", "--format=json",
                             *flags)
    return done, json.loads(done.stdout) if done.stdout else None

  @parameterized.named_parameters(
      ("tf1", "half_plus_two", tf_serving_models.HALF_PLUS_TWO_SIGNATURES),
      ("tf2", "half_plus_two_tf2",
       tf_serving_models.HALF_PLUS_TWO_TF2_SIGNATURES))
  def test_rest_gives_the_grpc_report(self, model, names):
    """--protocol=rest: every signature answers, with gRPC's values."""
    _, grpc_document = self.run_binary("--batch_size=2", model=model)
    done, document = self.run_binary(
        "--protocol=rest", "--batch_size=2", model=model,
        server=f"127.0.0.1:{self.rest_port}")
    self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr)
    self.assertEqual(document["protocol"], "rest")
    self.assertEqual(document["model_version"], tf_serving_models.VERSION)
    self.assertEqual(sorted(document["signatures"]), sorted(names))
    for name, entry in document["signatures"].items():
      want = grpc_document["signatures"][name]
      self.assertTrue(entry["ok"], f"{name}: {entry['error']}")
      self.assertEqual(entry["rpc"], want["rpc"], name)
      self.assertIsNone(entry["model_version"], name)  # REST names none.
      self.assertEqual(entry["outputs"], want["outputs"], name)
      self.assertEqual(entry["inputs"], want["inputs"], name)

  def test_rest_errors_carry_the_grpc_code(self):
    done, document = self.run_binary(
        "--protocol=rest", model="nope", server=f"127.0.0.1:{self.rest_port}")
    self.assertEqual(done.returncode, 1)
    self.assertFalse(document["ok"])
    self.assertEqual(document["error"]["code"], "NOT_FOUND")
    done, document = self.run_binary(
        "--protocol=rest", "--model_version=7",
        server=f"127.0.0.1:{self.rest_port}")
    self.assertEqual(done.returncode, 1, done.stdout)
    self.assertEqual(document["error"]["code"], "NOT_FOUND")

  def test_rest_with_tls_is_a_usage_error(self):
    done = run_client_binary("--protocol=rest", "--tls",
                             f"--server=127.0.0.1:{self.rest_port}",
                             "--model_name=half_plus_two")
    self.assertEqual(done.returncode, 2)
    self.assertIn("--tls needs --protocol=grpc", done.stderr)

  def assert_five_of_five(self, done, document, features_from: str):
    self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr)
    self.assertEqual(done.stderr, "")  # Clean: no log lines, no E0000.
    signatures = document["signatures"]
    self.assertEqual(sorted(signatures),
                     sorted(tf_serving_models.HALF_PLUS_TWO_SIGNATURES))
    for name, entry in signatures.items():
      self.assertTrue(entry["ok"], f"{name}: {entry['error']}")
      self.assertEqual(entry["model_version"], tf_serving_models.VERSION)
    for name in ("classify_x_to_y", "regress_x_to_y", "regress_x_to_y2"):
      inputs = signatures[name]["inputs"]["inputs"]
      self.assertEqual(inputs["features_from"], features_from, name)
      self.assertEqual(inputs["features"]["x"], "float32[1]", name)
    # Its input is the float x2, not serialized Examples: sent as Predict.
    self.assertEqual(signatures["regress_x2_to_y3"]["rpc"], "Predict")
    self.assertEqual(signatures["regress_x2_to_y3"]["method"], "regress")
    self.assertEqual(signatures["classify_x_to_y"]["rpc"], "Classify")
    return signatures

  def test_only_server_and_model_name_learns_from_the_server(self):
    done, document = self.run_binary()
    signatures = self.assert_five_of_five(done, document, "server")
    source = signatures["regress_x_to_y"]["inputs"]["inputs"]["source"]
    self.assertEqual(
        source, "features x float32[1] learned from the server's "
        "INVALID_ARGUMENT answers (1 retry)")

  def test_readable_base_path_reads_the_graph(self):
    done, document = self.run_binary(f"--model_base_path={self.base}")
    signatures = self.assert_five_of_five(done, document, "graph")
    inputs = signatures["regress_x_to_y"]["inputs"]["inputs"]
    self.assertIn("from the graph's ParseExample op 'ParseExample' in "
                  f"{self.base}/{tf_serving_models.VERSION_DIR}",
                  inputs["source"])
    self.assertEqual(inputs["features"], {"x": "float32[1]",
                                          "x2": "float32[1]"})

  @parameterized.named_parameters(("from_the_server", False, "server"),
                                  ("from_the_graph", True, "graph"))
  def test_tf2_predict_signatures_get_serialized_examples(
      self, with_base_path, features_from):
    flags = [f"--model_base_path={self.tf2_base}"] if with_base_path else []
    done, document = self.run_binary(*flags, "--batch_size=2",
                                     model="half_plus_two_tf2")
    self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr)
    self.assertEqual(done.stderr, "")
    signatures = document["signatures"]
    self.assertEqual(sorted(signatures),
                     sorted(tf_serving_models.HALF_PLUS_TWO_TF2_SIGNATURES))
    for name, entry in signatures.items():
      self.assertTrue(entry["ok"], f"{name}: {entry['error']}")
      self.assertEqual(entry["rpc"], "Predict", name)
    for name in ("classify_x_to_y", "regress_x_to_y", "regress_x_to_y2"):
      inputs = signatures[name]["inputs"]["inputs"]
      self.assertEqual(inputs["dtype"], "tf.Example", name)
      self.assertEqual(inputs["shape"], [2], name)
      self.assertEqual(inputs["features_from"], features_from, name)
      self.assertEqual(inputs["features"]["x"], "float32[1]", name)
      self.assertStartsWith(inputs["source"], "serialized tf.Examples, ")
      self.assertEqual(
          signatures[name]["outputs"][
              "scores" if name.startswith("classify") else "outputs"]["shape"],
          [2, 1], name)
    self.assertEqual(signatures["serving_default"]["inputs"]["x"]["source"],
                     "sample")

  def test_answers_follow_the_model(self):
    # y = 0.5 * x + 2 on the Examples the client built from the graph.
    client = client_lib.ServingClient(self.server.address, "half_plus_two",
                                      timeout_s=30.0)
    self.addCleanup(client.close)
    signature = client.signature("regress_x_to_y")
    info = {}
    result, examples = calls.call_with_learned_examples(
        client, signature, 4, None, "", 10, info)
    x = np.array([e.features.feature["x"].float_list.value[0]
                  for e in examples])
    np.testing.assert_allclose(result.outputs["outputs"], 0.5 * x + 2,
                               rtol=1e-6)

  def test_retries_are_bounded(self):
    done, document = self.run_binary("--max_feature_retries=0",
                                     "--signature_name=regress_x_to_y")
    self.assertEqual(done.returncode, 1, done.stderr)
    entry = document["signatures"]["regress_x_to_y"]
    self.assertEqual(entry["error"]["code"], "INVALID_ARGUMENT")
    self.assertIn("Feature: x (data type: float) is required",
                  entry["error"]["message"])
    self.assertEqual(entry["inputs"]["inputs"]["source"],
                     "empty tf.Examples; not resent: --max_feature_retries=0 "
                     "reached")

  def test_unreadable_base_path_falls_back_to_the_server(self):
    done, document = self.run_binary("--model_base_path=/no/such/base",
                                     "--signature_name=classify_x_to_y")
    self.assertEqual(done.returncode, 0, done.stderr)
    inputs = document["signatures"]["classify_x_to_y"]["inputs"]["inputs"]
    self.assertEqual(inputs["features_from"], "server")
    self.assertIn("(--model_base_path not used: cannot list the model base "
                  "path /no/such/base", inputs["source"])


if __name__ == "__main__":
  absltest.main()
