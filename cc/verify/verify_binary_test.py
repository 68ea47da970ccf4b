"""Black-box tests of //cc/verify: exit codes, messages and --json on bundles.

Bundles are written once per test class with cc/verify/testdata/bundles.py,
then copied and broken per test (truncated saved_model.pb, variables removed,
a signature naming a missing tensor or the wrong dtype, a corrupt warmup file,
a missing tag-set, ...).

  bazel test //cc/verify:verify_binary_test
"""

import json
import os
import shutil
import subprocess
import time
from typing import Any, Callable

from absl.testing import absltest
from absl.testing import parameterized

from cc.verify.testdata import bundles
import tensorflow as tf
from tests.testdata import tf_serving_models
from tensorflow.core.protobuf import saved_model_pb2

_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_USAGE = 2


def _verifier_path() -> str:
  """The verifier binary: from runfiles under Bazel, else $VERIFY_BINARY."""
  if "VERIFY_BINARY" in os.environ:
    return os.environ["VERIFY_BINARY"]
  runfiles = os.environ.get("TEST_SRCDIR")
  if not runfiles:
    raise RuntimeError("run under `bazel test`, or set VERIFY_BINARY to the "
                       "verify binary")
  return os.path.join(runfiles, os.environ.get("TEST_WORKSPACE",
                                               "tf_serving_merge"),
                      "cc", "verify", "verify")


class VerifyBinaryTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._base = absltest.get_default_test_tmpdir()
    cls._pristine = os.path.join(cls._base, "pristine")
    shutil.rmtree(cls._pristine, ignore_errors=True)
    cls._info = {}
    for kind, (write, warmup) in bundles.WRITERS.items():
      export_dir = os.path.join(cls._pristine, kind)
      cls._info[kind] = write(export_dir)
      if warmup is not None:
        warmup(export_dir)

  def _bundle(self, kind: str) -> str:
    """Returns a private copy of the pristine `kind` bundle."""
    path = os.path.join(self.create_tempdir().full_path, kind)
    shutil.copytree(os.path.join(self._pristine, kind), path)
    return path

  def _run(self, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([_verifier_path(), *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)

  def _run_json(self, export_dir: str, *args: str) -> tuple[int, Any]:
    proc = self._run(f"--export_dir={export_dir}", "--json", *args)
    try:
      report = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
      self.fail(f"--json output does not parse ({e}):\n{proc.stdout}\n"
                f"stderr:\n{proc.stderr[-3000:]}")
    return proc.returncode, report

  def _edit_saved_model(self, export_dir: str,
                        edit: Callable[[Any], None]) -> None:
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
      saved_model.ParseFromString(f.read())
    edit(saved_model.meta_graphs[0])
    with open(path, "wb") as f:
      f.write(saved_model.SerializeToString())

  # --- Good bundles -------------------------------------------------------

  @parameterized.named_parameters(
      ("tf1_smoke", "tf1", "smoke"),
      ("tf1_warmup", "tf1", "warmup"),
      ("tf2_smoke", "tf2", "smoke"),
      ("classify_regress_smoke", "classify_regress", "smoke"),
      ("classify_regress_warmup", "classify_regress", "warmup"),
  )
  def test_good_bundle_passes_with_json_report(self, kind, run):
    export_dir = os.path.join(self._pristine, kind)
    code, report = self._run_json(export_dir, f"--run={run}")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertTrue(report["ok"])
    self.assertEqual(report["export_dir"], export_dir)
    self.assertEqual(report["errors"], [])
    self.assertTrue(report["loaded"])
    self.assertGreater(report["load_ms"], 0)
    info = self._info[kind]
    expected_names = sorted(info.get("signatures") or info["signature_names"])
    self.assertEqual(sorted(report["signatures"]), expected_names)
    for name, sig in report["signatures"].items():
      self.assertTrue(sig["ok"], sig)
      self.assertIsNone(sig["error"])
      self.assertEqual(sig["ran"], run == "smoke", name)
      if "signatures" in info:
        expected = info["signatures"][name]
        self.assertEqual(sig["method"], expected["method"])
        self.assertEqual(
            {k: v["name"] for k, v in sig["inputs"].items()},
            expected["inputs"])
        self.assertEqual(
            {k: v["name"] for k, v in sig["outputs"].items()},
            expected["outputs"])
    if run == "warmup":
      self.assertTrue(report["warmup"]["ok"], report["warmup"])
      self.assertEqual(report["warmup"]["records"], 3)
      self.assertEqual(sum(report["warmup"]["records_per_signature"].values()),
                       3)
    else:
      self.assertIsNone(report["warmup"])

  def test_json_describes_tensors(self):
    code, report = self._run_json(os.path.join(self._pristine, "tf1"))
    self.assertEqual(code, _EXIT_OK)
    scaled = report["signatures"]["scaled"]
    self.assertEqual(scaled["method"], "tensorflow/serving/predict")
    self.assertEqual(scaled["inputs"]["x"],
                     {"name": "x:0", "dtype": "float", "shape": [-1, 3]})
    self.assertEqual(scaled["inputs"]["factor"]["shape"], [])
    self.assertEqual(scaled["outputs"]["scaled"]["shape"], [-1, 2])
    self.assertEqual(report["signatures"]["constant"]["inputs"], {})
    self.assertGreaterEqual(scaled["run_ms"], 0)

  def test_text_report_has_one_line_per_signature(self):
    export_dir = os.path.join(self._pristine, "tf1")
    proc = self._run(f"--export_dir={export_dir}")
    self.assertEqual(proc.returncode, _EXIT_OK, proc.stdout + proc.stderr)
    lines = proc.stdout.splitlines()
    for name in ("constant", "scaled", "serving_default"):
      matching = [l for l in lines if l.split()[1:2] == [name]]
      self.assertLen(matching, 1, proc.stdout)
      self.assertRegex(matching[0], r"^\s+ok\s+.*run [0-9.]+ ms$")
    self.assertIn("loaded in", proc.stdout)
    self.assertEqual(lines[-1], "RESULT: OK (3 signature(s))")

  def test_signatures_flag_selects_and_run_none_skips_running(self):
    export_dir = os.path.join(self._pristine, "tf1")
    code, report = self._run_json(export_dir, "--signatures=scaled,constant",
                                  "--run=none")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertEqual(sorted(report["signatures"]), ["constant", "scaled"])
    self.assertFalse(any(s["ran"] for s in report["signatures"].values()))

  # --- Broken bundles -------------------------------------------------------

  def _assert_fails(self, export_dir: str, pattern: str, *args: str,
                    where: str = "errors") -> dict[str, Any]:
    code, report = self._run_json(export_dir, *args)
    self.assertEqual(code, _EXIT_FAILED, report)
    self.assertFalse(report["ok"])
    if where == "errors":
      self.assertRegex("\n".join(report["errors"]), pattern)
    elif where == "warmup":
      self.assertRegex(report["warmup"]["error"], pattern)
    else:
      self.assertRegex(report["signatures"][where]["error"], pattern)
    return report

  def test_truncated_saved_model_pb(self):
    export_dir = self._bundle("tf1")
    path = os.path.join(export_dir, "saved_model.pb")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.truncate(size // 2)
    self._assert_fails(
        export_dir,
        r"cannot read the SavedModel proto in .*saved_model\.pb is truncated")

  def test_missing_saved_model_pb_lists_directory(self):
    export_dir = self._bundle("tf1")
    os.remove(os.path.join(export_dir, "saved_model.pb"))
    self._assert_fails(
        export_dir,
        r"no saved_model\.pb or saved_model\.pbtxt in .*; it contains: "
        r"assets\.extra, variables")

  def test_missing_export_dir(self):
    missing = os.path.join(self.create_tempdir().full_path, "nope")
    self._assert_fails(missing, r"export_dir .*/nope does not exist")

  def test_model_base_path_suggests_version_directory(self):
    base = self.create_tempdir().full_path
    shutil.copytree(os.path.join(self._pristine, "tf1"),
                    os.path.join(base, "7"))
    self._assert_fails(
        base, r"model base path with versions 7.*--export_dir=.*/7")

  def test_legacy_session_bundle(self):
    export_dir = self.create_tempdir().full_path
    for name in ("export.meta", "export-00000-of-00001"):
      with open(os.path.join(export_dir, name), "wb") as f:
        f.write(b"\0")
    self._assert_fails(export_dir, r"legacy SessionBundle export")

  def test_variables_folder_removed(self):
    export_dir = self._bundle("tf1")
    shutil.rmtree(os.path.join(export_dir, "variables"))
    self._assert_fails(
        export_dir,
        r"the graph has 2 variable\(s\) \(e\.g\. 'weights'\) but "
        r".*/variables/variables\.index is missing: .*Restore the variables/ "
        r"directory")

  def test_variables_data_corrupt_fails_restore(self):
    export_dir = self._bundle("tf1")
    data = os.path.join(export_dir, "variables",
                        "variables.data-00000-of-00001")
    with open(data, "r+b") as f:
      f.truncate(4)
    report = self._assert_fails(
        export_dir,
        r"LoadSavedModel\(.*/tf1, tags=\{serve\}\) failed restoring "
        r"variables \(variables/ is corrupt or does not match the graph; "
        r"restore it from the original export\): ")
    self.assertFalse(report["loaded"])
    self.assertIsNone(report["load_ms"])
    # Static checks still ran and passed; nothing could be run.
    self.assertTrue(all(s["ok"] and not s["ran"]
                        for s in report["signatures"].values()))

  def test_signature_names_tensor_not_in_graph(self):
    export_dir = self._bundle("tf1")

    def edit(meta_graph):
      meta_graph.signature_def["serving_default"].inputs["x"].name = "xx:0"

    self._edit_saved_model(export_dir, edit)
    report = self._assert_fails(
        export_dir,
        r"input 'x' \(xx:0\): the graph has no node 'xx'; closest names: "
        r"'x'",
        where="serving_default")
    # Only the broken signature fails; the others still ran.
    self.assertTrue(report["signatures"]["scaled"]["ok"])
    self.assertTrue(report["signatures"]["scaled"]["ran"])
    self.assertFalse(report["signatures"]["serving_default"]["ran"])

  def test_wrong_dtype_in_signature(self):
    export_dir = self._bundle("tf1")

    def edit(meta_graph):
      meta_graph.signature_def["serving_default"].outputs["y"].dtype = 3

    self._edit_saved_model(export_dir, edit)
    self._assert_fails(
        export_dir,
        r"output 'y' \(y:0\): the signature declares dtype int32 but node "
        r"'y' \(op Identity\) produces float",
        where="serving_default")

  def test_incompatible_shape_in_signature(self):
    export_dir = self._bundle("tf1")

    def edit(meta_graph):
      shape = meta_graph.signature_def["serving_default"].inputs["x"]
      shape.tensor_shape.dim[1].size = 4

    self._edit_saved_model(export_dir, edit)
    self._assert_fails(
        export_dir,
        r"input 'x' \(x:0\): the signature declares shape \[-1,4\] but the "
        r"graph's shape is \[-1,3\]",
        where="serving_default")

  def test_unknown_method_name(self):
    export_dir = self._bundle("tf1")

    def edit(meta_graph):
      meta_graph.signature_def["scaled"].method_name = "tensorflow/serving/foo"

    self._edit_saved_model(export_dir, edit)
    self._assert_fails(
        export_dir,
        r"method_name 'tensorflow/serving/foo' is not one TF Serving serves; "
        r"expected one of tensorflow/serving/predict, "
        r"tensorflow/serving/classify, tensorflow/serving/regress",
        where="scaled")

  def test_classify_signature_without_classes_or_scores(self):
    export_dir = self._bundle("classify_regress")

    def edit(meta_graph):
      outputs = meta_graph.signature_def["classify"].outputs
      outputs["labels"].CopyFrom(outputs["classes"])
      del outputs["classes"]
      del outputs["scores"]

    self._edit_saved_model(export_dir, edit)
    self._assert_fails(
        export_dir,
        r"classify signatures need at least one of the outputs 'classes' or "
        r"'scores'; found \{labels\}",
        where="classify")

  def test_missing_serving_default_is_a_warning(self):
    export_dir = self._bundle("tf1")

    def edit(meta_graph):
      sigs = meta_graph.signature_def
      sigs["renamed"].CopyFrom(sigs["serving_default"])
      del sigs["serving_default"]

    self._edit_saved_model(export_dir, edit)
    code, report = self._run_json(export_dir, "--run=smoke")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertTrue(report["ok"])
    self.assertRegex("\n".join(report["warnings"]),
                     r"no 'serving_default' signature")
    # By default the warmup file is replayed too, as TF Serving's load does;
    # its serving_default record now fails, and so would the load.
    self._assert_fails(
        export_dir,
        r"warmup record #0 \(predict_log, signature 'serving_default'\) "
        r"failed: No signature was found with the name: serving_default",
        where="warmup")

  def test_missing_tag_set_lists_present_ones(self):
    export_dir = os.path.join(self._pristine, "tf1")
    self._assert_fails(
        export_dir,
        r"no MetaGraphDef with tag-set \{gpu,serve\} in .*; tag-sets "
        r"present: \{serve\}\. Pass the one to serve with --tags, e\.g\. "
        r"--tags=serve",
        "--tags=serve,gpu")

  def test_corrupt_warmup_file(self):
    export_dir = self._bundle("tf1")
    path = os.path.join(export_dir, bundles.WARMUP_RELATIVE_PATH)
    with open(path, "r+b") as f:
      f.seek(20)
      f.write(b"\xff\xfe\xfd\xfc")
    self._assert_fails(
        export_dir,
        r"warmup record #0 in .*tf_serving_warmup_requests is unreadable: "
        r".*Please verify your warmup data is in TFRecord format",
        "--run=warmup", where="warmup")

  def test_warmup_record_that_is_not_a_prediction_log(self):
    export_dir = self._bundle("tf1")
    bundles.write_warmup(export_dir, [
        bundles.predict_log("serving_default",
                            {"x": [[1.0, 2.0, 3.0]]}),
        b"\x32\x05abc",  # classify_log declaring 5 bytes, holding 3.
    ])
    self._assert_fails(
        export_dir,
        r"Failed to parse warmup record #1 from .* as a "
        r"tensorflow\.serving\.PredictionLog",
        "--run=warmup", where="warmup")

  def test_warmup_request_with_wrong_input_names_the_record(self):
    export_dir = self._bundle("tf1")
    bundles.write_warmup(export_dir, [
        bundles.predict_log("scaled", {"x": [[1.0, 2.0, 3.0]],
                                       "bogus": [1.0]}),
    ])
    self._assert_fails(
        export_dir,
        r"warmup record #0 \(predict_log, signature 'scaled'\) failed: .*"
        r"Sent extra: \{bogus\}\. Missing but required: \{\}",
        "--run=warmup", where="warmup")

  def test_warmup_may_omit_inputs_that_have_defaults(self):
    export_dir = self._bundle("tf1")
    bundles.write_warmup(export_dir, [
        # "factor" is a PlaceholderWithDefault, so TF Serving accepts this.
        bundles.predict_log("scaled", {"x": [[1.0, 2.0, 3.0]]}),
        # An empty signature_name means serving_default.
        bundles.predict_log("", {"x": [[0.0, 0.0, 0.0]]}),
    ])
    code, report = self._run_json(export_dir, "--run=warmup")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertEqual(report["warmup"]["records_per_signature"],
                     {"scaled": 1, "serving_default": 1})

  @parameterized.named_parameters(
      ("unknown_signature",
       lambda: bundles.predict_log("nope", {}),
       r"warmup record #0 \(predict_log, signature 'nope'\) failed: No "
       r"signature was found with the name: nope; signatures present: "
       r"'constant', 'scaled', 'serving_default'"),
      ("wrong_dtype",
       lambda: bundles.predict_log("serving_default",
                                   {"x": [["a", "b", "c"]]}),
       r"Expects arg\[x\] to be float but string is provided"),
      ("classify_on_predict_signature",
       lambda: bundles.classify_log("serving_default", [[1.0, 2.0]]),
       r"Expected classify signature method_name to be "
       r"tensorflow/serving/classify\. Was: tensorflow/serving/predict"),
  )
  def test_failing_warmup_request(self, make_record, pattern):
    export_dir = self._bundle("tf1")
    bundles.write_warmup(export_dir, [make_record()])
    self._assert_fails(export_dir, pattern, "--run=warmup", where="warmup")

  def test_classify_warmup_without_examples(self):
    export_dir = self._bundle("classify_regress")
    bundles.write_warmup(export_dir, [bundles.classify_log("classify", [])])
    self._assert_fails(
        export_dir,
        r"warmup record #0 \(classify_log, signature 'classify'\) failed: "
        r"Input is empty",
        "--run=warmup", where="warmup")

  def test_more_than_1000_warmup_records(self):
    export_dir = self._bundle("tf1")
    record = bundles.predict_log("constant", {})
    bundles.write_warmup(export_dir, [record] * 1001)
    report = self._assert_fails(
        export_dir,
        r"Number of warmup records exceeds the maximum \(1000\)",
        "--run=warmup", where="warmup")
    self.assertEqual(report["warmup"]["records"], 1000)

  def test_missing_warmup_file_with_run_warmup(self):
    export_dir = self._bundle("tf2")
    self._assert_fails(export_dir, r"no warmup file at .*--run=smoke",
                       "--run=warmup", where="warmup")

  def test_default_run_replays_a_corrupt_warmup_file(self):
    export_dir = self._bundle("tf1")
    path = os.path.join(export_dir, bundles.WARMUP_RELATIVE_PATH)
    with open(path, "r+b") as f:
      f.seek(20)
      f.write(b"\xff\xfe\xfd\xfc")
    report = self._assert_fails(
        export_dir, r"warmup record #0 in .*tf_serving_warmup_requests is "
        r"unreadable", where="warmup")
    self.assertEqual(report["run"], "smoke+warmup")
    # The smoke run still ran every signature.
    self.assertTrue(all(s["ran"] and s["ok"]
                        for s in report["signatures"].values()))
    code, report = self._run_json(export_dir, "--run=smoke")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertIsNone(report["warmup"])

  def test_default_run_without_warmup_file_only_smokes(self):
    code, report = self._run_json(os.path.join(self._pristine, "tf2"))
    self.assertEqual(code, _EXIT_OK, report)
    self.assertIsNone(report["warmup"])
    self.assertTrue(all(s["ran"] for s in report["signatures"].values()))

  def test_missing_variables_reports_without_tensorflow_dumps(self):
    export_dir = self._bundle("tf1")
    shutil.rmtree(os.path.join(export_dir, "variables"))
    proc = self._run(f"--export_dir={export_dir}")
    self.assertEqual(proc.returncode, _EXIT_FAILED, proc.stdout)
    self.assertIn("variables/variables.index is missing", proc.stdout)
    for noise in ("uninitialized value", "Could not find variable",
                  "Local rendezvous"):
      self.assertNotIn(noise, proc.stderr)
    self.assertNotIn("smoke run failed", proc.stdout)
    self.assertRegex(proc.stdout, r"checked\s+serving_default")

  # --- Hostile bundles (issue 11) -----------------------------------------

  def test_denied_op_is_an_error_and_never_runs(self):
    export_dir = os.path.join(self.create_tempdir().full_path, "write_file")
    target = os.path.join(self.create_tempdir().full_path, "pwned.txt")
    bundles.write_write_file_bundle(export_dir, target)
    report = self._assert_fails(
        export_dir,
        r"the graph uses the denied op WriteFile \(node 'WriteFile'\): .*"
        r"neither loaded nor run\. Remove it from the model, or accept it "
        r"with --allow_ops=WriteFile")
    self.assertEqual(list(report["denied_ops"]), ["WriteFile"])
    self.assertFalse(report["loaded"])
    self.assertFalse(os.path.exists(target))
    # Accepted explicitly, the op is real: the smoke run writes the file.
    code, report = self._run_json(export_dir, "--allow_ops=PrintV2,WriteFile")
    self.assertEqual(code, _EXIT_OK, report)
    self.assertEqual(report["denied_ops"], {})
    self.assertTrue(os.path.exists(target))

  def test_denied_op_inside_a_function_body_is_named(self):
    export_dir = os.path.join(self.create_tempdir().full_path, "printer")
    bundles.write_print_in_function_bundle(export_dir)
    report = self._assert_fails(
        export_dir,
        r"the graph uses the denied op PrintV2 \(node 'PrintV2' in function "
        r"'__inference_serve_[0-9]+'\)")
    # TF2's own save/restore functions (SaveV2, RestoreV2) are not reported.
    self.assertEqual(list(report["denied_ops"]), ["PrintV2"])
    proc = self._run(f"--export_dir={export_dir}", "--allow_ops=PrintV2")
    self.assertEqual(proc.returncode, _EXIT_OK, proc.stdout + proc.stderr)
    self.assertIn("printing from the graph", proc.stderr)

  def test_endless_loop_fails_at_the_deadline(self):
    export_dir = os.path.join(self.create_tempdir().full_path, "loop")
    bundles.write_endless_loop_bundle(export_dir)
    started = time.monotonic()
    report = self._assert_fails(
        export_dir,
        r"smoke run failed: Session::Run did not finish within "
        r"--run_timeout_ms=1500 ms and was cancelled: the graph may never end",
        "--run_timeout_ms=1500", where="serving_default")
    self.assertLess(time.monotonic() - started, 60)
    self.assertTrue(report["loaded"])

  # --- Usage --------------------------------------------------------------

  @parameterized.named_parameters(
      ("no_export_dir", [], r"--export_dir is required"),
      ("unknown_flag", ["--export_dir=/x", "--bogus=1"],
       r"unknown flag '--bogus'; known flags: .*--export_dir"),
      ("bad_run", ["--export_dir=/x", "--run=fast"],
       r"--run='fast' is not a run mode; choose smoke\+warmup \(the "
       r"default\), smoke, warmup or none"),
      ("positional", ["/x"], r"unexpected argument '/x'"),
      ("empty_tag", ["--export_dir=/x", "--tags=serve,,gpu"],
       r"--tags='serve,,gpu' has an empty name"),
      ("duplicate_signature", ["--export_dir=/x", "--signatures=a,a"],
       r"--signatures='a,a' names 'a' twice"),
      ("bad_timeout", ["--export_dir=/x", "--run_timeout_ms=soon"],
       r"--run_timeout_ms='soon' is not a whole number of milliseconds"),
      ("negative_timeout", ["--export_dir=/x", "--run_timeout_ms=-1"],
       r"--run_timeout_ms=-1 is negative"),
      ("empty_allowed_op", ["--export_dir=/x", "--allow_ops=PrintV2,"],
       r"--allow_ops='PrintV2,' has an empty name"),
  )
  def test_bad_usage_exits_2(self, args, pattern):
    proc = self._run(*args)
    self.assertEqual(proc.returncode, _EXIT_USAGE, proc.stderr)
    self.assertRegex(proc.stderr, pattern)
    self.assertIn("usage: verify --export_dir=DIR", proc.stderr)
    self.assertEqual(proc.stdout, "")

  def test_help_prints_usage_and_exits_0(self):
    proc = self._run("--help")
    self.assertEqual(proc.returncode, _EXIT_OK, proc.stderr)
    self.assertIn("--run          smoke+warmup (default): replay assets.extra/",
                  proc.stdout)
    self.assertIn("--allow_ops", proc.stdout)
    self.assertIn("--run_timeout_ms", proc.stdout)
    self.assertIn("Exit status: 0 verified, 1 verification failed, 2 bad usage",
                  proc.stdout)


class TfServingBundlesTest(parameterized.TestCase):
  """Bundles with the structure of TF Serving's testdata pass by default."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    base = os.path.join(absltest.get_default_test_tmpdir(), "tf_serving")
    shutil.rmtree(base, ignore_errors=True)
    cls._dirs = {
        "half_plus_two": tf_serving_models.write_half_plus_two(
            os.path.join(base, "half_plus_two")),
        "half_plus_three": tf_serving_models.write_half_plus_two(
            os.path.join(base, "half_plus_three"), b=3.0),
        "half_plus_two_tf2": tf_serving_models.write_half_plus_two_tf2(
            os.path.join(base, "half_plus_two_tf2")),
        "counter": tf_serving_models.write_counter(
            os.path.join(base, "counter")),
    }

  def _run(self, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([_verifier_path(), *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)

  @parameterized.named_parameters(
      ("half_plus_two", "half_plus_two",
       tf_serving_models.HALF_PLUS_TWO_SIGNATURES),
      ("half_plus_three", "half_plus_three",
       tf_serving_models.HALF_PLUS_TWO_SIGNATURES),
      ("half_plus_two_tf2", "half_plus_two_tf2",
       tf_serving_models.HALF_PLUS_TWO_TF2_SIGNATURES),
      ("counter", "counter", tf_serving_models.COUNTER_SIGNATURES),
  )
  def test_passes_default_smoke(self, kind, signatures):
    proc = self._run(f"--export_dir={self._dirs[kind]}", "--json")
    self.assertEqual(proc.returncode, _EXIT_OK, proc.stdout + proc.stderr)
    report = json.loads(proc.stdout)
    self.assertEqual(sorted(report["signatures"]), sorted(signatures))
    for name, sig in report["signatures"].items():
      self.assertTrue(sig["ran"] and sig["ok"], (name, sig))

  def test_unknown_rank_input_reports_the_shape_that_ran(self):
    export_dir = self._dirs["counter"]
    proc = self._run(f"--export_dir={export_dir}", "--json",
                     "--signatures=incr_counter_by")
    report = json.loads(proc.stdout)
    sig = report["signatures"]["incr_counter_by"]
    self.assertIsNone(sig["inputs"]["delta"]["shape"])
    # AssignAdd on the scalar variable pins the shape: a scalar, not [1].
    self.assertEqual(sig["fed"], {"delta": []})
    proc = self._run(f"--export_dir={export_dir}",
                     "--signatures=incr_counter_by")
    self.assertRegex(proc.stdout, r"ok\s+incr_counter_by .* fed delta=\[\]")

  def test_unknown_rank_tries_the_candidates_in_order(self):
    # Without the variable's shape to go by, the scalar is tried first; a
    # graph that needs a vector runs with [1], and the report says so.
    export_dir = os.path.join(self.create_tempdir().full_path, "vector")
    graph = tf.Graph()
    v1 = tf.compat.v1
    with graph.as_default():
      x = v1.placeholder(tf.float32, shape=None, name="x")
      y = tf.identity(x[0:1] * 2.0, name="y")
      with v1.Session(graph=graph) as sess:
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def(
                    inputs={"x": x}, outputs={"y": y})})
        builder.save()
    proc = self._run(f"--export_dir={export_dir}")
    self.assertEqual(proc.returncode, _EXIT_OK, proc.stdout + proc.stderr)
    self.assertRegex(proc.stdout,
                     r"ok\s+serving_default .* fed x=\[1\] \(after \[\]\)")

  def test_non_string_regress_input_is_a_warning_and_runs_as_predict(self):
    proc = self._run(f"--export_dir={self._dirs['half_plus_two']}", "--json")
    report = json.loads(proc.stdout)
    self.assertTrue(report["signatures"]["regress_x2_to_y3"]["ran"])
    self.assertRegex(
        "\n".join(report["warnings"]),
        r"signature 'regress_x2_to_y3' \(regress\) takes input 'inputs' of "
        r"dtype float, not serialized tf\.Examples: TF Serving's Regress API "
        r"cannot call it \(only Predict can\)")


if __name__ == "__main__":
  absltest.main()
