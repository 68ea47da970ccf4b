"""Tests for signatures: aliases resolved against frozen graphs, SignatureDefs.

The graphs are the small ones of python/merge/testdata/graphs.py; the merge
as a whole (bundle_writer_test, merge_lib_test) uses the same functions.
"""

import os

from absl.testing import absltest
import tensorflow as tf

from python.merge import errors
from python.merge import signatures
from python.merge import spec as spec_lib
from python.merge.testdata import graphs


def _model(name, info, **overrides) -> spec_lib.ModelSpec:
  fields = dict(signature_name=name, frozen=info["path"],
                inputs=info["inputs"], outputs=info["outputs"],
                method=info["method"])
  fields.update(overrides)
  return spec_lib.ModelSpec(**fields)


def _read(info) -> tf.compat.v1.GraphDef:
  graph_def = tf.compat.v1.GraphDef()
  with open(info["path"], "rb") as f:
    graph_def.ParseFromString(f.read())
  return graph_def


class AnalyzeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    cls.hyaudio = graphs.write_hyaudio(os.path.join(root, "hyaudio.pb"))
    cls.loop = graphs.write_while_loop(os.path.join(root, "loop.pb"))
    cls.lookup = graphs.write_lookup_table(os.path.join(root, "lookup.pb"))
    cls.classifier = graphs.write_classifier(
        os.path.join(root, "classifier.pb"))
    cls.regressor = graphs.write_regressor(os.path.join(root, "regressor.pb"))

  def _analyze(self, info, *models, scope="m"):
    models = models or (_model("sig", info),)
    return signatures.analyze(_read(info), scope, list(enumerate(models)),
                              "m.toml")

  def test_signature_info_is_scoped_with_dtypes_and_shapes(self):
    result = self._analyze(self.hyaudio, scope="audio")
    info = result.signatures["sig"]
    self.assertEqual(info.method_name, "tensorflow/serving/predict")
    self.assertEqual(info.inputs,
                     {"inputs": signatures.TensorSpec("float32", [-1, 640])})
    self.assertEqual(info.outputs, {
        "probs": signatures.TensorSpec("float32", [-1, 8]),
        "classes": signatures.TensorSpec("int32", [-1])})
    self.assertEqual(info.tensors, {
        "inputs": "audio/hyaudio/vggish_input:0",
        "probs": "audio/hyaudio/predict_probs:0",
        "classes": "audio/hyaudio/predict_classes:0"})
    self.assertEqual(result.init_ops, [])
    signature_def = signatures.signature_def(info,
                                             result.tensor_infos["sig"])
    self.assertEqual(signature_def.method_name, "tensorflow/serving/predict")
    self.assertEqual(signature_def.inputs["inputs"].name,
                     "audio/hyaudio/vggish_input:0")
    self.assertEqual(signature_def.inputs["inputs"].dtype,
                     tf.float32.as_datatype_enum)
    self.assertEqual(
        [d.size for d in signature_def.outputs["probs"].tensor_shape.dim],
        [-1, 8])

  def test_shapes_through_a_v1_while_loop(self):
    info = self._analyze(self.loop).signatures["sig"]
    self.assertEqual(info.outputs["result"],
                     signatures.TensorSpec("float32", [-1, 4]))
    self.assertEqual(info.outputs["count"], signatures.TensorSpec("int32",
                                                                  []))

  def test_table_initializers_are_init_ops(self):
    result = self._analyze(self.lookup, scope="words")
    self.assertEqual(result.init_ops, ["words/lookup/table_import"])

  def test_classify_and_regress_structures(self):
    info = self._analyze(self.classifier).signatures["sig"]
    self.assertEqual(info.method_name, "tensorflow/serving/classify")
    self.assertEqual(info.outputs["classes"],
                     signatures.TensorSpec("string", [-1, 3]))
    info = self._analyze(self.regressor).signatures["sig"]
    self.assertEqual(info.outputs["outputs"],
                     signatures.TensorSpec("float32", [-1]))

  def test_a_second_model_of_the_same_graph_reuses_the_skeleton(self):
    first = self._analyze(self.hyaudio)
    second = signatures.resolve(
        first.skeleton, "m",
        [(1, _model("probs_only", self.hyaudio,
                    outputs={"p": "hyaudio/predict_probs:0"}))], "m.toml")
    self.assertEqual(second.signatures["probs_only"].tensors["p"],
                     "m/hyaudio/predict_probs:0")
    self.assertEqual(second.init_ops, [])

  def test_missing_tensor_lists_the_closest_names(self):
    with self.assertRaisesRegex(
        errors.GraphError,
        r'^spec m\.toml, model #1 "sig", key "outputs": alias "probs": '
        r'tensor "hyaudio/predict_prob:0" is not in the graph \(.*hyaudio\.pb'
        r'\)\. Closest names: hyaudio/predict_probs:0'):
      self._analyze(self.hyaudio, _model(
          "sig", self.hyaudio, outputs={"probs": "hyaudio/predict_prob:0"}))

  def test_output_index_past_the_node_outputs(self):
    with self.assertRaisesRegex(
        errors.GraphError,
        r'key "outputs": alias "p": node "hyaudio/predict_probs" has 1 '
        r'output\(s\), so "hyaudio/predict_probs:3" does not exist'):
      self._analyze(self.hyaudio, _model(
          "sig", self.hyaudio, outputs={"p": "hyaudio/predict_probs:3"}))

  def test_method_structure_is_checked(self):
    with self.assertRaisesRegex(
        errors.GraphError,
        r'key "inputs": method "classify" needs alias "inputs" to be string '
        r'\(a batch of serialized tf\.Example\); tensor '
        r'"hyaudio/vggish_input:0" is float32\. Use method = "predict"'):
      self._analyze(self.hyaudio, _model(
          "sig", self.hyaudio, method="classify",
          outputs={"scores": "hyaudio/predict_probs:0"}))

  def test_output_needing_an_unlisted_placeholder_is_refused(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
      bias = tf.compat.v1.placeholder(tf.float32, [None], name="bias")
      tf.add(x, bias, name="y")
    path = os.path.join(self.create_tempdir().full_path, "two_inputs.pb")
    with open(path, "wb") as f:
      f.write(graph.as_graph_def().SerializeToString())
    info = {"path": path, "inputs": {"x": "x:0"}, "outputs": {"y": "y:0"},
            "method": "predict"}
    with self.assertRaisesRegex(
        errors.GraphError,
        r'key "outputs": output "y" \("y:0"\) needs placeholder\(s\) '
        r"'bias', which are not among the model's inputs.*"
        r'bias = "bias:0"'):
      self._analyze(info)

  def test_graph_with_variables_is_not_frozen(self):
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.Variable([1.0], name="w", use_resource=False)
    graph_def = graph.as_graph_def()
    with self.assertRaisesRegex(
        errors.GraphError,
        r"is not frozen: it still has variable node\(s\) w; freeze it"):
      signatures.analyze(
          graph_def, "m", [(0, _model("sig", self.hyaudio))], None)

  def test_where_and_tensor_info(self):
    model = _model("sig", self.hyaudio)
    self.assertEqual(signatures.where(model, 2, "m.toml", "inputs"),
                     'spec m.toml, model #3 "sig", key "inputs"')
    self.assertEqual(signatures.where(model, 0, None), 'spec, model #1 "sig"')
    unknown = signatures.tensor_info("a:0", tf.string, None)
    self.assertTrue(unknown.tensor_shape.unknown_rank)
    self.assertEqual(
        [d.size for d in signatures.tensor_info("a:0", tf.float32,
                                                [2, -1]).tensor_shape.dim],
        [2, -1])


if __name__ == "__main__":
  absltest.main()
