"""End-to-end tests of the merge core: write bundles, load them, compare.

Every signature of a merged bundle must answer exactly what its frozen graph
answers alone on the same inputs. The bundles are loaded with TensorFlow's
SavedModel loader (`serve` tag) in a fresh session.
"""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
from tensorflow_serving.apis import prediction_log_pb2

from python.merge import bundle_writer
from python.merge import errors
from python.merge import externalize
from python.merge import graph_io
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib
from python.merge.testdata import graphs

# The graph of "large" holds 3 MiB of weights; the default threshold is 1 MiB.
_LARGE_BYTES = 3 << 20
_THRESHOLDS = {"default": 1 << 20, "everything": 0}


def setUpModule():
  # What the flag help tells users to set on the server: oneDNN then runs
  # MatMul/Conv with externalized (variable) weights through the same
  # kernel as with constant weights. Without it, "everything" answers
  # differ from the frozen graphs in the last bits (hyaudio's dense layers).
  # Set before any TensorFlow kernel is created.
  os.environ[externalize.ONEDNN_FROZEN_WEIGHTS_ENV] = "1"


def _session_config(unused_threshold):
  """TensorFlow's default session config (Grappler on), as served."""
  return tf.compat.v1.ConfigProto()


def _model(name, info, **overrides):
  fields = dict(signature_name=name, frozen=info["path"],
                inputs=dict(info["inputs"]), outputs=dict(info["outputs"]),
                method=info["method"])
  fields.update(overrides)
  return spec_lib.ModelSpec(**fields)


def _varint(n):
  out = b""
  while True:
    byte, n = n & 0x7F, n >> 7
    out += bytes([byte | (0x80 if n else 0)])
    if not n:
      return out


def _load_saved_model_proto(export_dir):
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  return saved_model


def _run_signature(sess, sig, feeds):
  fetches = {alias: t.name for alias, t in sig.outputs.items()}
  return sess.run(fetches,
                  {sig.inputs[alias].name: v for alias, v in feeds.items()})


class MergedBundleTest(parameterized.TestCase):
  """One bundle with every kind of graph, written with two thresholds."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    frozen = os.path.join(cls.tmp, "frozen")
    cls.infos = {
        "hyaudio_1": graphs.write_hyaudio(f"{frozen}/hyaudio.pb"),
        "hyaudio_text": graphs.write_hyaudio(f"{frozen}/hyaudio.pbtxt",
                                             seed=7),
        "loop": graphs.write_while_loop(f"{frozen}/loop.pb"),
        "loop_v2": graphs.write_while_loop(f"{frozen}/loop_v2.pb", "v2",
                                           iterations=3),
        "table": graphs.write_lookup_table(f"{frozen}/table.pb"),
        "table_offset": graphs.write_lookup_table(f"{frozen}/table2.pb",
                                                  offset=10),
        "fn_a": graphs.write_function_library(f"{frozen}/fn_a.pb", "a"),
        "fn_b": graphs.write_function_library(f"{frozen}/fn_b.pb", "b"),
        "large": graphs.write_large_const(f"{frozen}/large.pb", _LARGE_BYTES),
        "classifier": graphs.write_classifier(f"{frozen}/classifier.pb"),
        "regressor": graphs.write_regressor(f"{frozen}/regressor.pb"),
    }
    # The classic example: one audio model exported as two signatures.
    cls.infos["hyaudio_2"] = cls.infos["hyaudio_1"]
    cls.spec = spec_lib.MergeSpec(
        models=tuple(_model(n, i) for n, i in cls.infos.items()),
        serving_default="hyaudio_1", message="all kinds")
    cls.bundles = {}
    cls.sessions = {}
    cls.metas = {}
    for label, threshold in _THRESHOLDS.items():
      export_dir = os.path.join(cls.tmp, f"bundle_{label}")
      cls.bundles[label] = (export_dir, bundle_writer.write_saved_model(
          cls.spec, export_dir, externalize_threshold_bytes=threshold))
      sess = tf.compat.v1.Session(graph=tf.Graph(),
                                  config=_session_config(label))
      cls.metas[label] = tf.compat.v1.saved_model.loader.load(
          sess, ["serve"], export_dir)
      cls.sessions[label] = sess

  @classmethod
  def tearDownClass(cls):
    for sess in cls.sessions.values():
      sess.close()
    super().tearDownClass()

  @parameterized.product(
      threshold=list(_THRESHOLDS),
      signature=["hyaudio_1", "hyaudio_2", "hyaudio_text", "loop", "loop_v2",
                 "table", "table_offset", "fn_a", "fn_b", "large",
                 "classifier", "regressor"])
  def test_signature_answers_like_frozen_graph(self, threshold, signature):
    info = self.infos[signature]
    sig = self.metas[threshold].signature_def[signature]
    for seed in (0, 1):
      feeds = graphs.make_inputs(info, batch_size=3, seed=seed)
      want = graphs.run_frozen(info, feeds,
                               config=_session_config(threshold))
      got = _run_signature(self.sessions[threshold], sig, feeds)
      self.assertEqual(set(got), set(want))
      for alias in want:
        # Bit-identical, not approximately equal.
        np.testing.assert_array_equal(got[alias], want[alias],
                                      err_msg=f"{signature}/{alias}")

  def test_models_with_same_shared_names_do_not_share_tables(self):
    sig = self.metas["default"].signature_def
    words = np.array([b"apple", b"cherry"], dtype=object)
    ids = _run_signature(self.sessions["default"], sig["table"],
                         {"words": words})["ids"]
    ids_offset = _run_signature(self.sessions["default"],
                                sig["table_offset"], {"words": words})["ids"]
    np.testing.assert_array_equal(ids, [0, 2])
    np.testing.assert_array_equal(ids_offset, [10, 12])
    graph_def = self.metas["default"].graph_def
    shared = sorted(n.attr["shared_name"].s.decode() for n in graph_def.node
                    if n.op == "HashTableV2")
    self.assertEqual(shared,
                     ["table/vocab_table", "table_offset/vocab_table"])

  def test_signature_defs(self):
    sigs = self.metas["default"].signature_def
    self.assertEqual(
        sorted(sigs),
        sorted(list(self.infos) + ["serving_default"]))
    hy = sigs["hyaudio_1"]
    self.assertEqual(hy.method_name, "tensorflow/serving/predict")
    self.assertEqual(hy.inputs["inputs"].name,
                     "hyaudio_1/hyaudio/vggish_input:0")
    self.assertEqual(hy.inputs["inputs"].dtype, tf.float32.as_datatype_enum)
    self.assertEqual([d.size for d in hy.inputs["inputs"].tensor_shape.dim],
                     [-1, 640])
    self.assertEqual(hy.outputs["classes"].dtype, tf.int32.as_datatype_enum)
    self.assertEqual([d.size for d in hy.outputs["classes"].tensor_shape.dim],
                     [-1])
    self.assertEqual([d.size for d in hy.outputs["probs"].tensor_shape.dim],
                     [-1, 8])
    self.assertEqual(sigs["serving_default"], hy)
    cls_sig = sigs["classifier"]
    self.assertEqual(cls_sig.method_name, "tensorflow/serving/classify")
    self.assertEqual(cls_sig.inputs["inputs"].dtype,
                     tf.string.as_datatype_enum)
    self.assertEqual(cls_sig.outputs["classes"].dtype,
                     tf.string.as_datatype_enum)
    self.assertEqual(
        [d.size for d in cls_sig.outputs["scores"].tensor_shape.dim], [-1, 3])
    self.assertEqual(sigs["regressor"].method_name,
                     "tensorflow/serving/regress")
    self.assertEqual(
        [d.size for d in sigs["regressor"].outputs["outputs"].tensor_shape.dim],
        [-1])
    _, info = self.bundles["default"]
    self.assertEqual(list(info.signatures), list(self.infos))
    self.assertEqual(info.signatures["hyaudio_1"].outputs["probs"],
                     ("float32", [-1, 8]))
    self.assertEqual(info.signatures["classifier"].method, "classify")

  def test_same_graph_listed_twice_is_stored_once(self):
    sigs = self.metas["default"].signature_def
    self.assertEqual(sigs["hyaudio_2"].inputs["inputs"].name,
                     "hyaudio_1/hyaudio/vggish_input:0")
    graph_def = self.metas["default"].graph_def
    self.assertFalse([n.name for n in graph_def.node
                      if n.name.startswith("hyaudio_2/")])
    _, info = self.bundles["default"]
    self.assertEqual(info.unique_graphs, len(self.infos) - 1)

  def test_colliding_function_libraries_are_renamed(self):
    library = self.metas["default"].graph_def.library
    names = sorted(f.signature.name for f in library.function)
    self.assertEqual(
        [n for n in names if "fn" in n or "grad" in n],
        ["common_fn", "outer_fn", "outer_fn_fn_b", "scale_fn", "scale_fn_fn_b",
         "scale_grad", "scale_grad_fn_b"])
    gradients = {g.function_name: g.gradient_func for g in library.gradient}
    self.assertEqual(gradients["scale_fn"], "scale_grad")
    self.assertEqual(gradients["scale_fn_fn_b"], "scale_grad_fn_b")
    outer_b = next(f for f in library.function
                   if f.signature.name == "outer_fn_fn_b")
    self.assertIn("scale_fn_fn_b", [n.op for n in outer_b.node_def])
    call_b = next(n for n in self.metas["default"].graph_def.node
                  if n.name == "fn_b/fn/call")
    self.assertEqual(call_b.attr["f"].func.name, "scale_fn_fn_b")

  def test_while_loop_frames_are_scoped(self):
    frames = {n.attr["frame_name"].s.decode()
              for n in self.metas["default"].graph_def.node if n.op == "Enter"}
    self.assertTrue(frames)
    for frame in frames:
      self.assertTrue(frame.startswith("loop/"), frame)

  def test_default_attrs_are_stripped(self):
    saved_model = _load_saved_model_proto(self.bundles["default"][0])
    meta = saved_model.meta_graphs[0]
    self.assertTrue(meta.meta_info_def.stripped_default_attrs)
    self.assertEqual(list(meta.meta_info_def.tags), ["serve"])
    self.assertEqual(meta.meta_info_def.tensorflow_version, tf.__version__)
    offenders = []
    nodes = list(meta.graph_def.node) + [
        n for f in meta.graph_def.library.function for n in f.node_def]
    for node in nodes:
      op_def = op_def_registry.get(node.op)
      for attr in op_def.attr if op_def else ():
        if (attr.HasField("default_value") and attr.name in node.attr and
            node.attr[attr.name] == attr.default_value):
          offenders.append(f"{node.name}.{attr.name}")
    self.assertEqual(offenders, [])
    # MatMul's transpose_a=false was in the frozen graph and is gone.
    matmul = next(n for n in meta.graph_def.node
                  if n.name == "hyaudio_1/hyaudio/MatMul")
    self.assertNotIn("transpose_a", matmul.attr)

  def test_large_constants_move_to_variables(self):
    export_dir, info = self.bundles["default"]
    self.assertEqual(info.externalized, 1)
    self.assertGreaterEqual(info.externalized_bytes, _LARGE_BYTES)
    saved_model_bytes = os.path.getsize(os.path.join(export_dir,
                                                     "saved_model.pb"))
    self.assertLess(saved_model_bytes, _LARGE_BYTES)
    self.assertTrue(os.path.exists(
        os.path.join(export_dir, "variables", "variables.index")))
    self.assertFalse(os.path.exists(
        os.path.join(export_dir, "variables", "merge_tmp_shards")))
    self.assertEqual(info.files["saved_model.pb"], saved_model_bytes)
    self.assertEqual(info.total_bytes, sum(info.files.values()))
    graph_def = self.metas["default"].graph_def
    weights = next(n for n in graph_def.node
                   if n.name == "large/large/weights")
    self.assertEqual(weights.op, "ReadVariableOp")
    # With threshold 0 every non-empty constant of the graphs is a variable,
    # but those Grappler folds into other constants (kept inline so answers
    # stay bit-identical, see externalize.py).
    _, everything = self.bundles["everything"]
    self.assertGreater(everything.externalized, 20)
    consts = [n.name for n in self.metas["everything"].graph_def.node
              if n.op == "Const" and not n.name.startswith("merge_internal/")
              and graph_io.tensor_nbytes(n.attr["value"].tensor)]
    self.assertEqual(sorted(consts), sorted(everything.kept_inline))
    self.assertLess(len(consts), 5)

  def test_externalized_matmul_weights_are_reported(self):
    _, default = self.bundles["default"]
    self.assertEqual(default.externalized_weights, ["large/large/weights"])
    _, everything = self.bundles["everything"]
    self.assertContainsSubset(
        ["hyaudio_1/hyaudio/fc1/weights", "hyaudio_1/hyaudio/logits/weights",
         "large/large/weights"], everything.externalized_weights)
    self.assertNotIn("hyaudio_1/hyaudio/fc1/biases",
                     everything.externalized_weights)

  @parameterized.parameters("default", "everything")
  def test_warmup_requests_replay(self, threshold):
    export_dir, _ = self.bundles[threshold]
    path = os.path.join(export_dir, warmup_lib.WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      logs.append(prediction_log_pb2.PredictionLog.FromString(record))
    kinds = {}
    for log in logs:
      kind = log.WhichOneof("log_type")
      request = getattr(log, kind).request
      kinds[request.model_spec.signature_name] = kind
    self.assertEqual(
        kinds,
        {name: {"classify": "classify_log", "regress": "regress_log"}.get(
            info["method"], "predict_log")
         for name, info in self.infos.items()})
    sess = self.sessions[threshold]
    sigs = self.metas[threshold].signature_def
    for log in logs:
      if log.WhichOneof("log_type") != "predict_log":
        request = getattr(log, log.WhichOneof("log_type")).request
        self.assertLen(request.input.example_list.examples, 1)
        feeds = {"inputs": np.array(
            [e.SerializeToString() for e in request.input.example_list.examples],
            dtype=object)}
      else:
        request = log.predict_log.request
        feeds = {a: tf.make_ndarray(t) for a, t in request.inputs.items()}
        for value in feeds.values():
          self.assertEqual(value.shape[:1], (1,))
      # Every warmup request runs (TF Serving refuses to load otherwise).
      outputs = _run_signature(sess, sigs[request.model_spec.signature_name],
                               feeds)
      self.assertTrue(outputs)

  def test_plan_predicts_what_write_produces(self):
    planned = bundle_writer.plan(self.spec)
    _, written = self.bundles["default"]
    self.assertEqual(planned.signatures, written.signatures)
    self.assertEqual(planned.files["saved_model.pb"],
                     written.files["saved_model.pb"])
    self.assertEqual(planned.files[warmup_lib.WARMUP_FILE],
                     written.files[warmup_lib.WARMUP_FILE])
    self.assertEqual(planned.externalized_bytes, written.externalized_bytes)
    self.assertEqual(planned.nodes, written.nodes)


class BundleOptionsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.hyaudio = graphs.write_hyaudio(os.path.join(self.dir, "hy.pb"))

  def _write(self, models, name="out", **kwargs):
    export_dir = os.path.join(self.dir, name)
    info = bundle_writer.write_saved_model(
        spec_lib.MergeSpec(models=tuple(models)), export_dir, **kwargs)
    return export_dir, info

  def test_warmup_examples_carry_features_the_graph_requires(self):
    # TF Serving refuses to load a version whose warmup request fails; an
    # empty tf.Example fails on a feature without a default.
    clf = graphs.write_classifier(os.path.join(self.dir, "clf.pb"),
                                  required_feature=True)
    reg = graphs.write_regressor(os.path.join(self.dir, "reg.pb"),
                                 required_feature=True)
    export_dir, _ = self._write([_model("clf", clf), _model("reg", reg)])
    path = os.path.join(export_dir, warmup_lib.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r)
            for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    self.assertLen(logs, 2)
    with tf.Graph().as_default() as graph:
      with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                    export_dir)
        for log in logs:
          request = getattr(log, log.WhichOneof("log_type")).request
          examples = request.input.example_list.examples
          self.assertLen(examples, 1)
          feature = examples[0].features.feature["x"]
          self.assertLen(feature.float_list.value, 4)
          sig = meta.signature_def[request.model_spec.signature_name]
          outputs = _run_signature(sess, sig, {"inputs": np.array(
              [examples[0].SerializeToString()], dtype=object)})
          self.assertTrue(outputs)
        # Without the synthesized features the same request would fail.
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    "is required but could not be found"):
          _run_signature(sess, meta.signature_def["clf"], {
              "inputs": np.array([b""], dtype=object)})

  def test_same_graph_twice_is_no_larger_than_once(self):
    once_dir, once = self._write([_model("a", self.hyaudio)], "once",
                                 warmup=False)
    twice_dir, twice = self._write(
        [_model("a", self.hyaudio),
         _model("b", self.hyaudio,
                outputs={"probabilities": "hyaudio/predict_probs:0"})],
        "twice", warmup=False)
    self.assertEqual(twice.unique_graphs, 1)
    self.assertEqual(twice.nodes, once.nodes)
    once_size = os.path.getsize(os.path.join(once_dir, "saved_model.pb"))
    twice_size = os.path.getsize(os.path.join(twice_dir, "saved_model.pb"))
    # Only the second SignatureDef is added.
    self.assertLess(twice_size - once_size, 512)
    self.assertGreater(once_size, 80_000)

  def test_equal_size_files_are_told_apart_by_content(self):
    graph_def = tf.compat.v1.GraphDef()
    with open(self.hyaudio["path"], "rb") as f:
      data = f.read()
    graph_def.ParseFromString(data)
    const = next(n for n in graph_def.node
                 if n.op == "Const" and n.attr["value"].tensor.tensor_content)
    content = bytearray(const.attr["value"].tensor.tensor_content)
    content[0] ^= 1
    const.attr["value"].tensor.tensor_content = bytes(content)
    other = dict(self.hyaudio, path=os.path.join(self.dir, "other.pb"))
    copy = dict(self.hyaudio, path=os.path.join(self.dir, "copy.pb"))
    with open(other["path"], "wb") as f:
      f.write(graph_def.SerializeToString())
    with open(copy["path"], "wb") as f:
      f.write(data)
    self.assertEqual(os.path.getsize(other["path"]), len(data))
    _, info = self._write(
        [_model("a", self.hyaudio), _model("b", other), _model("c", copy)],
        warmup=False)
    self.assertEqual(info.unique_graphs, 2)
    self.assertTrue(info.signatures["b"].tensors["inputs"].startswith("b/"))
    self.assertTrue(info.signatures["c"].tensors["inputs"].startswith("a/"))

  def test_no_warmup_and_no_variables(self):
    export_dir, info = self._write([_model("a", self.hyaudio)], warmup=False)
    self.assertEqual(sorted(info.files), [bundle_writer.MANIFEST_FILE,
                                          "saved_model.pb"])
    self.assertEqual(sorted(os.listdir(export_dir)),
                     ["assets.extra", "saved_model.pb"])
    self.assertEqual(info.externalized, 0)

  def test_threshold_above_every_constant_keeps_them_inline(self):
    large = graphs.write_large_const(os.path.join(self.dir, "l.pb"), 2 << 20)
    export_dir, info = self._write([_model("l", large)],
                                   externalize_threshold_bytes=4 << 20)
    self.assertEqual(info.externalized, 0)
    self.assertGreater(
        os.path.getsize(os.path.join(export_dir, "saved_model.pb")), 2 << 20)

  def test_ram_filesystem_uri(self):
    export_dir = "ram://merge_test/bundle"
    info = bundle_writer.write_saved_model(
        spec_lib.MergeSpec(models=(_model("a", self.hyaudio),)), export_dir)
    self.assertEqual(sorted(info.files),
                     [bundle_writer.MANIFEST_FILE,
                      "assets.extra/tf_serving_warmup_requests",
                      "saved_model.pb"])
    self.assertTrue(tf.io.gfile.exists(export_dir + "/saved_model.pb"))
    self.assertEqual(bundle_writer.read_manifest(export_dir)["fingerprint"],
                     info.fingerprint)


class VocabularyAssetTest(absltest.TestCase):
  """Tables initialized from vocabulary files work where the file is gone."""

  def test_vocabulary_files_are_copied_into_assets(self):
    tmp = self.create_tempdir().full_path
    vocab_dir = os.path.join(tmp, "vocab")
    first = graphs.write_vocabulary_table(
        os.path.join(tmp, "first.pb"), os.path.join(vocab_dir, "words.txt"))
    # Same file name, other directory: both files must be kept apart.
    second = graphs.write_vocabulary_table(
        os.path.join(tmp, "second.pb"),
        os.path.join(vocab_dir, "other", "words.txt"))
    with open(second["vocabulary_path"], "w") as f:
      f.write("zebra\nkiwi\n")
    spec = spec_lib.MergeSpec(models=(_model("first", first),
                                      _model("second", second)))
    feeds = graphs.make_inputs(first, batch_size=6)
    want = {name: graphs.run_frozen(info, feeds)["ids"]
            for name, info in (("first", first), ("second", second))}
    self.assertEqual(list(want["second"]), [1, -1, -1, -1, -1, -1])
    planned = bundle_writer.plan(spec, externalize_threshold_bytes=0)
    export_dir = os.path.join(tmp, "bundle")
    info = bundle_writer.write_saved_model(spec, export_dir,
                                           externalize_threshold_bytes=0)
    self.assertEqual(
        {k: v for k, v in info.files.items() if k.startswith("assets/")},
        {"assets/words.txt": 29, "assets/second_words.txt": 11})
    self.assertEqual(
        {k: v for k, v in planned.files.items() if k.startswith("assets/")},
        {"assets/words.txt": 29, "assets/second_words.txt": 11})
    # The bundle must not depend on the original files any more.
    shutil.rmtree(vocab_dir)
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
      meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                   export_dir)
      self.assertEqual(
          sorted((a.filename, a.tensor_info.name)
                 for a in meta.asset_file_def),
          [("second_words.txt", "second/vocab/vocabulary_file:0"),
           ("words.txt", "first/vocab/vocabulary_file:0")])
      for name in ("first", "second"):
        got = _run_signature(sess, meta.signature_def[name], feeds)
        np.testing.assert_array_equal(got["ids"], want[name])
    # The stale absolute path of the build machine is not shipped.
    saved_model = _load_saved_model_proto(export_dir)
    consts = {n.name: n for n in saved_model.meta_graphs[0].graph_def.node}
    self.assertEqual(
        consts["first/vocab/vocabulary_file"].attr["value"].tensor
        .string_val, [b"words.txt"])

  def _vocab_spec(self, vocabulary_path, source=None, allowed=()):
    tmp = self.create_tempdir().full_path
    info = graphs.write_vocabulary_table(os.path.join(tmp, "v.pb"),
                                         os.path.join(tmp, "words.txt"))
    graph_def = tf.compat.v1.GraphDef()
    with open(info["path"], "rb") as f:
      graph_def.ParseFromString(f.read())
    for node in graph_def.node:
      if node.name == "vocab/vocabulary_file":
        node.attr["value"].tensor.string_val[0] = vocabulary_path.encode()
    with open(info["path"], "wb") as f:
      f.write(graph_def.SerializeToString())
    return spec_lib.MergeSpec(
        models=(_model("v", info),),
        source=source or os.path.join(tmp, "m.toml"),
        allowed_asset_dirs=tuple(allowed)), tmp

  def test_vocabulary_outside_allowed_dirs_is_refused(self):
    spec, tmp = self._vocab_spec("/etc/shadow")
    out = os.path.join(tmp, "out")
    with self.assertRaisesRegex(
        errors.GraphError,
        r'model #1 "v", key "frozen": table initializer vocab/table_init '
        r"reads vocabulary file /etc/shadow, which is outside the "
        r"directories assets may come from: .*; move the file there, or add "
        r"its directory to allowed_asset_dirs\."):
      bundle_writer.write_saved_model(spec, out)
    self.assertFalse(os.path.exists(os.path.join(out, "saved_model.pb")))
    # A symlink inside the spec's directory pointing outside is no way round.
    link = os.path.join(tmp, "inside.txt")
    os.symlink("/etc/passwd", link)
    spec, tmp = self._vocab_spec(link, source=os.path.join(tmp, "m.toml"))
    with self.assertRaisesRegex(
        errors.GraphError, r"inside.txt \(resolved to /etc/passwd\), which "
        r"is outside"):
      bundle_writer.plan(spec)

  def test_allowed_asset_dirs_and_regular_files_only(self):
    vocab_dir = self.create_tempdir().full_path
    words = os.path.join(vocab_dir, "words.txt")
    with open(words, "w") as f:
      f.write("apple\nbanana\n")
    spec, _ = self._vocab_spec(words)
    with self.assertRaisesRegex(errors.GraphError, r"which is outside"):
      bundle_writer.plan(spec)
    spec, tmp = self._vocab_spec(words, allowed=[vocab_dir])
    info = bundle_writer.write_saved_model(spec, os.path.join(tmp, "out"))
    self.assertEqual(info.files["assets/words.txt"], 13)
    self.assertEqual(info.manifest["assets"]["words.txt"]["source"], words)
    fifo = os.path.join(vocab_dir, "fifo.txt")
    os.mkfifo(fifo)
    spec, _ = self._vocab_spec(fifo, allowed=[vocab_dir])
    with self.assertRaisesRegex(
        errors.GraphError, r"fifo.txt, which cannot be read \(.*is a FIFO"):
      bundle_writer.plan(spec)

  def test_missing_vocabulary_file_is_an_error(self):
    tmp = self.create_tempdir().full_path
    info = graphs.write_vocabulary_table(
        os.path.join(tmp, "v.pb"), os.path.join(tmp, "words.txt"))
    os.remove(info["vocabulary_path"])
    spec = spec_lib.MergeSpec(models=(_model("v", info),),
                              source=os.path.join(tmp, "m.toml"))
    export_dir = os.path.join(tmp, "out")
    with self.assertRaisesRegex(
        errors.GraphError,
        r'spec .*/m.toml, model #1 "v", key "frozen": table initializer '
        r"vocab/table_init reads vocabulary file .*/words.txt, which cannot "
        r"be read .*put the file at that path"):
      bundle_writer.write_saved_model(spec, export_dir)
    self.assertFalse(os.path.exists(os.path.join(export_dir,
                                                 "saved_model.pb")))


class GraphErrorTest(parameterized.TestCase):
  """Bad graphs and aliases raise errors naming file, model and key."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.hyaudio = graphs.write_hyaudio(os.path.join(cls.dir, "hyaudio.pb"))

  def _spec(self, *models):
    return spec_lib.MergeSpec(models=tuple(models), source="/specs/m.toml")

  def _file(self, name, data):
    path = os.path.join(self.create_tempdir().full_path, name)
    with open(path, "wb") as f:
      f.write(data)
    return path

  def assert_plan_and_write_fail(self, spec, error, regex):
    with self.assertRaisesRegex(error, regex):
      bundle_writer.plan(spec)
    out = os.path.join(self.create_tempdir().full_path, "out")
    with self.assertRaisesRegex(error, regex):
      bundle_writer.write_saved_model(spec, out)
    self.assertFalse(os.path.exists(os.path.join(out, "saved_model.pb")))

  def test_tensor_not_in_graph_lists_closest_names(self):
    spec = self._spec(
        _model("a", self.hyaudio,
               outputs={"probs": "hyaudio/predict_prob:0"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'spec /specs/m.toml, model #1 "a", key "outputs": alias "probs": '
        r'tensor "hyaudio/predict_prob:0" is not in the graph \(.*hyaudio.pb\)'
        r"\. Closest names: hyaudio/predict_probs:0")

  def test_tensor_without_index_is_output_zero(self):
    spec = self._spec(
        _model("a", self.hyaudio, inputs={"x": "hyaudio/vggish_input"},
               outputs={"p": "hyaudio/predict_probs"}))
    info = bundle_writer.plan(spec)
    self.assertEqual(info.signatures["a"].tensors,
                     {"x": "a/hyaudio/vggish_input:0",
                      "p": "a/hyaudio/predict_probs:0"})

  def test_output_index_out_of_range(self):
    spec = self._spec(
        _model("a", self.hyaudio, outputs={"p": "hyaudio/predict_probs:3"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'model #1 "a", key "outputs": alias "p": node '
        r'"hyaudio/predict_probs" has 1 output\(s\), so '
        r'"hyaudio/predict_probs:3" does not exist')

  def test_second_model_error_names_second_model(self):
    other = graphs.write_while_loop(
        os.path.join(self.create_tempdir().full_path, "loop.pb"))
    spec = self._spec(_model("a", self.hyaudio),
                      _model("b", other, inputs={"x": "loop/y:0"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'model #2 "b", key "inputs": alias "x": tensor "loop/y:0"')

  def test_missing_file(self):
    spec = self._spec(_model("a", self.hyaudio,
                             frozen=os.path.join(self.dir, "nope.pb")))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'model #1 "a", key "frozen": frozen graph .*nope.pb does not exist')

  def test_directory_instead_of_file(self):
    spec = self._spec(_model("a", self.hyaudio, frozen=self.dir))
    self.assert_plan_and_write_fail(spec, errors.GraphError,
                                    r"is a directory")

  def test_text_graph_named_pb(self):
    with open(self.hyaudio["path"], "rb") as f:
      graph_def = tf.compat.v1.GraphDef.FromString(f.read())
    path = self._file("text.pb", str(graph_def).encode())
    self.assert_plan_and_write_fail(
        self._spec(_model("a", self.hyaudio, frozen=path)), errors.GraphError,
        r"text.pb holds a text-format GraphDef but does not end in \.pbtxt; "
        r"rename it to \.pbtxt")

  def test_binary_graph_named_pbtxt(self):
    with open(self.hyaudio["path"], "rb") as f:
      path = self._file("binary.pbtxt", f.read())
    self.assert_plan_and_write_fail(
        self._spec(_model("a", self.hyaudio, frozen=path)), errors.GraphError,
        r"binary.pbtxt ends in \.pbtxt but holds binary data .*rename it to "
        r"\.pb")

  def test_corrupt_binary(self):
    with open(self.hyaudio["path"], "rb") as f:
      data = f.read()
    path = self._file("truncated.pb", data[:len(data) // 2])
    self.assert_plan_and_write_fail(
        self._spec(_model("a", self.hyaudio, frozen=path)), errors.GraphError,
        r"truncated.pb is not a binary GraphDef \(corrupt or truncated")

  def test_empty_file(self):
    path = self._file("empty.pb", b"")
    self.assert_plan_and_write_fail(
        self._spec(_model("a", self.hyaudio, frozen=path)), errors.GraphError,
        r"empty.pb parsed as a GraphDef with no nodes")

  def test_saved_model_instead_of_frozen_graph(self):
    export_dir = os.path.join(self.create_tempdir().full_path, "sm")
    bundle_writer.write_saved_model(
        self._spec(_model("a", self.hyaudio)), export_dir, warmup=False)
    path = os.path.join(export_dir, "saved_model.pb")
    self.assert_plan_and_write_fail(
        self._spec(_model("a", self.hyaudio, frozen=path)), errors.GraphError,
        r"saved_model.pb is a SavedModel \(saved_model.pb\), not a frozen "
        r"GraphDef")

  def test_unfrozen_graph(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
      v = tf.compat.v1.Variable(1.0, name="v")
      tf.identity(x * v, name="y")
    path = self._file("unfrozen.pb", graph.as_graph_def().SerializeToString())
    spec = self._spec(spec_lib.ModelSpec("a", path, {"x": "x:0"},
                                         {"y": "y:0"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r"unfrozen.pb is not frozen: it still has variable node\(s\) v; "
        r"freeze it")

  # --- Hostile inputs (issue 11): bounded reads, no hangs, short errors. ---

  def _hyaudio_spec(self, path, **overrides):
    return self._spec(_model("a", self.hyaudio, frozen=path, **overrides))

  def test_fifo_is_refused_without_blocking(self):
    path = os.path.join(self.create_tempdir().full_path, "pipe.pb")
    os.mkfifo(path)  # Nobody ever writes: an open() for reading would block.
    self.assert_plan_and_write_fail(
        self._hyaudio_spec(path), errors.GraphError,
        r'model #1 "a", key "frozen": frozen graph .*pipe.pb is a FIFO '
        r"\(named pipe\), not a regular file")

  @parameterized.named_parameters(("zero", "/dev/zero"),
                                  ("null", "/dev/null"))
  def test_device_is_refused(self, device):
    self.assert_plan_and_write_fail(
        self._hyaudio_spec(device), errors.GraphError,
        rf"frozen graph {device} is a character device, not a regular file")

  def test_symlink_to_a_device_is_refused(self):
    path = os.path.join(self.create_tempdir().full_path, "zero.pb")
    os.symlink("/dev/zero", path)
    self.assert_plan_and_write_fail(
        self._hyaudio_spec(path), errors.GraphError,
        r"zero.pb is a character device, not a regular file")

  def test_file_over_the_size_limit_is_refused(self):
    size = os.path.getsize(self.hyaudio["path"])
    spec = self._hyaudio_spec(self.hyaudio["path"])
    with self.assertRaisesRegex(
        errors.GraphError,
        rf"hyaudio.pb is .* over the limit of .*\({size - 1} bytes\); raise "
        r"the limit \(--max_input_bytes\)"):
      bundle_writer.plan(spec, max_input_bytes=size - 1)
    self.assertIn("a", bundle_writer.plan(spec, max_input_bytes=size)
                  .signatures)

  def test_deeply_nested_text_graph_is_refused_without_recursion_error(self):
    depth = 100000
    data = (b"node { name: 'x' op: 'Const' attr { key: 'value' value { " +
            b"list { " * depth + b"} " * depth + b"} } }\n")
    path = self._file("deep.pbtxt", data)
    self.assert_plan_and_write_fail(
        self._hyaudio_spec(path), errors.GraphError,
        r"deep.pbtxt is not a valid text GraphDef: messages are nested more "
        r"than 100 levels deep \(line 1\)")

  def test_deeply_nested_binary_graph_is_refused(self):
    # A GraphDef whose node's attr holds AttrValue.list.func[0].attr... deep.
    inner = b""
    for _ in range(5000):
      inner = b"\x0a" + _varint(len(inner)) + inner  # Nested field 1.
    path = self._file("deep.pb", b"\x0a" + _varint(len(inner)) + inner)
    self.assert_plan_and_write_fail(
        self._hyaudio_spec(path), errors.GraphError,
        r"deep.pb is not a binary GraphDef \(corrupt or truncated")

  def test_huge_junk_line_is_not_echoed(self):
    junk = b"x" * (50 << 20)
    path = self._file("junk.pbtxt", b"node { name: " + junk + b" }\n")
    spec = self._hyaudio_spec(path)
    with self.assertRaises(errors.GraphError) as caught:
      bundle_writer.plan(spec)
    message = str(caught.exception)
    self.assertRegex(message, r"junk.pbtxt is not a valid text GraphDef")
    self.assertLess(len(message), 2000)

  def test_denied_ops_in_nodes_and_functions_are_refused(self):
    graph_def = tf.compat.v1.GraphDef()
    with open(self.hyaudio["path"], "rb") as f:
      graph_def.ParseFromString(f.read())
    name = graph_def.node.add(name="secret/name", op="Const")
    name.attr["dtype"].type = tf.string.as_datatype_enum
    name.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("/etc/shadow"))
    graph_def.node.add(name="secret/read", op="ReadFile",
                       input=["secret/name"])
    function = graph_def.library.function.add()
    function.signature.name = "leaky_fn"
    printer = function.node_def.add(name="say", op="PrintV2")
    printer.attr["output_stream"].s = b"stderr"
    path = self._file("denied.pb", graph_def.SerializeToString())
    spec = self._hyaudio_spec(path)
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'model #1 "a", key "frozen": frozen graph .*denied.pb contains '
        r'op\(s\) refused by default: ReadFile \(node "secret/read"\), '
        r'PrintV2 \(node "say" in function "leaky_fn"\)\. .* accept them '
        r"explicitly with --allow_ops=PrintV2,ReadFile\.")
    with self.assertRaisesRegex(errors.GraphError, r"PrintV2 \(node"):
      bundle_writer.plan(spec, allow_ops=("ReadFile",))
    # Accepted explicitly: the graph merges (the denied op is never run:
    # no output depends on it).
    info = bundle_writer.plan(spec, allow_ops=("ReadFile", "PrintV2"))
    self.assertIn("a", info.signatures)

  def test_output_needing_an_unlisted_placeholder_names_spec_and_fix(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
      scale = tf.compat.v1.placeholder(tf.float32, [], name="scale")
      tf.identity(x * scale, name="y")
      tf.identity(x * 2.0, name="z")
    path = self._file("two_inputs.pb", graph.as_graph_def().SerializeToString())
    spec = self._spec(spec_lib.ModelSpec("a", path, {"x": "x:0"},
                                         {"y": "y:0", "z": "z:0"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r'spec /specs/m.toml, model #1 "a", key "outputs": output "y" '
        r"\(\"y:0\"\) needs placeholder\(s\) 'scale', which are not among the "
        r"model's inputs.*inputs = \{ \.\.\., scale = \"scale:0\" \}")
    # Feeding the placeholder (or the tensor after it) is enough.
    ok = self._spec(spec_lib.ModelSpec("a", path, {"x": "x:0", "s": "scale:0"},
                                       {"y": "y:0"}))
    self.assertIn("a", bundle_writer.plan(ok).signatures)

  def test_fingerprint_follows_content_not_paths_or_messages(self):
    copy = self._file("copy.pb", open(self.hyaudio["path"], "rb").read())
    first = bundle_writer.plan(self._hyaudio_spec(self.hyaudio["path"]))
    moved = bundle_writer.plan(spec_lib.MergeSpec(
        models=(_model("a", self.hyaudio, frozen=copy),), message="other"))
    self.assertRegex(first.fingerprint, r"^[0-9a-f]{64}$")
    self.assertEqual(first.fingerprint, moved.fingerprint)
    other = graphs.write_hyaudio(os.path.join(self.create_tempdir().full_path,
                                              "h.pb"), seed=5)
    changed = bundle_writer.plan(self._spec(_model("a", other)))
    self.assertNotEqual(first.fingerprint, changed.fingerprint)
    renamed = bundle_writer.plan(self._spec(_model("b", self.hyaudio)))
    self.assertNotEqual(first.fingerprint, renamed.fingerprint)
    self.assertNotEqual(
        first.fingerprint,
        bundle_writer.plan(self._hyaudio_spec(self.hyaudio["path"]),
                           warmup=False).fingerprint)

  def test_unknown_op(self):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.add(name="x", op="NoSuchOpAnywhere")
    path = self._file("custom.pb", graph_def.SerializeToString())
    spec = self._spec(spec_lib.ModelSpec("a", path, {"x": "x:0"},
                                         {"y": "x:1"}))
    self.assert_plan_and_write_fail(
        spec, errors.GraphError,
        r"custom.pb is not a valid graph for TensorFlow .*NoSuchOpAnywhere")

  @parameterized.named_parameters(
      ("classify_float_input", "classify",
       {"inputs": "hyaudio/vggish_input:0"},
       {"scores": "hyaudio/predict_probs:0"},
       r'key "inputs": method "classify" needs alias "inputs" to be string '
       r'.*tensor "hyaudio/vggish_input:0" is float32'),
      ("classify_int_classes", "classify",
       {"inputs": "classifier/input_example_tensor:0"},
       {"classes": "classifier/scores:0"},
       r'key "outputs": method "classify" needs alias "classes" to be string'),
      ("regress_rank", "regress",
       {"inputs": "classifier/input_example_tensor:0"},
       {"outputs": "classifier/scores:0"},
       r'method "regress" needs alias "outputs" of shape \[batch\] or '
       r"\[batch, 1\]; tensor \"classifier/scores:0\" has shape \[-1, 3\]"),
  )
  def test_method_structure(self, method, inputs, outputs, regex):
    tmp = self.create_tempdir().full_path
    classifier = graphs.write_classifier(os.path.join(tmp, "c.pb"))
    path = (self.hyaudio["path"] if "hyaudio" in next(iter(inputs.values()))
            else classifier["path"])
    spec = self._spec(spec_lib.ModelSpec("m", path, inputs, outputs, method))
    self.assert_plan_and_write_fail(spec, errors.GraphError, regex)

  def test_over_2gib_names_the_threshold_and_function_bodies(self):
    fn = graphs.write_function_library(
        os.path.join(self.create_tempdir().full_path, "fn.pb"))
    spec = self._spec(_model("fn", fn))
    out = os.path.join(self.create_tempdir().full_path, "out")
    with mock.patch.object(bundle_writer, "_PROTO_LIMIT", 1000):
      with self.assertRaisesRegex(
          errors.GraphError,
          r"the merged saved_model.pb would be \d+ bytes, over protobuf's 2 "
          r"GiB limit; lower externalize_threshold_bytes \(now 1048576\) so "
          r"more constants move to variables/. \d+ bytes are function "
          r"bodies, whose constants are externalized only when every call "
          r"of their function can be rewritten"):
        bundle_writer.write_saved_model(spec, out)
    self.assertFalse(os.path.exists(os.path.join(out, "saved_model.pb")))

  def test_threshold_must_be_a_non_negative_int(self):
    for bad in ("1MiB", -1, True):
      with self.assertRaisesRegex(
          errors.SpecError,
          rf"externalize_threshold_bytes={bad!r} must be a non-negative "
          r"integer"):
        bundle_writer.plan(self._spec(_model("a", self.hyaudio)),
                           externalize_threshold_bytes=bad)

  def test_unwritable_export_dir(self):
    blocker = self._file("file", b"x")
    with self.assertRaisesRegex(errors.GraphError,
                                r"cannot write .*file/out/saved_model.pb"):
      bundle_writer.write_saved_model(self._spec(_model("a", self.hyaudio)),
                                      os.path.join(blocker, "out"),
                                      warmup=False)


if __name__ == "__main__":
  absltest.main()
