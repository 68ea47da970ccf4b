"""The C++ verifier (//cc/verify) accepts every bundle the merger publishes.

Publishes bundles with every kind of test graph through merge_lib, then runs
the verifier binary (tensorflow::LoadSavedModel under `serve`, as TF Serving
loads) with --run=smoke and --run=warmup on each published version.
"""

import json
import os
import shutil
import subprocess
import uuid

from absl.testing import absltest
from absl.testing import parameterized

from python.merge import merge_lib
from python.merge.testdata import graphs

_WORKSPACE = "tf_serving_merge"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_TIMEOUT_SECONDS = 240


def _verifier() -> str:
  """//cc/verify from runfiles; outside Bazel $VERIFY_BINARY or bazel-bin."""
  candidates = []
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir:
    candidates.append(os.path.join(
        srcdir, os.environ.get("TEST_WORKSPACE", _WORKSPACE), "cc", "verify",
        "verify"))
  if os.environ.get("VERIFY_BINARY"):
    candidates.append(os.environ["VERIFY_BINARY"])
  candidates.append(os.path.join(_REPO_ROOT, "bazel-bin", "cc", "verify",
                                 "verify"))
  for path in candidates:
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  raise FileNotFoundError(
      f"the //cc/verify binary is not at any of {candidates}; run this test "
      "with `bazel test //python/merge:cc_verify_test` or set VERIFY_BINARY.")


class CcVerifyTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(absltest.get_default_test_tmpdir(),
                        f"cc_verify-{uuid.uuid4().hex}")
    infos = {
        "hyaudio": graphs.write_hyaudio(os.path.join(root, "hyaudio.pb")),
        "while_loop": graphs.write_while_loop(
            os.path.join(root, "while_loop.pb")),
        "lookup": graphs.write_lookup_table(os.path.join(root, "lookup.pb")),
        "fn_a": graphs.write_function_library(
            os.path.join(root, "fn_a.pb"), "a"),
        "fn_b": graphs.write_function_library(
            os.path.join(root, "fn_b.pb"), "b"),
        "large": graphs.write_large_const(os.path.join(root, "large.pb"),
                                          2 << 20),
        "classifier": graphs.write_classifier(
            os.path.join(root, "classifier.pb")),
        "regressor": graphs.write_regressor(
            os.path.join(root, "regressor.pb")),
        "vocabulary": graphs.write_vocabulary_table(
            os.path.join(root, "vocabulary.pb"),
            os.path.join(root, "vocab", "words.txt")),
    }

    def spec(*pairs, **top):
      return merge_lib.MergeSpec(models=tuple(
          merge_lib.ModelSpec(signature_name=sig, frozen=infos[key]["path"],
                              inputs=infos[key]["inputs"],
                              outputs=infos[key]["outputs"],
                              method=infos[key]["method"])
          for sig, key in pairs), **top)

    base = os.path.join(root, "models")
    all_kinds = merge_lib.merge_and_publish(
        spec(("hyaudio_1", "hyaudio"), ("hyaudio_2", "hyaudio"),
             ("while_loop", "while_loop"), ("lookup", "lookup"),
             ("fn_a", "fn_a"), ("fn_b", "fn_b"), ("large", "large"),
             ("classifier", "classifier"), ("regressor", "regressor"),
             ("vocabulary", "vocabulary"),
             serving_default="hyaudio_1"), base)
    # The loader must initialize the table from the bundle's assets/.
    shutil.rmtree(os.path.join(root, "vocab"))
    no_warmup = merge_lib.merge_and_publish(
        spec(("hyaudio", "hyaudio"), ("large", "large")), base,
        warmup=False, externalize_threshold_bytes=0,
        allow_removed_signatures=True)
    cls.bundles = {
        "all_kinds": (all_kinds.path,
                      set(all_kinds.signatures) | {"serving_default"}),
        "no_warmup_everything_externalized": (no_warmup.path,
                                              set(no_warmup.signatures)),
    }

  def _verify(self, export_dir, run):
    proc = subprocess.run(
        [_verifier(), f"--export_dir={export_dir}", f"--run={run}", "--json"],
        capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False)
    self.assertEqual(proc.returncode, 0,
                     f"verifier failed on {export_dir}:\n{proc.stdout}\n"
                     f"{proc.stderr}")
    return json.loads(proc.stdout)

  @parameterized.parameters("all_kinds", "no_warmup_everything_externalized")
  def test_smoke_runs_every_signature(self, bundle):
    path, signatures = self.bundles[bundle]
    report = self._verify(path, "smoke")
    self.assertTrue(report["ok"], report)
    self.assertTrue(report["loaded"], report)
    self.assertEqual(set(report["signatures"]), signatures)
    for name, sig in report["signatures"].items():
      self.assertTrue(sig["ok"], f"{name}: {sig}")
      self.assertTrue(sig["ran"], f"{name}: {sig}")

  def test_warmup_replays_one_request_per_signature(self):
    path, signatures = self.bundles["all_kinds"]
    report = self._verify(path, "warmup")
    self.assertTrue(report["ok"], report)
    warmup = report["warmup"]
    self.assertTrue(warmup["ok"], warmup)
    models = signatures - {"serving_default"}
    self.assertEqual(warmup["records"], len(models))
    self.assertEqual(warmup["records_per_signature"],
                     {name: 1 for name in models})


if __name__ == "__main__":
  absltest.main()
