"""Tests for bundle_check on small SavedModels built by the test itself.

The fixtures are written with TensorFlow's own v1 SavedModelBuilder so that
the checker is tested independently of the merger; merge_lib_test runs it on
real merged bundles.
"""

import os
import threading
import time

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from python.merge import bundle_check
from python.merge import bundle_writer
from python.merge import errors
from python.merge import spec as spec_lib
from python.merge import warmup as warmup_lib
from python.merge.testdata import graphs

_v1 = tf.compat.v1


def _info(tensor):
  return _v1.saved_model.utils.build_tensor_info(tensor)


def _build(export_dir, make_signatures, sharded_saver=True):
  """Writes a SavedModel whose signatures `make_signatures()` returns."""
  graph = tf.Graph()
  with graph.as_default(), _v1.Session(graph=graph) as sess:
    signatures = make_signatures()
    sess.run(_v1.global_variables_initializer())
    builder = _v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(
        sess, ["serve"], signature_def_map=signatures,
        main_op=_v1.tables_initializer(), strip_default_attrs=True,
        saver=None if sharded_saver else _v1.train.Saver(sharded=False))
    builder.save()
  return export_dir


def _predict_head():
  x = _v1.placeholder(tf.float32, [None, 4], name="head/x")
  w = tf.Variable(tf.ones([4, 2]), name="head/w")
  probs = tf.nn.softmax(tf.matmul(x, w), name="head/probs")
  classes = tf.argmax(probs, axis=1, output_type=tf.int32, name="head/classes")
  return {
      "head": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"x": _info(x)},
          outputs={"probs": _info(probs), "classes": _info(classes)},
          method_name="tensorflow/serving/predict")
  }


def _classifier():
  serialized = _v1.placeholder(tf.string, [None], name="clf/examples")
  parsed = _v1.io.parse_example(serialized, {
      "age": _v1.io.FixedLenFeature([3], tf.float32),
      "city": _v1.io.FixedLenFeature([], tf.string),
      "visits": _v1.io.VarLenFeature(tf.int64),
  })
  score = tf.reduce_sum(parsed["age"], axis=1, keepdims=True)
  scores = tf.concat([score, -score], axis=1, name="clf/scores")
  classes = tf.tile(tf.expand_dims(parsed["city"], 1), [1, 2],
                    name="clf/classes")
  return {
      "clf": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"inputs": _info(serialized)},
          outputs={"scores": _info(scores), "classes": _info(classes)},
          method_name="tensorflow/serving/classify")
  }


def _lookup():
  keys = _v1.placeholder(tf.string, [None], name="lut/keys")
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(["a", "b"], [1, 2],
                                          key_dtype=tf.string,
                                          value_dtype=tf.int32), -1)
  ids = tf.identity(table.lookup(keys), name="lut/ids")
  return {
      "lut": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"keys": _info(keys)}, outputs={"ids": _info(ids)},
          method_name="tensorflow/serving/predict")
  }


def _unknown_rank_heads():
  """Inputs of unknown rank: one runs only as a scalar, one only as [1]."""
  limit = _v1.placeholder(tf.int32, None, name="rank/limit")
  steps = tf.range(limit, name="rank/steps")  # Range wants a scalar.
  row = _v1.placeholder(tf.float32, None, name="rank/row")
  joined = tf.concat([row, [1.0]], axis=0, name="rank/joined")  # Rank 1.
  method = "tensorflow/serving/predict"
  return {
      "scalar_only": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"limit": _info(limit)}, outputs={"steps": _info(steps)},
          method_name=method),
      "vector_only": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"row": _info(row)}, outputs={"joined": _info(joined)},
          method_name=method),
  }


def _nan_head():
  x = _v1.placeholder(tf.float32, [None, 2], name="bad/x")
  y = tf.debugging.check_numerics(tf.math.log(x - 10.0), "log of negative",
                                  name="bad/y")
  return {
      "bad": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"x": _info(x)}, outputs={"y": _info(y)},
          method_name="tensorflow/serving/predict")
  }


def _edit_saved_model(export_dir, edit):
  path = os.path.join(export_dir, "saved_model.pb")
  proto = saved_model_pb2.SavedModel()
  with open(path, "rb") as f:
    proto.ParseFromString(f.read())
  edit(proto.meta_graphs[0])
  with open(path, "wb") as f:
    f.write(proto.SerializeToString())


class BundleCheckTest(parameterized.TestCase):

  def _dir(self):
    return os.path.join(self.create_tempdir().full_path, "bundle")

  def test_predict_signature_runs_and_reports_output_shapes(self):
    export_dir = _build(self._dir(), _predict_head)
    result = bundle_check.check_bundle(export_dir,
                                       expected_signatures=["head"])
    self.assertEqual(list(result), ["head"])
    self.assertEqual(result["head"].method_name, "tensorflow/serving/predict")
    self.assertEqual(result["head"].outputs, {
        "probs": ("float32", (1, 2)),
        "classes": ("int32", (1,)),
    })

  def test_batch_size_sets_the_unknown_batch_dimension(self):
    export_dir = _build(self._dir(), _predict_head)
    result = bundle_check.check_bundle(export_dir, batch_size=3)
    self.assertEqual(result["head"].outputs["probs"], ("float32", (3, 2)))

  def test_classify_input_gets_an_example_with_every_parsed_feature(self):
    # An empty tf.Example would fail: "age" and "city" have no default.
    export_dir = _build(self._dir(), _classifier)
    result = bundle_check.check_bundle(export_dir)
    self.assertEqual(result["clf"].outputs, {
        "scores": ("float32", (1, 2)),
        "classes": ("string", (1, 2)),
    })

  def test_unknown_rank_inputs_try_the_policys_shapes_in_order(self):
    # python/common/synthesis: [] first, then [1], then [batch].
    export_dir = _build(self._dir(), _unknown_rank_heads)
    result = bundle_check.check_bundle(export_dir, batch_size=3)
    self.assertEqual(result["scalar_only"].outputs,
                     {"steps": ("int32", (0,))})  # range(0) from a [] input.
    self.assertEqual(result["vector_only"].outputs,
                     {"joined": ("float32", (2,))})  # [1] concat [1].

  def _with_warmup(self, export_dir, *logs):
    warmup_lib.write_warmup(export_dir,
                            [log.SerializeToString() for log in logs])
    return export_dir

  def _predict_log(self, signature, value, alias="x"):
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return log

  def test_warmup_records_are_replayed(self):
    classify = prediction_log_pb2.PredictionLog()
    request = classify.classify_log.request
    request.model_spec.signature_name = "clf"
    example = request.input.example_list_with_context.examples.add()
    example.features.feature["age"].float_list.value.extend([30.0, 1, 2])
    context = request.input.example_list_with_context.context
    context.features.feature["city"].bytes_list.value.append(b"Paris")
    export_dir = self._with_warmup(
        _build(self._dir(), lambda: {**_predict_head(), **_classifier()}),
        self._predict_log("head", [[1.0, 2.0, 3.0, 4.0]]), classify)
    result = bundle_check.check_bundle(export_dir)
    self.assertCountEqual(result, ["head", "clf"])

  def test_a_warmup_record_that_fails_fails_the_check(self):
    # Three features where the signature takes four: TF Serving's load fails.
    export_dir = self._with_warmup(
        _build(self._dir(), _predict_head),
        self._predict_log("head", [[1.0, 2.0, 3.0]]))
    with self.assertRaisesRegex(
        errors.VerifyError,
        r": 1 of 1 warmup record\(s\) failed the check:\n  "
        r"warmup record 0 \(predict of signature\(s\) head\) fails, so TF "
        r"Serving would not load this version: .*"):
      bundle_check.check_bundle(export_dir)

  @parameterized.named_parameters(
      ("unknown_signature", "nope", "x",
       r"warmup record 0 \(predict_log\) calls signature 'nope', which the "
       r"bundle does not have; it has \['head'\]"),
      ("unknown_alias", "head", "y",
       r"warmup record 0 \(predict_log\) sends input 'y' to signature "
       r"'head', whose inputs are \['x'\]"),
  )
  def test_a_warmup_record_naming_what_is_not_there(self, signature, alias,
                                                   regex):
    export_dir = self._with_warmup(
        _build(self._dir(), _predict_head),
        self._predict_log(signature, [[1.0, 2.0, 3.0, 4.0]], alias))
    with self.assertRaisesRegex(errors.VerifyError, regex):
      bundle_check.check_bundle(export_dir)

  def test_lookup_table_is_initialized_by_the_loader(self):
    export_dir = _build(self._dir(), _lookup)
    result = bundle_check.check_bundle(export_dir)
    self.assertEqual(result["lut"].outputs, {"ids": ("int32", (1,))})

  def test_signature_that_fails_at_run_time(self):
    export_dir = _build(self._dir(), lambda: {**_predict_head(),
                                              **_nan_head()})
    with self.assertRaisesRegex(
        errors.VerifyError,
        r"bundle .*bundle: 1 of 2 signature\(s\) failed the check:\n"
        r'  signature "bad" does not run on synthesized inputs \(batch 1\): '
        r"Node: 'bad/y' log of negative : Tensor had NaN values"):
      bundle_check.check_bundle(export_dir)

  @parameterized.named_parameters(
      ("dtype", lambda sig: setattr(sig.outputs["probs"], "dtype",
                                    tf.int64.as_datatype_enum),
       r'signature "head" output "probs": declared int64 but the graph '
       r"returns float32"),
      ("shape", lambda sig: sig.outputs["probs"].tensor_shape.dim[1]
       .__setattr__("size", 3),
       r'signature "head" output "probs": declared shape \(None, 3\) but '
       r"the graph returns shape \[1, 2\]"),
      ("missing_tensor", lambda sig: setattr(sig.outputs["probs"], "name",
                                             "head/probz:0"),
       r'signature "head" output "probs" names tensor "head/probz:0", which '
       r"is not in the graph"),
  )
  def test_signature_that_lies_about_its_outputs(self, edit, regex):
    export_dir = _build(self._dir(), _predict_head)
    _edit_saved_model(export_dir,
                      lambda mg: edit(mg.signature_def["head"]))
    with self.assertRaisesRegex(errors.VerifyError, regex):
      bundle_check.check_bundle(export_dir)

  def test_missing_expected_signature(self):
    export_dir = _build(self._dir(), _predict_head)
    with self.assertRaisesRegex(
        errors.VerifyError,
        r"lacks signature\(s\) \['other'\]; it has \['head'\]"):
      bundle_check.check_bundle(export_dir,
                                expected_signatures=["head", "other"])

  def test_corrupt_saved_model_does_not_load(self):
    export_dir = _build(self._dir(), _predict_head)
    with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
      f.write(b"\x0a\xff\xff garbage")
    with self.assertRaisesRegex(
        errors.VerifyError,
        r"bundle .*bundle does not load under tags \['serve'\]"):
      bundle_check.check_bundle(export_dir)

  def test_missing_variables_do_not_load(self):
    export_dir = _build(self._dir(), _predict_head)
    for name in os.listdir(os.path.join(export_dir, "variables")):
      os.remove(os.path.join(export_dir, "variables", name))
    with self.assertRaisesRegex(errors.VerifyError, "does not load"):
      bundle_check.check_bundle(export_dir)

  def test_wrong_tags(self):
    export_dir = _build(self._dir(), _predict_head)
    with self.assertRaisesRegex(
        errors.VerifyError, r"does not load under tags \['gpu'\]"):
      bundle_check.check_bundle(export_dir, tags=["gpu"])

  def test_denied_ops_are_refused_but_the_savers_own_are_not(self):
    # SavedModelBuilder writes SaveV2/RestoreV2/MergeV2Checkpoints: exempt.
    export_dir = _build(self._dir(), _predict_head)
    self.assertIn("probs", bundle_check.check_bundle(
        export_dir)["head"].outputs)
    saved_model = saved_model_pb2.SavedModel()
    path = os.path.join(export_dir, "saved_model.pb")
    with open(path, "rb") as f:
      saved_model.ParseFromString(f.read())
    graph_def = saved_model.meta_graphs[0].graph_def
    restore = next(n for n in graph_def.node if n.op == "RestoreV2")
    stray = graph_def.node.add()
    stray.CopyFrom(restore)
    stray.name = "stray_restore"
    with open(path, "wb") as f:
      f.write(saved_model.SerializeToString())
    with self.assertRaisesRegex(
        errors.VerifyError,
        r'^bundle .* contains op\(s\) refused by default: RestoreV2 \(node '
        r'"stray_restore"\)\..*--allow_ops=RestoreV2\. Nothing was run\.$'):
      bundle_check.check_bundle(export_dir)
    bundle_check.check_bundle(export_dir, allow_ops=["RestoreV2"])


class _StuckSession:
  """A session whose run never returns until released (like an endless
  while loop, which TensorFlow's timeout cannot cancel)."""

  def __init__(self):
    self.release = threading.Event()

  def run(self, fetches, feed_dict=None, options=None):
    del fetches, feed_dict
    self.timeout_in_ms = options.timeout_in_ms
    self.release.wait(30)
    return "late"


class RunnerTest(absltest.TestCase):

  def test_a_run_that_cannot_be_stopped_is_abandoned(self):
    session = _StuckSession()
    self.addCleanup(session.release.set)
    runner = bundle_check._Runner(0.2, "bundle b")
    start = time.monotonic()
    with absltest.mock.patch.object(bundle_check, "_CANCEL_GRACE_SECONDS",
                                    0.2):
      with self.assertRaisesRegex(
          errors.CheckTimeoutError,
          r'^bundle b: signature "s" did not finish within the check\'s '
          r"deadline of 0.2 s \(--check_timeout_seconds\); it could not be "
          r"stopped") as caught:
        runner.run(session, "y", {}, 'signature "s"')
    self.assertLess(time.monotonic() - start, 5)
    self.assertTrue(caught.exception.abandoned)
    self.assertTrue(runner.abandoned)
    self.assertEqual(session.timeout_in_ms, 200)
    self.assertIn(session, bundle_check._ABANDONED_SESSIONS)

  def test_timeout_must_be_positive(self):
    with self.assertRaisesRegex(errors.VerifyError,
                                "timeout_seconds=0 must be a positive"):
      bundle_check.check_bundle("/nonexistent", timeout_seconds=0)


class RestoreGroupsTest(absltest.TestCase):
  """Merged bundles restore per input graph; the check uses that."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    models = []
    for i, nbytes in enumerate((64 << 10, 32 << 10, 16 << 10)):
      info = graphs.write_large_const(os.path.join(root, f"g{i}.pb"), nbytes,
                                      seed=i)
      models.append(spec_lib.ModelSpec(
          signature_name=f"m{i}", frozen=info["path"],
          inputs=dict(info["inputs"]), outputs=dict(info["outputs"])))
    cls.export_dir = os.path.join(root, "merged")
    bundle_writer.write_saved_model(
        spec_lib.MergeSpec(models=tuple(models)), cls.export_dir,
        externalize_threshold_bytes=1024)

  def _meta_graph(self, export_dir=None):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir or self.export_dir, "saved_model.pb"),
              "rb") as f:
      proto.ParseFromString(f.read())
    return proto.meta_graphs[0]

  def test_sessions_are_packed_up_to_the_largest_model(self):
    # Weights (8 x m float32) plus bias (m float32), m = nbytes / 32.
    sizes = [n + n // 8 for n in (64 << 10, 32 << 10, 16 << 10)]
    plan = bundle_check.plan_sessions(self._meta_graph(), ["m0", "m1", "m2"],
                                      memory_budget_bytes=1)
    # The budget is at least the largest model (m0): m1 and m2 fit in it.
    self.assertEqual([p.signatures for p in plan], [("m0",), ("m1", "m2")])
    self.assertEqual([p.restore_ops for p in plan],
                     [("merge_internal/restore_0",),
                      ("merge_internal/restore_1",
                       "merge_internal/restore_2")])
    self.assertEqual([p.variable_bytes for p in plan],
                     [sizes[0], sizes[1] + sizes[2]])

  def test_budget_packs_models_in_order(self):
    sizes = [n + n // 8 for n in (64 << 10, 32 << 10, 16 << 10)]
    plan = bundle_check.plan_sessions(self._meta_graph(), ["m0", "m1", "m2"],
                                      memory_budget_bytes=sizes[0] + sizes[1])
    self.assertEqual([p.signatures for p in plan], [("m0", "m1"), ("m2",)])
    plan = bundle_check.plan_sessions(self._meta_graph(), ["m2", "m1", "m0"],
                                      memory_budget_bytes=sizes[0])
    self.assertEqual([p.signatures for p in plan], [("m2", "m1"), ("m0",)])
    plan = bundle_check.plan_sessions(self._meta_graph(), ["m0", "m1", "m2"],
                                      memory_budget_bytes=1 << 30)
    self.assertLen(plan, 1)
    self.assertLen(plan[0].restore_ops, 3)

  def test_every_model_is_checked_with_a_small_budget(self):
    result = bundle_check.check_bundle(self.export_dir, memory_budget_bytes=1)
    self.assertEqual(sorted(result), ["m0", "m1", "m2"])
    self.assertEqual(result["m2"].outputs["output"], ("float32", (1, 512)))

  def test_a_group_that_fails_to_restore_fails_the_check(self):
    export_dir = os.path.join(self.create_tempdir().full_path, "bundle")
    _copy_tree(self.export_dir, export_dir)

    def rename_key(meta_graph):
      for node in meta_graph.graph_def.node:
        if node.name == "merge_internal/restore_2/tensor_names":
          node.attr["value"].tensor.string_val[0] = b"m2/no_such_key"
    _edit_saved_model(export_dir, rename_key)
    with self.assertRaisesRegex(errors.VerifyError,
                                "does not load.*m2/no_such_key"):
      bundle_check.check_bundle(export_dir, memory_budget_bytes=1)

  def test_standard_saver_is_one_group(self):
    # A tf.compat.v1 Saver restores every variable from one RestoreV2 and
    # its restore op depends on one assign per variable: one group.
    export_dir = _build(
        os.path.join(self.create_tempdir().full_path, "bundle"),
        lambda: {**_predict_head(), **_two_variable_head()},
        sharded_saver=False)
    plan = bundle_check.plan_sessions(self._meta_graph(export_dir),
                                      ["head", "two"], memory_budget_bytes=1)
    self.assertLen(plan, 1)
    self.assertEqual(plan[0].signatures, ("head", "two"))
    self.assertLen(plan[0].restore_ops, 3)  # One assign per variable.
    self.assertEqual(plan[0].variable_bytes, (4 * 2 + 2 * 2 + 2) * 4)
    self.assertEqual(sorted(bundle_check.check_bundle(export_dir)),
                     ["head", "two"])


def _two_variable_head():
  x = _v1.placeholder(tf.float32, [None, 2], name="two/x")
  a = tf.Variable(tf.ones([2, 2]), name="two/a")
  b = tf.Variable(tf.zeros([2]), name="two/b")
  y = tf.add(tf.matmul(x, a), b, name="two/y")
  return {
      "two": _v1.saved_model.signature_def_utils.build_signature_def(
          inputs={"x": _info(x)}, outputs={"y": _info(y)},
          method_name="tensorflow/serving/predict")
  }


def _copy_tree(source, destination):
  for root, _, files in os.walk(source):
    target = os.path.join(destination, os.path.relpath(root, source))
    os.makedirs(target, exist_ok=True)
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        data = f.read()
      with open(os.path.join(target, name), "wb") as f:
        f.write(data)


if __name__ == "__main__":
  absltest.main()
