"""Merged answers are bit-identical to each real architecture served alone.

The corpus (tests/testdata/architectures.py: MobileNetV2, ResNet- and
EfficientNet-style CNNs, two LSTMs with colliding names, a GRU, a
Transformer encoder block, a TF1 graph with v1 control flow and a
StringLookup text model) is frozen with one process per model, then merged
once into one bundle with a low externalization threshold (so conv, dense
and recurrent weights move to `variables/`). Every signature must then
answer bit-identically to its frozen graph alone:

  * as the merge's own check reports (`MergeResult.numerics`, text and
    JSON), and
  * independently here: the bundle loaded with TensorFlow's SavedModel
    loader in a session with a server's default options (Grappler on),
    fed seeded random inputs (batch 3), vs the frozen graph imported alone.

A second merge of the CNNs with the inline budget at 0 (every folded
constant externalized anyway) shows what the fix prevents: answers that
differ in the last bits, which the check reports.
"""

import json
import os
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from python.merge import externalize
from python.merge import merge_lib
from python.merge import numerics
from python.merge import signatures
from tests.testdata import architectures

_THRESHOLD = 1024
_BATCH = 3


def _random_input(name: str, seed: int) -> np.ndarray:
  dtype, shape = architectures.INPUTS[name]
  dims = [_BATCH] + shape[1:]
  rng = np.random.default_rng(seed)
  if dtype == "string":
    words = list(architectures.VOCABULARY) + ["unknown", ""]
    return np.array(rng.choice(words, dims), dtype=object).astype(bytes)
  values = rng.standard_normal(dims).astype(np.float32)
  if name in ("mobilenet_v2", "efficientnet"):
    values = np.abs(values) * 100.0  # Pixel-like values.
  return values


def _alone(path: str, inputs: dict, outputs: dict, feed: np.ndarray) -> dict:
  """The frozen graph imported alone and run with a server's options."""
  graph_def = tf.compat.v1.GraphDef()
  with open(path, "rb") as f:
    graph_def.ParseFromString(f.read())
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
  init_ops = [n.name for n in graph_def.node if "InitializeTable" in n.op or
              n.op == "LookupTableImportV2"]
  with tf.compat.v1.Session(graph=graph,
                            config=config_pb2.ConfigProto()) as sess:
    if init_ops:
      sess.run(init_ops)
    (alias, tensor), = inputs.items()
    return sess.run(dict(outputs), {tensor: feed})


class NumericsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    numerics.assume_frozen_weights()
    tmp = absltest.get_default_test_tmpdir()
    cls.corpus = architectures.freeze_all(os.path.join(tmp, "corpus"))
    cls.spec = merge_lib.MergeSpec(models=tuple(
        merge_lib.ModelSpec(signature_name=name, frozen=path, inputs=inputs,
                            outputs=outputs)
        for name, (path, inputs, outputs) in cls.corpus.items()))
    cls.base = os.path.join(tmp, "merged")
    cls.result = merge_lib.merge_and_publish(
        cls.spec, cls.base, externalize_threshold_bytes=_THRESHOLD)

  def test_corpus_has_the_architectures(self):
    ops = {}
    for name, (path, _, _) in self.corpus.items():
      graph_def = tf.compat.v1.GraphDef()
      with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
      ops[name] = {n.op for n in graph_def.node}
    self.assertIn("DepthwiseConv2dNative", ops["mobilenet_v2"])
    self.assertIn("Relu6", ops["mobilenet_v2"])
    self.assertIn("FusedBatchNormV3", ops["resnet"])
    self.assertIn("BiasAdd", ops["resnet"])
    self.assertIn("Sigmoid", ops["efficientnet"])
    self.assertIn("LoopCond", ops["lstm"])
    self.assertIn("Einsum", ops["transformer"])
    self.assertIn("Switch", ops["tf1_control_flow"])
    self.assertIn("LookupTableImportV2", ops["text"])
    # Separate jobs generate the same names for the two LSTMs.
    names = {}
    for name in ("lstm", "lstm_twin"):
      graph_def = tf.compat.v1.GraphDef()
      with open(self.corpus[name][0], "rb") as f:
        graph_def.ParseFromString(f.read())
      names[name] = {n.name for n in graph_def.node}
    self.assertGreater(len(names["lstm"] & names["lstm_twin"]), 100)

  def test_loop_outputs_have_static_shapes(self):
    bundle = self.result.bundle
    self.assertEqual(bundle.signatures["tf1_control_flow"].outputs["y"],
                     signatures.TensorSpec("float32", [-1, 16]))
    self.assertEqual(bundle.signatures["lstm"].outputs["y"],
                     signatures.TensorSpec("float32", [-1, 4]))

  def test_weights_were_externalized(self):
    bundle = self.result.bundle
    self.assertGreater(bundle.externalized, 30)
    # The folded ones (BatchNorm scales into conv weights) stayed inline.
    self.assertTrue(any("mobilenet_v2/" in n for n in bundle.kept_inline))
    self.assertEqual(bundle.folded_externalized, [])

  def test_check_reports_every_signature_bit_identical(self):
    self.assertCountEqual(self.result.numerics, self.corpus)
    for name, value in self.result.numerics.items():
      self.assertTrue(value.identical, f"{name}: {value.to_text()}")
      self.assertEqual(value.max_abs_diff, 0.0)
    summary = json.loads(merge_lib.to_json(self.result))
    self.assertEqual(summary["numerics"]["resnet"],
                     {"identical": True, "max_abs_diff": 0.0,
                      "outputs": {"y": {"identical": True,
                                        "max_abs_diff": 0.0,
                                        "mismatched": 0}}})
    self.assertIn("numerics lstm_twin: bit-identical to its frozen graph "
                  "alone", self.result.to_text())

  def test_loaded_bundle_answers_bit_identically_on_random_inputs(self):
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph,
                              config=config_pb2.ConfigProto()) as sess:
      meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                  self.result.path)
      for seed, (name, (path, inputs, outputs)) in enumerate(
          sorted(self.corpus.items())):
        feed = _random_input(name, seed)
        signature = meta.signature_def[name]
        merged = sess.run(
            {a: i.name for a, i in signature.outputs.items()},
            {signature.inputs["x" if "x" in inputs else "words"].name: feed})
        alone = _alone(path, inputs, outputs, feed)
        value = numerics.compare(merged, alone)
        self.assertTrue(value.identical, f"{name}: {value.to_text()}")

  def test_externalizing_folded_weights_is_reported_as_a_difference(self):
    cnns = merge_lib.MergeSpec(models=tuple(
        m for m in self.spec.models
        if m.signature_name in ("mobilenet_v2", "efficientnet")))
    with mock.patch.object(externalize, "DEFAULT_INLINE_BUDGET_BYTES", 0):
      result = merge_lib.merge_and_publish(
          cnns, os.path.join(absltest.get_default_test_tmpdir(), "budget0"),
          externalize_threshold_bytes=_THRESHOLD)
    self.assertNotEqual(result.bundle.folded_externalized, [])
    differing = {n: v for n, v in result.numerics.items() if not v.identical}
    self.assertNotEqual(differing, {}, result.to_text())
    for name, value in differing.items():
      self.assertGreater(value.max_abs_diff, 0.0)
      self.assertLess(value.max_abs_diff, 1e-3)
      self.assertIn(f"numerics {name}: differs from its frozen graph alone: "
                    "max |diff| ", result.to_text())
    summary = json.loads(merge_lib.to_json(result))
    name = sorted(differing)[0]
    self.assertFalse(summary["numerics"][name]["identical"])
    self.assertGreater(summary["numerics"][name]["max_abs_diff"], 0.0)


class OutputShapesTest(absltest.TestCase):
  """Declared output shapes seen through v1 while loops."""

  def _loop_graph(self, grow: bool):
    v1 = tf.compat.v1
    v1.disable_control_flow_v2()
    graph = tf.Graph()
    with graph.as_default():
      x = v1.placeholder(tf.float32, [None, 4], name="x")
      if grow:  # The loop appends columns: only the rank is invariant.
        body = lambda i, h: (i + 1, tf.concat([h, h[:, :1]], axis=1))
        invariants = [tf.TensorShape([]), tf.TensorShape([None, None])]
      else:
        body = lambda i, h: (i + 1, tf.tanh(h) * 2.0)
        invariants = None
      _, h = v1.while_loop(lambda i, h: i < 3, body, [tf.constant(0), x],
                           shape_invariants=invariants)
      tf.identity(h, name="y")
    return graph.as_graph_def()

  def _declared(self, graph_def):
    model = merge_lib.ModelSpec(signature_name="m", frozen="m.pb",
                                inputs={"x": "x:0"}, outputs={"y": "y:0"})
    analysis = signatures.analyze(graph_def, "m", [(0, model)], None)
    return analysis.signatures["m"].outputs["y"].shape

  def test_shape_preserving_loop(self):
    graph_def = self._loop_graph(grow=False)
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name="")
    # What the importer alone sees:
    self.assertIsNone(graph.get_tensor_by_name("y:0").shape.rank)
    self.assertEqual(self._declared(graph_def), [-1, 4])

  def test_growing_loop_relaxes_to_its_rank(self):
    self.assertEqual(self._declared(self._loop_graph(grow=True)), [-1, -1])


class CompareTest(absltest.TestCase):

  def test_identical_and_different_values(self):
    a = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    self.assertTrue(numerics.compare_output(a, a.copy()).identical)
    b = a.copy()
    b[2] = np.nextafter(np.float32(3.0), np.float32(4.0))
    diff = numerics.compare_output(a, b)
    self.assertFalse(diff.identical)
    self.assertEqual(diff.mismatched, 1)
    self.assertAlmostEqual(diff.max_abs_diff, 2.384185791015625e-07)
    c = a.copy()
    c[1] = 0.0
    self.assertEqual(numerics.compare_output(a, c).max_abs_diff, float("inf"))
    shape = numerics.compare_output(a, a[:2])
    self.assertFalse(shape.identical)
    self.assertIsNone(shape.to_json_dict()["max_abs_diff"])

  def test_strings_and_signed_zero(self):
    words = np.array([b"a", b"b"], dtype=object)
    self.assertTrue(numerics.compare_output(words, words.copy()).identical)
    other = np.array([b"a", b"c"], dtype=object)
    self.assertEqual(numerics.compare_output(words, other).mismatched, 1)
    zero = numerics.compare_output(np.float32(0.0), np.float32(-0.0))
    self.assertFalse(zero.identical)  # Different bits.
    self.assertEqual(zero.max_abs_diff, 0.0)


if __name__ == "__main__":
  absltest.main()
