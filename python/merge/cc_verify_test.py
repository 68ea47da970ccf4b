"""The C++ verifier (//cc/verify) accepts every bundle the merger publishes.

Publishes bundles with every kind of test graph through merge_lib, then runs
the verifier binary (tensorflow::LoadSavedModel under `serve`, as TF Serving
loads) with --run=smoke and --run=warmup on each published version.

`SynthesisAgreementTest` holds the golden parity test of the one
input-synthesis policy: python/common/synthesis.py owns it, the verifier's
cc/verify/example_synthesis mirrors it, and the tf.Examples (and
SequenceExamples) the verifier feeds must be byte for byte the ones
`synthesis.GraphSynthesizer.example_for` builds.
"""

import json
import os
import shutil
import subprocess
import uuid

from absl.testing import absltest
from absl.testing import parameterized

import numpy as np
import tensorflow as tf
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import prediction_log_pb2

from cc.verify.testdata import bundles as verify_bundles
from python.common import built_binaries
from python.common import synthesis
from python.merge import merge_lib
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib
from python.merge.testdata import graphs
from tests.testdata import tf_serving_models

_TIMEOUT_SECONDS = 240


def _verifier() -> str:
  """//cc/verify from runfiles; outside Bazel $VERIFY_BINARY or bazel-bin."""
  return built_binaries.built_binary("cc", "verify", "verify",
                                     env_var="VERIFY_BINARY")


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


_METHODS = {v: k for k, v in spec_lib.METHOD_NAMES.items()}


def _signature_infos(meta_graph) -> dict:
  """SignatureInfos of a MetaGraphDef's signatures, as the merge builds them."""
  infos = {}
  for name, sig in sorted(meta_graph.signature_def.items()):
    if name == "__saved_model_init_op":
      continue

    def specs(tensors):
      return {alias: signatures_lib.TensorSpec(
          tf.dtypes.as_dtype(t.dtype).base_dtype.name,
          None if t.tensor_shape.unknown_rank else
          [d.size for d in t.tensor_shape.dim])
              for alias, t in tensors.items()}

    infos[name] = signatures_lib.SignatureInfo(
        method=_METHODS[sig.method_name], inputs=specs(sig.inputs),
        outputs=specs(sig.outputs),
        tensors={alias: t.name for alias, t in sig.inputs.items()})
  return infos


def _requests(records) -> dict:
  """Signature -> (log type, {alias or "examples": value}) of PredictionLogs."""
  requests = {}
  for record in records:
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    if kind == "predict_log":
      values = {alias: tf.make_ndarray(t) for alias, t in
                request.inputs.items()}
    else:
      values = {"examples": [e.SerializeToString(deterministic=True) for e in
                             request.input.example_list.examples]}
    requests[request.model_spec.signature_name] = (kind, values)
  return requests


def _length_delimited(message: bytes, number: int) -> list[bytes]:
  """The payloads of field `number` (wire type 2) of a serialized message.

  Read off the wire so that they are the writer's own bytes: parsing them into
  a message and serializing it again would reorder map entries and hide a
  difference.
  """
  payloads, i = [], 0

  def varint() -> int:
    nonlocal i
    value = shift = 0
    while True:
      byte = message[i]
      i += 1
      value |= (byte & 0x7F) << shift
      shift += 7
      if byte < 0x80:
        return value

  while i < len(message):
    key = varint()
    wire_type = key & 7
    if wire_type == 0:
      varint()
    elif wire_type in (1, 5):
      i += 8 if wire_type == 1 else 4
    elif wire_type == 2:
      size = varint()
      if key >> 3 == number:
        payloads.append(message[i:i + size])
      i += size
    else:
      raise ValueError(f"unexpected wire type {wire_type} at byte {i}")
  return payloads


# PredictionLog's classify_log and regress_log; in each, the log's request
# (1), the request's input (2), Input.example_list (1), ExampleList.examples.
_EXAMPLE_LOG_FIELDS = {"classify_log": 2, "regress_log": 3}


def _fed_protos(records) -> dict:
  """Signature -> {alias: the serialized protos fed to its string inputs}.

  The bytes are the writer's: string tensors' elements, and a classify or
  regress request's examples read off the wire (`_length_delimited`).
  """
  fed = {}
  for record in records:
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    request = getattr(log, kind).request
    protos = fed.setdefault(request.model_spec.signature_name, {})
    if kind == "predict_log":
      for alias, tensor in request.inputs.items():
        if tensor.dtype == tf.string.as_datatype_enum:
          protos[alias] = list(tensor.string_val)
      continue
    payloads = [record]
    for number in (_EXAMPLE_LOG_FIELDS[kind], 1, 2, 1, 1):
      payloads = [p for payload in payloads
                  for p in _length_delimited(payload, number)]
    protos["inputs"] = payloads
  return {name: protos for name, protos in fed.items() if protos}


def _write_parse_ops_bundle(export_dir: str) -> str:
  """A TF1 bundle with one predict signature per kind of parse op.

  Each takes serialized protos (through Identity chains, keys through
  Identity too) and returns a dense feature, so a run proves the synthesized
  proto carries what the op requires.
  """
  v1 = tf.compat.v1
  graph = tf.Graph()
  with graph.as_default():
    signatures = {}

    def add(name, serialized, output):
      signatures[name] = v1.saved_model.predict_signature_def(
          inputs={"serialized": serialized},
          outputs={"out": tf.identity(output, name=f"{name}_out")})

    s1 = v1.placeholder(tf.string, [None], name="example_v1")
    parsed = tf.raw_ops.ParseExample(
        serialized=tf.identity(tf.identity(s1)),
        names=tf.constant([], tf.string),
        sparse_keys=[tf.constant("ids")],
        dense_keys=[tf.identity(tf.constant("b")), tf.constant("a")],
        dense_defaults=[tf.constant([], tf.float32),
                        tf.constant([], tf.int64)],
        sparse_types=[tf.string], dense_shapes=[[2], [3]])
    add("example_v1", s1, parsed.dense_values[0])
    s2 = v1.placeholder(tf.string, [None], name="example_v2")
    add("example_v2", s2, tf.io.parse_example(s2, {
        "zz": tf.io.FixedLenFeature([2, 2], tf.float32),
        "tags": tf.io.VarLenFeature(tf.string),
        "r": tf.io.RaggedFeature(tf.int64)})["zz"])
    s3 = v1.placeholder(tf.string, [], name="single")
    add("single", s3, tf.raw_ops.ParseSingleExample(
        serialized=s3, dense_defaults=[tf.constant([], tf.string)],
        num_sparse=0, sparse_keys=[], dense_keys=["w"], sparse_types=[],
        dense_shapes=[[1]]).dense_values[0])
    s4 = v1.placeholder(tf.string, [None], name="sequence_v1")
    add("sequence_v1", s4, tf.raw_ops.ParseSequenceExample(
        serialized=s4, debug_name=tf.constant([], tf.string),
        context_dense_defaults=[tf.constant([], tf.float32)],
        feature_list_dense_missing_assumed_empty=[],
        context_sparse_keys=["cs"], context_dense_keys=["cd"],
        feature_list_sparse_keys=["fs"], feature_list_dense_keys=["fd"],
        Ncontext_sparse=1, Ncontext_dense=1, Nfeature_list_sparse=1,
        Nfeature_list_dense=1, context_sparse_types=[tf.int64],
        feature_list_dense_types=[tf.float32], context_dense_shapes=[[2]],
        feature_list_sparse_types=[tf.string],
        feature_list_dense_shapes=[[3]]).feature_list_dense_values[0])
    s5 = v1.placeholder(tf.string, [None], name="sequence_v2")
    _, lists, _ = tf.io.parse_sequence_example(
        s5, context_features={"c": tf.io.FixedLenFeature([], tf.int64)},
        sequence_features={
            "f": tf.io.FixedLenSequenceFeature([2], tf.float32),
            "r": tf.io.RaggedFeature(tf.string)})
    add("sequence_v2", s5, lists["f"])
    with v1.Session(graph=graph) as sess:
      builder = v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(sess, ["serve"],
                                           signature_def_map=signatures)
      builder.save()
  return export_dir


class SynthesisAgreementTest(parameterized.TestCase):
  """The verifier feeds what python/merge/warmup.py writes, for one graph.

  Both follow python/common/synthesis.py: the verifier's --dump_requests
  (what its smoke run fed) must equal the warmup writer's records, tensor by
  tensor and tf.Example byte for byte.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(absltest.get_default_test_tmpdir(),
                        f"agreement-{uuid.uuid4().hex}")
    infos = {
        "classifier": graphs.write_classifier(
            os.path.join(root, "classifier.pb")),
        "regressor": graphs.write_regressor(
            os.path.join(root, "regressor.pb")),
        "hyaudio": graphs.write_hyaudio(os.path.join(root, "hyaudio.pb")),
    }
    merged = merge_lib.merge_and_publish(merge_lib.MergeSpec(models=tuple(
        merge_lib.ModelSpec(signature_name=key, frozen=info["path"],
                            inputs=info["inputs"], outputs=info["outputs"],
                            method=info["method"])
        for key, info in infos.items())), os.path.join(root, "merged"))
    cls.dirs = {
        "merged": merged.path,
        "half_plus_two": tf_serving_models.write_half_plus_two(
            os.path.join(root, "half_plus_two")),
        "half_plus_two_tf2": tf_serving_models.write_half_plus_two_tf2(
            os.path.join(root, "half_plus_two_tf2")),
        "counter": tf_serving_models.write_counter(
            os.path.join(root, "counter")),
        "parse_ops": _write_parse_ops_bundle(os.path.join(root, "parse_ops")),
        "classify_regress": os.path.join(root, "classify_regress"),
    }
    verify_bundles.write_classify_regress_bundle(cls.dirs["classify_regress"])
    cls._records = {}

  def _dumped_records(self, export_dir) -> list[bytes]:
    """The records of the verifier's --dump_requests (one run per bundle)."""
    if export_dir not in self._records:
      dump = os.path.join(self.create_tempdir().full_path, "fed.tfrecord")
      proc = subprocess.run(
          [_verifier(), f"--export_dir={export_dir}", "--run=smoke",
           f"--dump_requests={dump}"],
          capture_output=True, text=True, timeout=_TIMEOUT_SECONDS,
          check=False)
      self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
      self._records[export_dir] = list(
          tf.data.TFRecordDataset(dump).as_numpy_iterator())
    return self._records[export_dir]

  def _dumped(self, export_dir):
    return _requests(self._dumped_records(export_dir))

  def _assert_same(self, cpp, python):
    self.assertEqual(sorted(cpp), sorted(python))
    for name, (kind, values) in python.items():
      cpp_kind, cpp_values = cpp[name]
      self.assertEqual(cpp_kind, kind, name)
      self.assertEqual(sorted(cpp_values), sorted(values), name)
      for alias, value in values.items():
        if alias == "examples":
          self.assertEqual(cpp_values[alias], value, name)
          continue
        got = cpp_values[alias]
        self.assertEqual((got.dtype, got.shape), (value.dtype, value.shape),
                         f"{name}/{alias}")
        np.testing.assert_array_equal(got, value, f"{name}/{alias}")

  @parameterized.parameters("half_plus_two", "half_plus_two_tf2", "counter",
                            "merged", "parse_ops", "classify_regress")
  def test_verifier_feeds_what_the_warmup_writer_writes(self, kind):
    export_dir = self.dirs[kind]
    meta_graph = loader_impl.parse_saved_model(export_dir).meta_graphs[0]
    python = _requests(warmup_lib.warmup_records(
        _signature_infos(meta_graph), graph_def=meta_graph.graph_def))
    cpp = self._dumped(export_dir)
    self._assert_same(cpp, python)
    # Not vacuous: parse ops got their features, unknown ranks a shape.
    if kind in ("half_plus_two", "half_plus_two_tf2"):
      example = tf.train.Example.FromString(
          cpp["classify_x_to_y"][1]["examples"][0] if kind == "half_plus_two"
          else cpp["classify_x_to_y"][1]["inputs"][0])
      self.assertEqual(sorted(example.features.feature), ["x", "x2"])
    if kind == "counter":
      self.assertEqual(cpp["incr_counter_by"][1]["delta"].shape, ())
    if kind == "parse_ops":
      fed = {name: values["serialized"].reshape(-1)[0]
             for name, (_, values) in cpp.items()}
      self.assertEqual(
          sorted(tf.train.Example.FromString(fed["example_v1"])
                 .features.feature), ["a", "b", "ids"])
      sequence = tf.train.SequenceExample.FromString(fed["sequence_v1"])
      self.assertEqual(sorted(sequence.context.feature), ["cd", "cs"])
      self.assertEqual(sorted(sequence.feature_lists.feature_list),
                       ["fd", "fs"])

  # Per bundle, the signatures whose string input a parse op reads: v1
  # ParseExample (half_plus_two), ParseExampleV2 in TF1 graphs (merged,
  # classify_regress) and in TF2 functions (half_plus_two_tf2), and every
  # other parse op (parse_ops).
  @parameterized.parameters(
      ("half_plus_two", ["classify_x_to_y", "regress_x_to_y",
                         "regress_x_to_y2"]),
      ("half_plus_two_tf2", ["classify_x_to_y", "regress_x_to_y",
                             "regress_x_to_y2"]),
      ("merged", ["classifier", "regressor"]),
      ("classify_regress", ["classify", "regress"]),
      ("parse_ops", ["example_v1", "example_v2", "sequence_v1", "sequence_v2",
                     "single"]))
  def test_verifier_examples_are_the_python_policy_bytes(self, kind, parsed):
    export_dir = self.dirs[kind]
    meta_graph = loader_impl.parse_saved_model(export_dir).meta_graphs[0]
    synthesizer = synthesis.GraphSynthesizer(meta_graph.graph_def)
    python = {}
    for name, sig in meta_graph.signature_def.items():
      strings = {alias: synthesizer.example_for(info.name)
                 for alias, info in sig.inputs.items()
                 if info.dtype == tf.string.as_datatype_enum}
      if strings:
        python[name] = strings
    self.assertEqual(sorted(n for n, s in python.items() if any(s.values())),
                     parsed)
    cpp = _fed_protos(self._dumped_records(export_dir))
    self.assertEqual(sorted(cpp), sorted(python))
    for name, strings in python.items():
      self.assertEqual(sorted(cpp[name]), sorted(strings), name)
      for alias, example in strings.items():
        self.assertNotEmpty(cpp[name][alias], f"{name}/{alias}")
        for fed in cpp[name][alias]:
          self.assertEqual(fed, example, f"{name}/{alias}: the verifier's "
                           "proto differs from python/common/synthesis.py's")

  def test_classify_regress_example_is_the_policy_golden(self):
    # The bytes both sides agree on carry the policy's values: every feature
    # the parse op reads, floats 0.5, integers 1, strings b"a".
    golden = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, 0.5])),
        "scale": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
        "tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"])),
    }))
    fed = _fed_protos(self._dumped_records(self.dirs["classify_regress"]))
    for name in ("classify", "regress"):
      self.assertEqual(
          [tf.train.Example.FromString(e) for e in fed[name]["inputs"]],
          [golden], name)

  def test_merged_bundle_warmup_file_is_what_the_verifier_feeds(self):
    # The merge's own warmup file (written through bundle_writer).
    export_dir = self.dirs["merged"]
    path = os.path.join(export_dir, warmup_lib.WARMUP_FILE)
    written = _requests(tf.data.TFRecordDataset(path).as_numpy_iterator())
    self._assert_same(self._dumped(export_dir), written)


if __name__ == "__main__":
  absltest.main()
