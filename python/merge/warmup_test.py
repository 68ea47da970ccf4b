"""Tests for the merge's warmup requests (assets.extra/tf_serving_warmup_requests).

The records are checked against what TF Serving replays: a PredictionLog per
signature whose request runs on the graph (a classifier that requires its
feature gets a tf.Example that holds it).
"""

import os

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from python.merge import errors
from python.merge import signatures
from python.merge import warmup
from python.merge.testdata import graphs

_Spec = signatures.TensorSpec


def _read(path) -> tf.compat.v1.GraphDef:
  graph_def = tf.compat.v1.GraphDef()
  with open(path, "rb") as f:
    graph_def.ParseFromString(f.read())
  return graph_def


def _logs(records):
  logs = []
  for record in records:
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(record)
    logs.append(log)
  return logs


class WarmupRecordsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    cls.classifier = graphs.write_classifier(
        os.path.join(root, "classifier.pb"), required_feature=True)
    cls.regressor = graphs.write_regressor(
        os.path.join(root, "regressor.pb"), required_feature=True)

  def _infos(self):
    return {
        "audio": signatures.SignatureInfo(
            method="predict",
            inputs={"x": _Spec("float32", [-1, 3]),
                    "k": _Spec("int64", [-1]),
                    "any": _Spec("float32", None)},
            outputs={}, tensors={}),
        "classify": signatures.SignatureInfo(
            method="classify", inputs={"inputs": _Spec("string", [-1])},
            outputs={}, tensors=dict(self.classifier["inputs"])),
        "regress": signatures.SignatureInfo(
            method="regress", inputs={"inputs": _Spec("string", [-1])},
            outputs={}, tensors=dict(self.regressor["inputs"])),
    }

  def _graph_def(self):
    graph_def = _read(self.classifier["path"])
    graph_def.node.extend(_read(self.regressor["path"]).node)
    return graph_def

  def test_one_request_per_signature_in_order(self):
    logs = _logs(warmup.warmup_records(self._infos(),
                                       graph_def=self._graph_def()))
    self.assertEqual([l.WhichOneof("log_type") for l in logs],
                     ["predict_log", "classify_log", "regress_log"])
    request = logs[0].predict_log.request
    self.assertEqual(request.model_spec.signature_name, "audio")
    # Batch 1, small positive floats, integer zeros; unknown rank: scalar.
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["x"]),
                                  [[0.25, 0.375, 0.5]])
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["k"]), [0])
    self.assertEqual(tf.make_ndarray(request.inputs["any"]).shape, ())
    self.assertEqual(logs[1].classify_log.request.model_spec.signature_name,
                     "classify")

  def test_examples_carry_the_features_the_graph_requires(self):
    logs = _logs(warmup.warmup_records(self._infos(),
                                       graph_def=self._graph_def()))
    for log, info in ((logs[1].classify_log, self.classifier),
                      (logs[2].regress_log, self.regressor)):
      examples = log.request.input.example_list.examples
      self.assertLen(examples, 1)
      self.assertLen(examples[0].features.feature["x"].float_list.value, 4)
      # The request TF Serving replays at load runs on the graph (an empty
      # tf.Example would fail: "x" has no default).
      outputs = graphs.run_frozen(
          info, {"inputs": np.array([examples[0].SerializeToString()],
                                    dtype=object)})
      self.assertTrue(outputs)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "x"):
      graphs.run_frozen(self.classifier,
                        {"inputs": np.array([b""], dtype=object)})

  def test_given_examples_and_no_graph(self):
    example = graphs.make_example([1.0, 2.0, 3.0, 4.0])
    infos = self._infos()
    logs = _logs(warmup.warmup_records(infos, examples={"classify": example}))
    self.assertEqual(
        logs[1].classify_log.request.input.example_list.examples[0]
        .SerializeToString(), example)
    # Without a graph the others get an empty tf.Example.
    self.assertEqual(
        logs[2].regress_log.request.input.example_list.examples[0]
        .ByteSize(), 0)
    self.assertEqual(warmup.synthesize_examples(self._graph_def(), infos)
                     .keys(), {"classify", "regress"})

  def test_classify_signature_of_non_string_input_gets_a_predict(self):
    infos = {"odd": signatures.SignatureInfo(
        method="classify", inputs={"inputs": _Spec("float32", [-1, 2])},
        outputs={}, tensors={})}
    (log,) = _logs(warmup.warmup_records(infos))
    self.assertEqual(log.WhichOneof("log_type"), "predict_log")
    self.assertEqual(
        tf.make_ndarray(log.predict_log.request.inputs["inputs"]).shape,
        (1, 2))

  def test_unknown_method(self):
    infos = {"bad": signatures.SignatureInfo(method="explain", inputs={},
                                             outputs={}, tensors={})}
    with self.assertRaisesRegex(errors.SpecError,
                                r"signature \"bad\": unknown method "
                                r"'explain'"):
      warmup.warmup_records(infos)

  def test_synthesize_from_the_spec_alone(self):
    self.assertEqual(
        warmup.synthesize(_Spec("float32", [-1, 2]), batch_size=3).shape,
        (3, 2))
    strings = warmup.synthesize(_Spec("string", [-1]))
    self.assertEqual(strings.tolist(), [b""])


class WriteWarmupTest(absltest.TestCase):

  def test_written_file_holds_the_records_and_its_size_is_known(self):
    export_dir = self.create_tempdir().full_path
    records = [b"first", b"", b"third" * 100]
    path = warmup.write_warmup(export_dir, records)
    self.assertEqual(path, os.path.join(export_dir, warmup.WARMUP_FILE))
    self.assertEqual(list(tf.compat.v1.io.tf_record_iterator(path)), records)
    self.assertEqual(warmup.record_file_size(records), os.path.getsize(path))

  def test_unwritable_directory_is_a_graph_error(self):
    blocker = os.path.join(self.create_tempdir().full_path, "file")
    with open(blocker, "w"):
      pass
    with self.assertRaisesRegex(errors.GraphError,
                                r"cannot write warmup requests .*file/"
                                r"assets\.extra/tf_serving_warmup_requests"):
      warmup.write_warmup(blocker, [b"x"])


if __name__ == "__main__":
  absltest.main()
