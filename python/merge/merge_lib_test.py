"""Tests for merge_lib.merge_and_publish: the real merge, published.

Every signature of a published bundle must answer exactly what its frozen
graph answers alone; failures publish nothing; inspect_lib describes what was
published.
"""

import io
import json
import os
import sys
import threading
import time
import uuid

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from python.merge import cli
from python.merge import inspect_lib
from python.merge import merge_lib
from python.merge import publish
from python.merge.testdata import graphs


def _load_and_run(export_dir, signature_name, feeds):
  """Runs one signature of a SavedModel; returns {output alias: value}."""
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                      export_dir)
    sig = meta_graph.signature_def[signature_name]
    feed_dict = {sig.inputs[a].name: v for a, v in feeds.items()}
    fetches = {a: info.name for a, info in sig.outputs.items()}
    return sess.run(fetches, feed_dict=feed_dict)


def _numeric_dirs(base):
  return sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(
      base) else []


def _leftovers(base):
  return [n for n in os.listdir(base)
          if n.startswith((".staging", ".trash", ".tmp"))]


class MergeLibTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    frozen = os.path.join(root, f"frozen-{uuid.uuid4().hex}")
    cls.graphs = {
        "hyaudio": graphs.write_hyaudio(os.path.join(frozen, "hyaudio.pb")),
        "while_loop": graphs.write_while_loop(
            os.path.join(frozen, "while_loop.pb")),
        "lookup": graphs.write_lookup_table(os.path.join(frozen,
                                                         "lookup.pb")),
        "fn_a": graphs.write_function_library(
            os.path.join(frozen, "fn_a.pb"), "a"),
        "fn_b": graphs.write_function_library(
            os.path.join(frozen, "fn_b.pbtxt"), "b"),
        "large": graphs.write_large_const(
            os.path.join(frozen, "large.pb"), 256 << 10),
        "classifier": graphs.write_classifier(
            os.path.join(frozen, "classifier.pb")),
        "regressor": graphs.write_regressor(
            os.path.join(frozen, "regressor.pb")),
    }
    cls.frozen_dir = frozen

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.base = os.path.join(self.tmp, "models")

  def _spec(self, *names, **top):
    """A MergeSpec with one model per (signature_name, graph key) pair."""
    models = []
    for name in names:
      sig, key = name if isinstance(name, tuple) else (name, name)
      info = self.graphs[key]
      models.append(merge_lib.ModelSpec(
          signature_name=sig, frozen=info["path"], inputs=info["inputs"],
          outputs=info["outputs"], method=info["method"]))
    return merge_lib.MergeSpec(models=tuple(models), **top)

  def test_every_signature_answers_like_its_frozen_graph(self):
    spec = self._spec(("hyaudio_1", "hyaudio"), ("hyaudio_2", "hyaudio"),
                      "while_loop", "lookup", "fn_a", "fn_b", "large",
                      "classifier", "regressor", message="all kinds",
                      serving_default="hyaudio_1")
    result = merge_lib.merge_and_publish(
        spec, self.base, externalize_threshold_bytes=128 << 10)

    self.assertEqual(result.version, 1)
    self.assertEqual(result.path, os.path.join(self.base, "1"))
    names = ("hyaudio_1", "hyaudio_2", "while_loop", "lookup", "fn_a",
             "fn_b", "large", "classifier", "regressor")
    self.assertEqual(result.signatures, names)
    self.assertEqual(result.new_signatures, names)
    self.assertFalse(result.dry_run)
    on_disk = {}
    for root, _, files in os.walk(result.path):
      for f in files:
        path = os.path.join(root, f)
        on_disk[os.path.relpath(path, result.path)] = os.path.getsize(path)
    self.assertEqual(result.bytes, sum(on_disk.values()))
    self.assertIn("assets.extra/tf_serving_warmup_requests", on_disk)
    # The 256 KiB weights went to variables/, not into saved_model.pb.
    self.assertLess(on_disk["saved_model.pb"], 200 << 10)
    self.assertGreater(
        sum(v for k, v in on_disk.items() if k.startswith("variables/")),
        256 << 10)

    for name in names:
      key = "hyaudio" if name.startswith("hyaudio") else name
      info = self.graphs[key]
      feeds = graphs.make_inputs(info, batch_size=3, seed=7)
      want = graphs.run_frozen(info, feeds)
      got = _load_and_run(result.path, name, feeds)
      self.assertEqual(set(got), set(want), name)
      for alias in want:
        np.testing.assert_array_equal(got[alias], want[alias],
                                      err_msg=f"{name}/{alias}")
    feeds = graphs.make_inputs(self.graphs["hyaudio"], seed=3)
    np.testing.assert_array_equal(
        _load_and_run(result.path, "serving_default", feeds)["probs"],
        graphs.run_frozen(self.graphs["hyaudio"], feeds)["probs"])

    self.assertEqual(
        publish.read_history(self.base),
        ([f'1\t{",".join(names)}\t"all kinds"'], list(names)))
    self.assertEqual(_leftovers(self.base), [])

  def test_same_graph_twice_is_stored_once(self):
    once = merge_lib.merge_and_publish(
        self._spec(("a", "hyaudio")), os.path.join(self.tmp, "once"))
    twice = merge_lib.merge_and_publish(
        self._spec(("a", "hyaudio"), ("b", "hyaudio")),
        os.path.join(self.tmp, "twice"))
    once_pb = os.path.getsize(os.path.join(once.path, "saved_model.pb"))
    twice_pb = os.path.getsize(os.path.join(twice.path, "saved_model.pb"))
    # Only a second SignatureDef (a few hundred bytes), not a second graph.
    self.assertLess(twice_pb, once_pb + 2048)
    self.assertEqual(twice.bundle.unique_graphs, 1)

  def test_versions_history_and_keep_versions(self):
    spec = self._spec("hyaudio", message="from spec")
    first = merge_lib.merge_and_publish(spec, self.base)
    second = merge_lib.merge_and_publish(
        self._spec("hyaudio", "regressor"), self.base, message="add regressor")
    # Dropping "regressor" needs saying so; the dry run tells in advance.
    dry = merge_lib.merge_and_publish(spec, self.base, dry_run=True)
    self.assertEqual(dry.removed_signatures, ("regressor",))
    self.assertIn("  removed in this version: regressor", dry.to_text())
    self.assertRegex(dry.to_text(), r"warning: version 3 would remove "
                     r"signature\(s\) regressor .*--allow_removed_signatures")
    self.assertEqual(dry.to_json_dict()["removed_signatures"], ["regressor"])
    with self.assertRaisesRegex(
        merge_lib.PublishError,
        r"version 7 would remove signature\(s\) regressor that the newest "
        r"version .*pass --allow_removed_signatures"):
      merge_lib.merge_and_publish(spec, self.base, version=7)
    self.assertEqual(_numeric_dirs(self.base), ["1", "2"])
    third = merge_lib.merge_and_publish(spec, self.base, keep_versions=2,
                                        version=7,
                                        allow_removed_signatures=True)
    self.assertEqual((first.version, second.version, third.version),
                     (1, 2, 7))
    self.assertEqual(second.new_signatures, ("regressor",))
    self.assertEqual(third.new_signatures, ())
    self.assertEqual(third.removed_signatures, ("regressor",))
    self.assertEqual(third.deleted_versions, (1,))
    self.assertEqual(third.warnings, ())
    self.assertEqual(_numeric_dirs(self.base), ["2", "7"])
    self.assertEqual(publish.read_history(self.base), ([
        '7\t\t"from spec"\tregressor', '2\tregressor\t"add regressor"',
        '1\thyaudio\t"from spec"'
    ], ["hyaudio"]))

  def test_dry_run_shows_what_the_run_then_does(self):
    merge_lib.merge_and_publish(self._spec("hyaudio", "regressor"),
                                self.base, verify=False)
    merge_lib.merge_and_publish(self._spec("regressor"), self.base,
                                verify=False, allow_removed_signatures=True)
    spec = self._spec("hyaudio", "classifier", serving_default="classifier")
    options = dict(keep_versions=1, verify=False,
                   allow_removed_signatures=True)
    dry = merge_lib.merge_and_publish(spec, self.base, dry_run=True,
                                      **options)
    run = merge_lib.merge_and_publish(spec, self.base, **options)
    fields = ("version", "path", "signatures", "new_signatures",
              "removed_signatures", "deleted_versions", "serving_default",
              "warnings", "fingerprint")
    self.assertEqual({f: getattr(dry, f) for f in fields},
                     {f: getattr(run, f) for f in fields})
    self.assertEqual((run.version, run.new_signatures, run.removed_signatures,
                      run.deleted_versions),
                     (3, ("hyaudio", "classifier"), ("regressor",), (1, 2)))
    self.assertIn("  would delete old versions: 1, 2", dry.to_text())
    self.assertIn("  deleted old versions: 1, 2", run.to_text())

  def test_same_content_is_not_republished(self):
    spec = self._spec("hyaudio", message="first")
    first = merge_lib.merge_and_publish(spec, self.base)
    manifest = os.path.join(first.path, "assets.extra", "merge_manifest.json")
    with open(manifest) as f:
      self.assertEqual(json.load(f)["fingerprint"], first.fingerprint)
    dry = merge_lib.merge_and_publish(spec, self.base, dry_run=True)
    self.assertEqual(dry.fingerprint, first.fingerprint)
    self.assertRegex(dry.to_text(), r"warning: the new version would have "
                     r"the same content as the newest version 1")
    with self.assertRaisesRegex(
        merge_lib.PublishError,
        r"the new version would have the same content as the newest version "
        r"1 \(content fingerprint [0-9a-f]{16}: .*nothing was published\. "
        r"Change the spec, or pass --allow_same_content"):
      merge_lib.merge_and_publish(
          self._spec("hyaudio", message="again"), self.base)
    self.assertEqual(_numeric_dirs(self.base), ["1"])
    self.assertEqual(_leftovers(self.base), [])
    forced = merge_lib.merge_and_publish(spec, self.base,
                                         allow_same_content=True)
    self.assertEqual(forced.version, 2)
    # Other content (here: no warmup requests) is a new version.
    other = merge_lib.merge_and_publish(spec, self.base, warmup=False)
    self.assertEqual(other.version, 3)
    self.assertNotEqual(other.fingerprint, first.fingerprint)

  def test_existing_version_is_refused(self):
    merge_lib.merge_and_publish(self._spec("hyaudio"), self.base)
    before = os.path.getmtime(os.path.join(self.base, "1", "saved_model.pb"))
    for dry_run in (True, False):
      with self.assertRaisesRegex(
          merge_lib.PublishError,
          r"version 1 already exists in --output_base=.*\(existing versions: "
          r"1\); published versions are never overwritten"):
        merge_lib.merge_and_publish(self._spec("regressor"), self.base,
                                    version=1, dry_run=dry_run)
    self.assertEqual(
        os.path.getmtime(os.path.join(self.base, "1", "saved_model.pb")),
        before)
    self.assertEqual(publish.read_history(self.base)[1], ["hyaudio"])

  def test_spec_file_path(self):
    spec_path = graphs.write_spec(
        os.path.join(self.frozen_dir, f"spec-{uuid.uuid4().hex}.toml"),
        [graphs.model_entry("audio", self.graphs["hyaudio"],
                            frozen="hyaudio.pb")],
        message="relative path")
    result = merge_lib.merge_and_publish(spec_path, self.base)
    self.assertEqual(result.signatures, ("audio",))
    self.assertEqual(publish.read_history(self.base)[0],
                     ['1\taudio\t"relative path"'])

  def test_dry_run_writes_nothing(self):
    result = merge_lib.merge_and_publish(
        self._spec("hyaudio", "large"), self.base, dry_run=True,
        externalize_threshold_bytes=64 << 10)
    self.assertTrue(result.dry_run)
    self.assertEqual(result.version, 1)
    self.assertEqual(result.path, os.path.join(self.base, "1"))
    self.assertGreater(result.bytes, 256 << 10)
    self.assertFalse(os.path.exists(self.base))
    summary = result.to_json_dict()
    self.assertEqual(summary["signature_defs"]["hyaudio"], {
        "method": "predict",
        "inputs": {"inputs": {"dtype": "float32", "shape": [-1, 640]}},
        "outputs": {
            "probs": {"dtype": "float32", "shape": [-1, 8]},
            "classes": {"dtype": "int32", "shape": [-1]},
        },
    })
    self.assertIn("Would publish version 1", result.to_text())
    self.assertIn("nothing was written (--dry_run)", result.to_text())

  def test_dry_run_still_reports_errors(self):
    info = self.graphs["hyaudio"]
    spec = merge_lib.MergeSpec(models=(merge_lib.ModelSpec(
        signature_name="audio", frozen=info["path"], inputs=info["inputs"],
        outputs={"probs": "hyaudio/predict_prob:0"}),))
    with self.assertRaisesRegex(
        merge_lib.GraphError,
        r'model #1 "audio", key "outputs": alias "probs".*Closest names: '
        r"hyaudio/predict_probs:0"):
      merge_lib.merge_and_publish(spec, self.base, dry_run=True)

  @parameterized.named_parameters(
      ("missing_tensor", {"outputs": {"probs": "hyaudio/nope:0"}},
       merge_lib.GraphError, r'key "outputs": alias "probs"'),
      ("missing_file", {"frozen": "/nonexistent/graph.pb"},
       merge_lib.GraphError, r"frozen graph /nonexistent/graph.pb does not "
       r"exist"),
      ("relative_path_in_python", {"frozen": "hyaudio.pb"},
       merge_lib.SpecError, r"must be an absolute path or a URI"),
      ("bad_method", {"method": "clasify"}, merge_lib.SpecError,
       r"unknown method 'clasify'; valid methods: predict, classify, "
       r"regress"),
  )
  def test_failed_merge_publishes_nothing(self, override, error, regex):
    merge_lib.merge_and_publish(self._spec("regressor"), self.base)
    info = self.graphs["hyaudio"]
    fields = dict(signature_name="audio", frozen=info["path"],
                  inputs=info["inputs"], outputs=info["outputs"])
    fields.update(override)
    spec = merge_lib.MergeSpec(models=(merge_lib.ModelSpec(**fields),))
    with self.assertRaisesRegex(error, regex):
      merge_lib.merge_and_publish(spec, self.base,
                                  allow_removed_signatures=True)
    self.assertEqual(_numeric_dirs(self.base), ["1"])
    self.assertEqual(_leftovers(self.base), [])
    self.assertEqual(publish.read_history(self.base)[1], ["regressor"])

  def test_bundle_that_does_not_run_is_not_published(self):
    # A graph that merges fine but fails at run time: log of a negative.
    path = os.path.join(self.tmp, "nan.pb")
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
      tf.debugging.check_numerics(tf.math.log(x - 10.0), "negative log",
                                  name="y")
    with open(path, "wb") as f:
      f.write(graph.as_graph_def().SerializeToString())
    spec = merge_lib.MergeSpec(models=(merge_lib.ModelSpec(
        signature_name="nan", frozen=path, inputs={"x": "x:0"},
        outputs={"y": "y:0"}),))
    with self.assertRaisesRegex(
        merge_lib.VerifyError,
        r"^the merged bundle of the spec \(staged, not published\): 1 of 1 "
        r'signature\(s\) failed the check:\n  signature "nan" does not run '
        r"on synthesized inputs.*negative log"):
      merge_lib.merge_and_publish(spec, self.base)
    self.assertEqual(_numeric_dirs(self.base), [])
    self.assertEqual(_leftovers(self.base), [])
    self.assertEqual(publish.read_history(self.base), ([], []))
    # --noverify publishes it anyway.
    result = merge_lib.merge_and_publish(spec, self.base, verify=False)
    self.assertEqual(result.version, 1)

  def test_denied_ops_are_refused_before_anything_runs(self):
    marker = os.path.join(self.tmp, "written_by_the_graph")
    path = os.path.join(self.tmp, "writer.pb")
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
      write = tf.io.write_file(marker, "pwned", name="write")
      with tf.control_dependencies([write]):
        tf.identity(x, name="y")
    with open(path, "wb") as f:
      f.write(graph.as_graph_def().SerializeToString())
    spec = merge_lib.MergeSpec(models=(merge_lib.ModelSpec(
        signature_name="writer", frozen=path, inputs={"x": "x:0"},
        outputs={"y": "y:0"}),))
    for dry_run in (True, False):
      with self.assertRaisesRegex(
          merge_lib.GraphError,
          r'model #1 "writer", key "frozen": frozen graph .*writer.pb '
          r'contains op\(s\) refused by default: WriteFile \(node "write"\)'
          r".*--allow_ops=WriteFile\."):
        merge_lib.merge_and_publish(spec, self.base, dry_run=dry_run)
    self.assertFalse(os.path.exists(marker))
    self.assertEqual(_numeric_dirs(self.base), [])
    # Accepted explicitly, the check runs the graph, op and all: the test
    # above would see the file if the refusal came too late.
    result = merge_lib.merge_and_publish(spec, self.base,
                                         allow_ops=["WriteFile"])
    self.assertEqual(result.version, 1)
    self.assertTrue(os.path.exists(marker))

  def test_check_runs_have_a_deadline(self):
    path = os.path.join(self.tmp, "blocked.pb")
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
      queue = tf.queue.FIFOQueue(1, tf.float32, shapes=[[]], name="queue")
      tf.add(x, queue.dequeue(), name="y")  # Nothing is ever enqueued.
    with open(path, "wb") as f:
      f.write(graph.as_graph_def().SerializeToString())
    spec = merge_lib.MergeSpec(models=(merge_lib.ModelSpec(
        signature_name="blocked", frozen=path, inputs={"x": "x:0"},
        outputs={"y": "y:0"}),))
    start = time.monotonic()
    with self.assertRaisesRegex(
        merge_lib.CheckTimeoutError,
        r"^the merged bundle of the spec \(staged, not published\): "
        r'signature "blocked" did not finish within the check\'s deadline '
        r"of 0.5 s \(--check_timeout_seconds\)\. .*raise "
        r"--check_timeout_seconds if it is merely slow") as caught:
      merge_lib.merge_and_publish(spec, self.base, check_timeout_seconds=0.5,
                                  warmup=False)
    self.assertFalse(caught.exception.abandoned)
    self.assertLess(time.monotonic() - start, 30)
    self.assertNotIn(".staging", str(caught.exception))
    self.assertEqual(_numeric_dirs(self.base), [])
    self.assertEqual(_leftovers(self.base), [])
    # The lock was released: the next merge goes through at once.
    result = merge_lib.merge_and_publish(self._spec("hyaudio"), self.base,
                                         lock_timeout_seconds=1)
    self.assertEqual(result.version, 1)

  def test_cli_prints_one_line_and_never_a_traceback(self):
    for exception, regex in (
        (merge_lib.GraphError("bad graph " + "x" * (10 << 20)),
         r"^error: bad graph x+\.\.\.\(cut\)\n$"),
        (ValueError("boom"), r"^error: unexpected ValueError: boom \(this is "
         r"a bug in the merge tools; rerun with --verbosity=1"),
        (RecursionError(), r"^error: the input is nested too deeply"),
    ):
      def job(e=exception):
        raise e
      stderr = io.StringIO()
      with absltest.mock.patch.object(sys, "stderr", stderr):
        with self.assertRaises(SystemExit) as caught:
          cli.run_job(job)
      self.assertEqual(caught.exception.code, 1)
      self.assertRegex(stderr.getvalue(), regex)
      self.assertLess(len(stderr.getvalue()), 3000)
      self.assertEqual(stderr.getvalue().count("\n"), 1)

  def test_no_warmup(self):
    result = merge_lib.merge_and_publish(self._spec("hyaudio"), self.base,
                                         warmup=False)
    self.assertEqual(
        os.listdir(os.path.join(result.path, "assets.extra")),
        ["merge_manifest.json"])

  @parameterized.named_parameters(
      ("version", {"version": -1}, merge_lib.PublishError,
       "version=-1 is not a valid version number"),
      ("keep_versions", {"keep_versions": 0}, merge_lib.PublishError,
       "keep_versions=0 must be a positive integer"),
      ("threshold", {"externalize_threshold_bytes": -5}, merge_lib.MergeError,
       "externalize_threshold_bytes=-5 must be a non-negative integer"),
  )
  def test_bad_options(self, kwargs, error, regex):
    with self.assertRaisesRegex(error, regex):
      merge_lib.merge_and_publish(self._spec("hyaudio"), self.base, **kwargs)
    self.assertFalse(os.path.exists(self.base))

  def test_spec_of_wrong_type(self):
    with self.assertRaisesRegex(merge_lib.SpecError,
                                "expected a MergeSpec or a spec file path"):
      merge_lib.merge_and_publish({"models": []}, self.base)

  def test_concurrent_merges_get_distinct_versions(self):
    results, failures = [], []

    def run(name):
      try:
        results.append(merge_lib.merge_and_publish(
            self._spec(name), self.base, allow_removed_signatures=True))
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)

    threads = [threading.Thread(target=run, args=(n,))
               for n in ("hyaudio", "regressor")]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(failures, [])
    self.assertCountEqual([r.version for r in results], [1, 2])
    by_version = {r.version: r.signatures for r in results}
    for version, signatures in by_version.items():
      desc = inspect_lib.describe_saved_model(
          os.path.join(self.base, str(version)))
      self.assertEqual(list(desc["meta_graphs"][0]["signatures"]),
                       list(signatures))

  def test_ram_uri(self):
    base = f"ram://merge_lib_test_{uuid.uuid4().hex}/models"
    result = merge_lib.merge_and_publish(self._spec("hyaudio", "large"), base,
                                         externalize_threshold_bytes=1024)
    self.assertEqual(result.path, base + "/1")
    self.assertTrue(tf.io.gfile.exists(base + "/1/saved_model.pb"))
    feeds = graphs.make_inputs(self.graphs["large"])
    np.testing.assert_array_equal(
        _load_and_run(result.path, "large", feeds)["output"],
        graphs.run_frozen(self.graphs["large"], feeds)["output"])
    self.assertEqual(publish.read_history(base)[1], ["hyaudio", "large"])

  def test_json_and_text_summaries(self):
    result = merge_lib.merge_and_publish(
        self._spec("hyaudio", "classifier", serving_default="classifier"),
        self.base, message="m")
    summary = json.loads(merge_lib.to_json(result))
    self.assertEqual(summary["version"], 1)
    self.assertEqual(summary["path"], os.path.join(self.base, "1"))
    self.assertEqual(summary["signatures"], ["hyaudio", "classifier"])
    self.assertEqual(summary["new_signatures"], ["hyaudio", "classifier"])
    self.assertEqual(summary["serving_default"], "classifier")
    self.assertEqual(summary["bytes"], sum(summary["files"].values()))
    self.assertGreaterEqual(summary["seconds"], 0)
    self.assertEqual(summary["signature_defs"]["classifier"]["method"],
                     "classify")
    text = result.to_text()
    self.assertStartsWith(text, "Published version 1 at " + result.path)
    self.assertIn("classifier [classify]: (inputs string[-1]) -> (classes "
                  "string[-1, 3], scores float32[-1, 3])", text)
    self.assertEqual(summary["externalized_weights"], 0)
    self.assertNotIn(merge_lib.ONEDNN_FROZEN_WEIGHTS_ENV, text)

  def test_summaries_note_externalized_matmul_weights(self):
    # hyaudio's two dense-layer weights (80 KiB and 1 KiB) exceed 1000 bytes.
    result = merge_lib.merge_and_publish(
        self._spec("hyaudio"), self.base, dry_run=True,
        externalize_threshold_bytes=1000)
    self.assertEqual(result.bundle.externalized_weights,
                     ["hyaudio/hyaudio/fc1/weights",
                      "hyaudio/hyaudio/logits/weights"])
    summary = json.loads(merge_lib.to_json(result))
    self.assertEqual(summary["externalized_weights"], 2)
    self.assertIn(
        "note: 2 MatMul/Conv weight(s) moved to variables/; for answers "
        "bit-identical to the frozen graphs on oneDNN CPU builds, run the "
        "server with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1", result.to_text())

  def test_inspect_describes_the_published_bundle(self):
    merge_lib.merge_and_publish(
        self._spec("hyaudio", "classifier"), self.base)
    desc = inspect_lib.describe_saved_model(os.path.join(self.base, "1"))
    self.assertLen(desc["meta_graphs"], 1)
    self.assertEqual(desc["meta_graphs"][0]["tags"], ["serve"])
    sig = desc["meta_graphs"][0]["signatures"]["hyaudio"]
    self.assertEqual(sig["method"], "tensorflow/serving/predict")
    self.assertEqual(sig["inputs"]["inputs"], {
        "dtype": "float32", "dtype_enum": "DT_FLOAT", "shape": [-1, 640],
        "name": "hyaudio/hyaudio/vggish_input:0"})
    text = inspect_lib.format_saved_model_text(desc)
    self.assertIn(
        "MetaGraphDef with tag-set: 'serve' contains the following "
        "SignatureDefs:", text)
    self.assertIn(
        "signature_def['classifier']:\n"
        "  The given SavedModel SignatureDef contains the following "
        "input(s):\n"
        "    inputs['inputs'] tensor_info:\n"
        "        dtype: DT_STRING\n"
        "        shape: (-1)\n"
        "        name: classifier/classifier/input_example_tensor:0\n", text)
    self.assertIn("  Method name is: tensorflow/serving/classify", text)
    with self.assertRaisesRegex(
        inspect_lib.InspectError,
        r"has no saved_model.pb or saved_model.pbtxt; it looks like a model "
        r"base path with versions \[1\]: pass --dir=.*/models/1"):
      inspect_lib.describe_saved_model(self.base)

  def test_inspect_frozen(self):
    desc = inspect_lib.describe_frozen(self.graphs["hyaudio"]["path"])
    self.assertEqual(desc["placeholders"], [{
        "name": "hyaudio/vggish_input:0", "op": "Placeholder",
        "dtype": "float32", "shape": [-1, 640]}])
    self.assertCountEqual([t["name"] for t in desc["outputs"]],
                          ["hyaudio/predict_probs:0",
                           "hyaudio/predict_classes:0"])
    self.assertIn({"name": "hyaudio/fc1/weights:0", "op": "Const",
                   "dtype": "float32", "shape": [640, 32]}, desc["tensors"])
    text = inspect_lib.format_frozen_text(desc)
    self.assertIn('inputs = { vggish_input = "hyaudio/vggish_input:0" }', text)
    # Table init ops and their inputs are no outputs; the lookup result is.
    lookup = inspect_lib.describe_frozen(self.graphs["lookup"]["path"])
    self.assertEqual([t["name"] for t in lookup["outputs"]],
                     ["lookup/ids:0"])
    self.assertEqual([t["name"] for t in lookup["placeholders"]],
                     ["lookup/words:0"])


if __name__ == "__main__":
  absltest.main()
