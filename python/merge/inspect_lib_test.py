"""inspect_lib on SavedModels the toolkit did not write (TF2 exports)."""

import os

from absl.testing import absltest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from python.common import op_policy
from python.merge import inspect_lib


class _Counter(tf.Module):
  """A TF2 export: a variable, a signature, and optionally a print."""

  def __init__(self, prints: bool):
    super().__init__()
    self.count = tf.Variable(1.0)
    self.prints = prints

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def add(self, x):
    if self.prints:
      tf.print("adding", x)
    return {"y": x + self.count}


def _export(root: str, prints: bool) -> str:
  module = _Counter(prints)
  path = os.path.join(root, "printing" if prints else "plain")
  tf.saved_model.save(module, path, signatures={"add": module.add})
  return path


class Tf2BundleTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = absltest.get_default_test_tmpdir()
    cls.plain = _export(root, prints=False)
    cls.printing = _export(root, prints=True)

  def test_the_init_op_signature_has_no_dtype(self):
    # TF2 exports carry `__saved_model_init_op`, whose output is an op
    # (DT_INVALID), not a tensor: described, not a crash.
    desc = inspect_lib.describe_saved_model(self.plain)
    signatures = desc["meta_graphs"][0]["signatures"]
    init = signatures["__saved_model_init_op"]["outputs"]
    self.assertEqual(init["__saved_model_init_op"]["dtype"], "invalid")
    self.assertEqual(init["__saved_model_init_op"]["dtype_enum"],
                     "DT_INVALID")
    self.assertEqual(signatures["add"]["outputs"]["y"]["dtype"], "float32")
    self.assertIn("Method name is", inspect_lib.format_saved_model_text(desc))

  def test_the_savers_own_checkpoint_functions_are_not_denied(self):
    desc = inspect_lib.describe_saved_model(self.plain)
    self.assertEqual(desc["meta_graphs"][0]["denied_ops"], [])

  def test_a_print_in_a_signature_function_is_still_denied(self):
    desc = inspect_lib.describe_saved_model(self.printing)
    ops = {d["op"] for d in desc["meta_graphs"][0]["denied_ops"]}
    self.assertEqual(ops, {"PrintV2"})

  def test_saver_only_functions_hold_the_checkpoint_ops(self):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(self.plain, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    meta_graph = proto.meta_graphs[0]
    saver_only = op_policy.saver_only_functions(meta_graph)
    self.assertNotEmpty(saver_only)
    everything = op_policy.find_denied_ops(meta_graph.graph_def)
    self.assertTrue(any(f.function in saver_only for f in everything))
    self.assertEqual(op_policy.find_denied_ops(
        meta_graph.graph_def,
        exempt_nodes=op_policy.saver_exemptions(meta_graph),
        saver_functions=saver_only), [])


if __name__ == "__main__":
  absltest.main()
