"""Incremental deploys: a new version from a published one, end to end.

v1 is merged from five frozen graphs (a model with a large externalized
constant, a vocabulary table whose file goes to assets/, a function library,
a classifier and a plain head); the kept models' graph and vocabulary files
are then deleted, and v2 is published with base = "latest": one signature
replaced, one removed, one added. v2 must hold exactly the expected
signatures, the kept ones answering bit for bit as in v1, the new ones as
their frozen graphs; //cc/verify (TF Serving's C++ loader) and the model
server must accept it. Then every refusal: unknown signatures to remove,
missing or corrupt bases (refused before anything is written), a
serving_default left pointing at a removed signature.
"""

import json
import os
import shutil
import subprocess
import uuid

from absl.testing import absltest
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.common import built_binaries
from python.merge import errors
from python.merge import incremental
from python.merge import inspect_lib
from python.merge import merge_lib
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib
from python.merge.testdata import graphs
from python.serve import launcher

_TIMEOUT_SECONDS = 240


def _verifier() -> str:
  """//cc/verify from runfiles (as cc_verify_test finds it)."""
  return built_binaries.built_binary("cc", "verify", "verify",
                                     env_var="VERIFY_BINARY")


def _model(name: str, info: dict) -> merge_lib.ModelSpec:
  return merge_lib.ModelSpec(signature_name=name, frozen=info["path"],
                             inputs=info["inputs"], outputs=info["outputs"],
                             method=info["method"])


def _run_bundle(export_dir: str, signature: str, feeds: dict) -> dict:
  """Loads a version as TF's Python loader does and runs one signature."""
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    sig = meta.signature_def[signature]
    return sess.run(
        {alias: info.name for alias, info in sig.outputs.items()},
        {sig.inputs[alias].name: value for alias, value in feeds.items()})


def _records(export_dir: str) -> dict:
  """Signature name -> serialized warmup records of a version."""
  path = os.path.join(export_dir, warmup_lib.WARMUP_FILE)
  found = {}
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record)
    request = getattr(log, log.WhichOneof("log_type")).request
    found.setdefault(request.model_spec.signature_name, []).append(record)
  return found


class IncrementalDeployTest(absltest.TestCase):
  """v1 from five graphs, v2 replacing, removing and adding one each."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(absltest.get_default_test_tmpdir(),
                        f"incremental-{uuid.uuid4().hex}")
    cls.root = root
    cls.infos = {
        "audio": graphs.write_hyaudio(os.path.join(root, "audio.pb")),
        "large": graphs.write_large_const(os.path.join(root, "large.pb"),
                                          2 << 20),
        "words": graphs.write_vocabulary_table(
            os.path.join(root, "words.pb"),
            os.path.join(root, "vocab", "words.txt")),
        "fn": graphs.write_function_library(os.path.join(root, "fn.pb"), "a"),
        "classifier": graphs.write_classifier(
            os.path.join(root, "classifier.pb")),
    }
    cls.base = os.path.join(root, "models")
    cls.v1 = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(
            models=tuple(_model(k, v) for k, v in cls.infos.items()),
            serving_default="classifier"), cls.base)
    cls.feeds = {name: graphs.make_inputs(info, seed=3)
                 for name, info in cls.infos.items()}
    cls.v1_answers = {name: _run_bundle(cls.v1.path, name, cls.feeds[name])
                      for name in ("large", "words", "fn")}
    # The kept models' graphs (and the vocabulary file) are gone for v2.
    for name in ("large", "words", "fn"):
      os.remove(cls.infos[name]["path"])
    shutil.rmtree(os.path.join(root, "vocab"))
    cls.new_infos = {
        "audio": graphs.write_hyaudio(os.path.join(root, "audio_v2.pb"),
                                      seed=7),
        # Its `scale_fn` has the name of the kept `fn`'s, another body.
        "fn_b": graphs.write_function_library(
            os.path.join(root, "fn_b.pb"), "b"),
    }
    cls.spec2 = merge_lib.MergeSpec(
        models=(_model("audio", cls.new_infos["audio"]),
                _model("fn_b", cls.new_infos["fn_b"])),
        base="latest", remove=("classifier",), serving_default="audio",
        message="replace audio, drop classifier, add fn_b")
    cls.dry = merge_lib.merge_and_publish(cls.spec2, cls.base, dry_run=True)
    cls.versions_after_dry_run = sorted(os.listdir(cls.base))
    cls.v2 = merge_lib.merge_and_publish(cls.spec2, cls.base)

  def test_v2_holds_exactly_the_expected_signatures(self):
    self.assertEqual(self.v2.version, 2)
    self.assertEqual(self.v2.signatures,
                     ("audio", "large", "words", "fn", "fn_b"))
    meta = loader_impl.parse_saved_model(
        self.v2.path).meta_graphs[0]
    self.assertCountEqual(
        meta.signature_def,
        ["audio", "large", "words", "fn", "fn_b", "serving_default"])
    self.assertEqual(meta.signature_def["serving_default"],
                     meta.signature_def["audio"])
    # Nothing of the removed model survives.
    self.assertFalse([n.name for n in meta.graph_def.node
                      if n.name.startswith("classifier/")])
    self.assertEqual(self.v2.incremental.kept, ("large", "words", "fn"))
    self.assertEqual(self.v2.incremental.replaced, ("audio",))
    self.assertEqual(self.v2.incremental.removed, ("classifier",))
    self.assertEqual(self.v2.incremental.added, ("fn_b",))

  def test_kept_signatures_answer_bit_identically_to_v1(self):
    v1_meta = loader_impl.parse_saved_model(
        self.v1.path).meta_graphs[0]
    v2_meta = loader_impl.parse_saved_model(
        self.v2.path).meta_graphs[0]
    for name, before in self.v1_answers.items():
      self.assertEqual(v2_meta.signature_def[name],
                       v1_meta.signature_def[name], name)
      after = _run_bundle(self.v2.path, name, self.feeds[name])
      self.assertEqual(sorted(after), sorted(before))
      for alias in before:
        self.assertEqual(after[alias].dtype, before[alias].dtype)
        np.testing.assert_array_equal(after[alias], before[alias],
                                      f"{name}/{alias}")
    # The large constant really lives in the copied checkpoint.
    reader = tf.train.load_checkpoint(
        os.path.join(self.v2.path, "variables", "variables"))
    self.assertIn("large/large/weights", reader.get_variable_to_shape_map())
    self.assertNotIn("classifier", str(reader.get_variable_to_shape_map()))

  def test_new_signatures_answer_as_their_frozen_graphs(self):
    for name, info in self.new_infos.items():
      feeds = graphs.make_inputs(info, seed=5)
      want = graphs.run_frozen(info, feeds)
      got = _run_bundle(self.v2.path, name, feeds)
      for alias in want:
        np.testing.assert_array_equal(got[alias], want[alias],
                                      f"{name}/{alias}")
    # And they differ from what they replaced / collided with.
    old = _run_bundle(self.v1.path, "audio", self.feeds["audio"])
    new = _run_bundle(self.v2.path, "audio", self.feeds["audio"])
    self.assertFalse(np.array_equal(old["probs"], new["probs"]))

  def test_assets_and_warmup_records_carried_over(self):
    self.assertEqual(os.listdir(os.path.join(self.v2.path, "assets")),
                     ["words.txt"])
    v1_records, v2_records = _records(self.v1.path), _records(self.v2.path)
    self.assertCountEqual(v2_records, self.v2.signatures)
    for name in ("large", "words", "fn"):
      self.assertEqual(v2_records[name], v1_records[name], name)
    self.assertLen(v2_records["fn_b"], 1)

  def test_manifest_records_every_signature(self):
    manifest = incremental.read_manifest(self.v2.path)
    self.assertEqual(manifest["base"]["version"], 1)
    self.assertEqual(manifest["signatures"], list(self.v2.signatures))
    sources = manifest["sources"]
    self.assertEqual(
        {n: s["status"] for n, s in sources.items()},
        {"audio": "replaced", "large": "kept", "words": "kept", "fn": "kept",
         "fn_b": "added"})
    self.assertEqual(sources["large"]["version"], 1)
    self.assertEqual(sources["fn_b"]["version"], 2)
    self.assertEqual(sources["fn"]["method"], "predict")
    v1_manifest = incremental.read_manifest(self.v1.path)
    self.assertEqual(sources["large"]["fingerprint"],
                     v1_manifest["sources"]["large"]["fingerprint"])
    with open(self.new_infos["audio"]["path"], "rb") as f:
      import hashlib  # pylint: disable=g-import-not-at-top
      self.assertEqual(sources["audio"]["sha256"],
                       hashlib.sha256(f.read()).hexdigest())
    self.assertNotEqual(sources["audio"]["fingerprint"],
                        v1_manifest["sources"]["audio"]["fingerprint"])
    self.assertEqual(manifest["removed"]["classifier"]["status"], "removed")
    self.assertEqual(manifest["removed"]["classifier"]["version"], 1)
    # A full merge's manifest says what it added, relative to the previous.
    self.assertEqual({n: s["status"] for n, s in
                      v1_manifest["sources"].items()},
                     {n: "added" for n in self.infos})

  def test_inspect_dir_shows_the_manifest(self):
    desc = inspect_lib.describe_saved_model(self.v2.path)
    self.assertEqual(desc["manifest"]["sources"]["words"]["status"], "kept")
    text = inspect_lib.format_saved_model_text(desc)
    self.assertIn(f"base: version 1 at {self.v1.path}", text)
    self.assertRegex(text, r"words \[predict\]: kept \(from version 1, built "
                     r"in version 1\), fingerprint [0-9a-f]{16}, frozen "
                     r".*/words\.pb")
    self.assertIn("fn_b [predict]: added (from version 2", text)
    self.assertIn("classifier: removed (was in version 1)", text)

  def test_dry_run_prints_the_plan_and_writes_nothing(self):
    self.assertTrue(self.dry.dry_run)
    self.assertIn("1", self.versions_after_dry_run)
    self.assertFalse([n for n in self.versions_after_dry_run
                      if n.startswith(".staging") or n == "2"])
    text = self.dry.to_text()
    self.assertIn(f"base: version 1 at {self.v1.path}", text)
    self.assertIn("replaced: audio", text)
    self.assertIn("removed: classifier", text)
    self.assertIn("added: fn_b", text)
    self.assertIn("kept: large, words, fn", text)
    summary = json.loads(merge_lib.to_json(self.dry))
    self.assertEqual(summary["incremental"]["base_version"], 1)
    self.assertEqual(summary["incremental"]["kept"], ["large", "words", "fn"])

  def test_cc_verify_accepts_v2(self):
    for run in ("smoke", "warmup"):
      proc = subprocess.run(
          [_verifier(), f"--export_dir={self.v2.path}", f"--run={run}",
           "--json"], capture_output=True, text=True,
          timeout=_TIMEOUT_SECONDS, check=False)
      self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
      report = json.loads(proc.stdout)
      self.assertTrue(report["ok"], report)
      self.assertCountEqual(report["signatures"],
                            list(self.v2.signatures) + ["serving_default"])

  def test_model_server_serves_v2(self):
    with launcher.ServerProcess(model_name="merged",
                                model_base_path=self.base) as server:
      channel = grpc.insecure_channel(server.address)
      self.addCleanup(channel.close)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      for name in ("large", "words", "fn"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "merged"
        request.model_spec.signature_name = name
        for alias, value in self.feeds[name].items():
          request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        response = stub.Predict(request, timeout=60)
        self.assertEqual(response.model_spec.version.value, 2)
        for alias, want in self.v1_answers[name].items():
          np.testing.assert_array_equal(
              tf.make_ndarray(response.outputs[alias]), want,
              f"{name}/{alias}")


class IncrementalRefusalTest(absltest.TestCase):
  """Bad bases and plans are refused before anything is written."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(absltest.get_default_test_tmpdir(),
                        f"refusal-{uuid.uuid4().hex}")
    cls.root = root
    cls.infos = {
        "audio": graphs.write_hyaudio(os.path.join(root, "audio.pb")),
        "large": graphs.write_large_const(os.path.join(root, "large.pb"),
                                          2 << 20),
    }
    cls.base = os.path.join(root, "models")
    cls.v1 = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(_model("audio", cls.infos["audio"]),
                                    _model("large", cls.infos["large"])),
                            serving_default="large"), cls.base, verify=False)

  def _copy_base(self) -> str:
    """Version 1 with its history files, as the merge published them."""
    base = os.path.join(self.create_tempdir().full_path, "models")
    shutil.copytree(self.base, base,
                    ignore=shutil.ignore_patterns(".merge.lock", "[2-9]*"))
    return base

  def _assert_refused(self, spec, base, error, pattern):
    def listing():
      if not os.path.isdir(base):
        return None
      names = sorted(n for n in os.listdir(base) if n != ".merge.lock")
      history = {}
      for name in names:
        path = os.path.join(base, name)
        if os.path.isfile(path):
          with open(path, "rb") as f:
            history[name] = f.read()
      return names, history
    before = listing()
    with self.assertRaisesRegex(error, pattern):
      merge_lib.merge_and_publish(spec, base, verify=False)
    self.assertEqual(listing(), before, "something was written")

  def test_removing_an_unknown_signature_lists_the_base_signatures(self):
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audoi",))
    self._assert_refused(
        spec, self.base, errors.SpecError,
        r"\['audoi'\] not in the base .*/1, whose signatures are "
        r"\['audio', 'large'\]; did you mean 'audio'\?")

  def test_unknown_base_version_lists_the_versions(self):
    spec = merge_lib.MergeSpec(models=(), base=7, remove=("audio",))
    self._assert_refused(spec, self.base, merge_lib.BaseError,
                         r"version 7 is not in .*; its versions are 1\.")

  def test_latest_of_an_empty_base_says_publish_a_full_merge(self):
    base = os.path.join(self.create_tempdir().full_path, "empty")
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audio",))
    self._assert_refused(spec, base, merge_lib.BaseError,
                         "no published version to start from; publish a "
                         "full merge first")

  def test_missing_base_directory(self):
    spec = merge_lib.MergeSpec(models=(), base="/nonexistent/models/3",
                               remove=("audio",))
    self._assert_refused(spec, self.base, merge_lib.BaseError,
                         "base /nonexistent/models/3 does not exist")

  def test_corrupt_saved_model_is_refused(self):
    base = self._copy_base()
    path = os.path.join(base, "1", "saved_model.pb")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audio",))
    self._assert_refused(spec, base, merge_lib.BaseError,
                         r"saved_model.pb is corrupt")

  def test_corrupt_checkpoint_is_refused(self):
    base = self._copy_base()
    os.remove(os.path.join(base, "1", "variables", "variables.index"))
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audio",))
    self._assert_refused(spec, base, merge_lib.BaseError,
                         r"variables checkpoint .* cannot be read")

  def test_corrupt_warmup_file_is_refused(self):
    base = self._copy_base()
    path = os.path.join(base, "1", warmup_lib.WARMUP_FILE)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) - 3)
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audio",))
    self._assert_refused(spec, base, merge_lib.BaseError,
                         r"the warmup file .* is corrupt")

  def test_missing_asset_of_a_kept_signature_is_refused(self):
    base = os.path.join(self.create_tempdir().full_path, "models")
    root = self.create_tempdir().full_path
    words = graphs.write_vocabulary_table(
        os.path.join(root, "words.pb"), os.path.join(root, "words.txt"))
    merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(_model("words", words),
                                    _model("audio", self.infos["audio"]))),
        base, verify=False)
    os.remove(os.path.join(base, "1", "assets", "words.txt"))
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("audio",))
    self._assert_refused(spec, base, merge_lib.BaseError,
                         r"the asset .*words.txt of a kept signature is "
                         "missing")

  def test_serving_default_pointing_at_a_removed_signature(self):
    spec = merge_lib.MergeSpec(models=(), base="latest", remove=("large",))
    self._assert_refused(
        spec, self.base, errors.SpecError,
        r'serves "large" as serving_default, and "remove" drops it; name '
        r"the new default")
    # Naming a new one makes it fine (dry run: nothing written).
    result = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(), base="latest", remove=("large",),
                            serving_default="audio"), self.base,
        dry_run=True)
    self.assertEqual(result.signatures, ("audio",))
    self.assertEqual(result.serving_default, "audio")

  def test_base_without_serving_default(self):
    base = os.path.join(self.create_tempdir().full_path, "models")
    merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(_model("audio", self.infos["audio"]),
                                    _model("large", self.infos["large"]))),
        base, verify=False)
    result = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(), base="latest", remove=("large",)),
        base)
    self.assertEqual(result.signatures, ("audio",))
    self.assertIsNone(result.serving_default)
    meta = loader_impl.parse_saved_model(result.path).meta_graphs[0]
    self.assertEqual(list(meta.signature_def), ["audio"])

  def test_removing_every_signature_is_refused(self):
    spec = merge_lib.MergeSpec(models=(), base="latest",
                               remove=("audio", "large"),
                               serving_default=None)
    with self.assertRaisesRegex(errors.SpecError, "removes every signature"):
      incremental.prepare(spec, self.base)

  def test_a_new_graph_missing_is_refused_before_writing(self):
    spec = merge_lib.MergeSpec(
        models=(merge_lib.ModelSpec(
            signature_name="extra", frozen="/nonexistent/extra.pb",
            inputs={"x": "x:0"}, outputs={"y": "y:0"}),), base="latest")
    self._assert_refused(spec, self._copy_base(), errors.GraphError,
                         "extra.pb")

  def test_new_vocabulary_with_a_kept_file_name_is_renamed(self):
    root = self.create_tempdir().full_path
    base = os.path.join(root, "models")
    words = graphs.write_vocabulary_table(
        os.path.join(root, "words.pb"), os.path.join(root, "a", "words.txt"))
    merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(_model("words", words),)), base,
        verify=False)
    other = graphs.write_vocabulary_table(
        os.path.join(root, "other.pb"), os.path.join(root, "b", "words.txt"))
    with open(other["vocabulary_path"], "w") as f:  # Other ids, same name.
      f.write("".join(w + "\n" for w in reversed(other["vocabulary"])))
    result = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(_model("other", other),), base="latest"),
        base)
    self.assertCountEqual(os.listdir(os.path.join(result.path, "assets")),
                          ["words.txt", "other_words.txt"])
    feeds = graphs.make_inputs(words)
    for name, info in (("words", words), ("other", other)):
      want = graphs.run_frozen(info, feeds)["ids"]
      np.testing.assert_array_equal(
          _run_bundle(result.path, name, feeds)["ids"], want, name)
    self.assertFalse(np.array_equal(graphs.run_frozen(words, feeds)["ids"],
                                    graphs.run_frozen(other, feeds)["ids"]))

  def test_pure_removal_copies_only_kept_variables(self):
    base = self._copy_base()
    old = incremental._COPY_BATCH_BYTES  # pylint: disable=protected-access
    incremental._COPY_BATCH_BYTES = 1  # One tensor per shard.
    self.addCleanup(setattr, incremental, "_COPY_BATCH_BYTES", old)
    result = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(), base=1, remove=("audio",)), base)
    self.assertEqual(result.signatures, ("large",))
    self.assertEqual(result.serving_default, "large")
    feeds = graphs.make_inputs(self.infos["large"])
    np.testing.assert_array_equal(
        _run_bundle(result.path, "large", feeds)["output"],
        _run_bundle(os.path.join(base, "1"), "large", feeds)["output"])


class SpecKeysTest(absltest.TestCase):
  """`base` and `remove` in TOML specs and MergeSpec."""

  def _parse(self, text, base_dir="/specs"):
    return spec_lib.parse_spec(text, "merge.toml", base_dir)

  def test_base_and_remove_without_models(self):
    spec = self._parse('base = "latest"\nremove = ["a", "b"]\n')
    self.assertEqual(spec.base, "latest")
    self.assertEqual(spec.remove, ("a", "b"))
    self.assertEqual(spec.models, ())

  def test_base_forms(self):
    self.assertEqual(self._parse("base = 3\nremove = ['a']").base, 3)
    self.assertEqual(self._parse("base = '3'\nremove = ['a']").base, 3)
    self.assertEqual(self._parse("base = 'models/3'\nremove = ['a']").base,
                     "/specs/models/3")
    self.assertEqual(self._parse("base = 'gs://b/m/3'\nremove = ['a']").base,
                     "gs://b/m/3")

  def test_bad_values(self):
    for text, pattern in (
        ("base = true", 'key "base": must be "latest"'),
        ("base = -1", "negative"),
        ("base = ''", "is empty"),
        ("base = 'latest'\nremove = 'a'", "must be a list"),
        ("base = 'latest'\nremove = ['a', 'a']", "listed twice"),
        ("base = 'latest'\nremove = ['a/b']", "not a signature name"),
        ("remove = ['a']", 'missing key "model"'),
    ):
      with self.assertRaisesRegex(errors.SpecError, pattern, msg=text):
        self._parse(text)

  def test_removed_and_replaced_at_once(self):
    text = ('base = "latest"\nremove = ["a"]\n[[model]]\n'
            'signature_name = "a"\nfrozen = "a.pb"\n'
            'inputs = { x = "x:0" }\noutputs = { y = "y:0" }\n')
    with self.assertRaisesRegex(errors.SpecError,
                                r"\['a'\] also have a \[\[model\]\] entry"):
      self._parse(text)

  def test_python_spec_needs_absolute_base_path(self):
    with self.assertRaisesRegex(errors.SpecError, "absolute path or a URI"):
      spec_lib.validate_spec(spec_lib.MergeSpec(models=(), base="models/3",
                                                remove=["a"]))
    spec_lib.validate_spec(spec_lib.MergeSpec(models=(), base="latest",
                                              remove=["a"]))

  def test_full_merge_still_needs_models(self):
    with self.assertRaisesRegex(errors.SpecError, "no models"):
      spec_lib.validate_spec(spec_lib.MergeSpec(models=()))


if __name__ == "__main__":
  absltest.main()
