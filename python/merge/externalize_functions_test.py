"""Large constants inside function bodies move to variables/, bit for bit.

TF2 graphs frozen with `convert_variables_to_constants_v2(...,
lower_control_flow=False)` whose weights are Consts inside functions: a
`tf.while_loop` body, a function calling the function that holds the
weights, a function called twice (and shared with the nested model), both
branches of a `tf.cond`, a loop body calling a function, and a function
running a loop. They are merged
with a low threshold; then no Const above it is left in any function body,
the weights are in `variables/` with their exact bytes, every signature
answers bit-identically to its frozen graph alone (the merge's check, and
the bundle loaded independently in a fresh session), and //cc/verify loads
and runs the bundle as TF Serving does.

Rewriting rules that frozen TF2 graphs do not produce (Case, unrewritable
references, gradients, TF1 frames, control edges) are tested on hand-built
GraphDefs.
"""

import json
import os
import subprocess
from unittest import mock

from absl.testing import absltest
from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import convert_to_constants

from python.common import built_binaries
from python.merge import externalize
from python.merge import function_constants
from python.merge import graph_io
from python.merge import merge_lib
from python.merge import numerics

_THRESHOLD = 1024
_DIM = 32  # Weights are 32x32 float32: 4 KiB, above the threshold.


def _weights(seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((_DIM, _DIM)) * 0.2).astype(np.float32)


W_LOOP, W_INNER, W_TRUE, W_FALSE, W_FOLDED, W_CALLED_LOOP = (
    _weights(s) for s in range(6))
_SPEC = tf.TensorSpec([None, _DIM], tf.float32)


def _freeze(fn, path: str) -> str:
  frozen = convert_to_constants.convert_variables_to_constants_v2(
      fn.get_concrete_function(), lower_control_flow=False)
  with open(path, "wb") as f:
    f.write(frozen.graph.as_graph_def().SerializeToString())
  return path


def _write_graphs(directory: str) -> dict:
  """Freezes the test models; returns signature name -> frozen path."""
  os.makedirs(directory, exist_ok=True)

  # _noinline keeps the call nodes through freezing (Grappler's function
  # inlining would otherwise put the weights in the graph).
  @tf.function(experimental_attributes={"_noinline": True})
  def inner(x):
    return tf.matmul(x, tf.constant(W_INNER)) + 1.0

  @tf.function(experimental_attributes={"_noinline": True})
  def outer(x):
    return tf.nn.relu(inner(x)) * 2.0

  @tf.function(input_signature=[_SPEC])
  def loop(x):
    def body(i, h):
      return i + 1, tf.tanh(tf.matmul(h, tf.constant(W_LOOP)))
    _, y = tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), x])
    return tf.identity(y, name="y")

  @tf.function(input_signature=[_SPEC])
  def nested(x):
    return tf.identity(outer(x), name="y")

  @tf.function(input_signature=[_SPEC])
  def twice(x):
    return tf.identity(inner(tf.tanh(inner(x))), name="y")

  @tf.function(input_signature=[_SPEC])
  def cond(x):
    y = tf.cond(tf.reduce_sum(x) > 0.0,
                lambda: tf.matmul(x, tf.constant(W_TRUE)),
                lambda: tf.matmul(x, tf.constant(W_FALSE)))
    return tf.identity(y, name="y")

  @tf.function(input_signature=[_SPEC])
  def loop_call(x):
    _, y = tf.while_loop(lambda i, h: i < 2,
                         lambda i, h: (i + 1, tf.tanh(inner(h))),
                         [tf.constant(0), x])
    return tf.identity(y, name="y")

  @tf.function(experimental_attributes={"_noinline": True})
  def looping(x):
    def body(i, h):
      return i + 1, tf.tanh(tf.matmul(h, tf.constant(W_CALLED_LOOP)))
    return tf.while_loop(lambda i, h: i < 2, body, [tf.constant(0), x])[1]

  @tf.function(input_signature=[_SPEC])
  def loop_in_call(x):
    return tf.identity(looping(x), name="y")

  @tf.function(input_signature=[_SPEC])
  def folded(x):
    # Grappler folds W_FOLDED * 2 into one constant: W_FOLDED stays inline.
    def body(i, h):
      return i + 1, tf.tanh(tf.matmul(h, tf.constant(W_FOLDED) * 2.0))
    _, y = tf.while_loop(lambda i, h: i < 2, body, [tf.constant(0), x])
    return tf.identity(y, name="y")

  models = {"loop": loop, "nested": nested, "twice": twice, "cond": cond,
            "loop_call": loop_call, "loop_in_call": loop_in_call,
            "folded": folded}
  return {name: _freeze(fn, os.path.join(directory, f"{name}.pb"))
          for name, fn in models.items()}


def _spec(paths: dict, names) -> merge_lib.MergeSpec:
  return merge_lib.MergeSpec(models=tuple(
      merge_lib.ModelSpec(signature_name=name, frozen=paths[name],
                          inputs={"x": "x:0"}, outputs={"y": "y:0"})
      for name in names))


def _graph_def(export_dir: str) -> tf.compat.v1.GraphDef:
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  return saved_model.meta_graphs[0].graph_def


def _large_function_consts(graph_def) -> list[str]:
  return [f"{f.signature.name}/{n.name}" for f in graph_def.library.function
          for n in f.node_def if n.op == "Const" and
          graph_io.tensor_nbytes(n.attr["value"].tensor) > _THRESHOLD]


def _inputs(seed: int) -> list[np.ndarray]:
  """Two batches: one whose sum is positive, one negative (cond branches)."""
  x = np.random.default_rng(seed).standard_normal((3, _DIM)).astype(
      np.float32)
  x = np.abs(x)
  return [x, -x]


def _verifier() -> str:
  """//cc/verify from runfiles (or bazel-bin outside Bazel)."""
  return built_binaries.built_binary("cc", "verify", "verify")


_MAIN = ("loop", "nested", "twice", "cond", "loop_call", "loop_in_call")


class FunctionConstantsBundleTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    numerics.assume_frozen_weights()
    tmp = absltest.get_default_test_tmpdir()
    cls.paths = _write_graphs(os.path.join(tmp, "frozen"))
    cls.spec = _spec(cls.paths, _MAIN)
    cls.result = merge_lib.merge_and_publish(
        cls.spec, os.path.join(tmp, "merged"),
        externalize_threshold_bytes=_THRESHOLD)
    cls.graph_def = _graph_def(cls.result.path)

  def test_frozen_graphs_hold_the_weights_in_function_bodies(self):
    for name in _MAIN:
      graph_def = tf.compat.v1.GraphDef()
      with open(self.paths[name], "rb") as f:
        graph_def.ParseFromString(f.read())
      self.assertNotEqual(_large_function_consts(graph_def), [], name)
      self.assertEqual(
          externalize.large_constants(graph_def, _THRESHOLD), [], name)

  def test_no_large_const_is_left_in_any_function_body(self):
    self.assertEqual(_large_function_consts(self.graph_def), [])
    bundle = self.result.bundle
    self.assertEqual(bundle.function_inline, [])
    self.assertEqual(bundle.kept_inline, [])
    # One per model and function holding weights (cond: both branches).
    self.assertLen(bundle.lifted, 7)
    self.assertLen(bundle.externalized_weights, 7)

  def test_weights_are_in_variables_bit_for_bit(self):
    reader = tf.train.load_checkpoint(
        os.path.join(self.result.path, "variables", "variables"))
    values = [reader.get_tensor(k) for k in
              sorted(reader.get_variable_to_shape_map())]
    self.assertLen(values, 7)
    expected = {"loop": [W_LOOP], "nested": [W_INNER], "twice": [W_INNER],
                "cond": [W_TRUE, W_FALSE], "loop_call": [W_INNER],
                "loop_in_call": [W_CALLED_LOOP]}
    for scope, weights in expected.items():
      keys = sorted(k for k in reader.get_variable_to_shape_map()
                    if k.startswith(f"{scope}/function_constants/"))
      self.assertLen(keys, len(weights), scope)
      for weight in weights:
        self.assertTrue(any(
            reader.get_tensor(k).tobytes() == weight.tobytes()
            for k in keys), scope)

  def test_call_sites_pass_the_variables(self):
    nodes = {n.name: n for n in self.graph_def.node}
    functions = {f.signature.name: f for f in self.graph_def.library.function}
    # The loop: one more loop variable, passed through unchanged.
    loop = nodes["loop/while"]
    self.assertEqual(nodes[loop.input[-1]].op, "ReadVariableOp")
    self.assertLen(loop.attr["T"].list.type, len(loop.input))
    body = functions[loop.attr["body"].func.name]
    cond = functions[loop.attr["cond"].func.name]
    self.assertLen(body.signature.input_arg, len(loop.input))
    self.assertLen(cond.signature.input_arg, len(loop.input))
    self.assertLen(body.signature.output_arg, len(loop.input))
    last_in = body.signature.input_arg[-1].name
    self.assertEqual(body.ret[body.signature.output_arg[-1].name], last_in)
    # Called twice: both calls read the same variable.
    calls = [n for n in self.graph_def.node
             if n.name.startswith("twice/") and n.op == "PartitionedCall"]
    self.assertLen(calls, 2)
    value, = {c.input[-1] for c in calls}
    self.assertStartsWith(value, "twice/function_constants/")
    self.assertEqual(nodes[value].op, "ReadVariableOp")
    for call in calls:
      self.assertLen(call.attr["Tin"].list.type, 2)
    # Nested: the outer function takes the value and passes it on.
    call = nodes["nested/PartitionedCall"]
    outer = functions[call.attr["f"].func.name]
    self.assertLen(outer.signature.input_arg, 2)
    inner_call, = [n for n in outer.node_def if n.op == "PartitionedCall"]
    self.assertEqual(inner_call.input[-1], outer.signature.input_arg[1].name)
    # The cond: both branches take both values.
    cond_node, = [n for n in self.graph_def.node
                  if n.name.startswith("cond/") and n.op == "StatelessIf"]
    self.assertLen(cond_node.attr["Tin"].list.type, 3)
    for branch in ("then_branch", "else_branch"):
      self.assertLen(functions[cond_node.attr[branch].func.name]
                     .signature.input_arg, 3)
    # A loop inside a called function: the function passes its argument
    # into the loop, whose body carries it.
    call = nodes["loop_in_call/PartitionedCall"]
    looping = functions[call.attr["f"].func.name]
    arg = looping.signature.input_arg[-1].name
    loop, = [n for n in looping.node_def if n.op in ("While", "StatelessWhile")]
    self.assertEqual(loop.input[len(loop.attr["T"].list.type) - 1], arg)
    body = functions[loop.attr["body"].func.name]
    self.assertEqual(body.ret[body.signature.output_arg[-1].name],
                     body.signature.input_arg[-1].name)

  def test_merge_check_reports_bit_identical_answers(self):
    self.assertCountEqual(self.result.numerics, _MAIN)
    for name, value in self.result.numerics.items():
      self.assertTrue(value.identical, f"{name}: {value.to_text()}")

  def test_loaded_bundle_answers_as_each_frozen_graph_alone(self):
    reference = numerics.Reference.from_spec(self.spec)
    graph = tf.Graph()
    try:
      with tf.compat.v1.Session(graph=graph,
                                config=config_pb2.ConfigProto()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"],
                                                    self.result.path)
        for seed, name in enumerate(_MAIN):
          signature = meta.signature_def[name]
          for x in _inputs(seed):
            merged = sess.run(signature.outputs["y"].name,
                              {signature.inputs["x"].name: x})
            alone = reference.answers(name, {"x": x})["y"]
            np.testing.assert_array_equal(merged, alone, err_msg=name)
            self.assertEqual(merged.tobytes(), alone.tobytes(), name)
    finally:
      reference.close()

  def test_cc_verify_loads_and_runs_the_bundle(self):
    proc = subprocess.run(
        [_verifier(), f"--export_dir={self.result.path}", "--run=smoke",
         "--json"], capture_output=True, text=True, timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
    report = json.loads(proc.stdout)
    self.assertTrue(report["ok"], report)
    self.assertEqual(set(report["signatures"]), set(_MAIN))
    for name, sig in report["signatures"].items():
      self.assertTrue(sig["ran"], f"{name}: {sig}")

  def test_folded_function_constant_stays_inline_within_the_budget(self):
    spec = _spec(self.paths, ["folded"])
    base = os.path.join(absltest.get_default_test_tmpdir(), "folded")
    result = merge_lib.merge_and_publish(
        spec, base, externalize_threshold_bytes=_THRESHOLD)
    self.assertLen(result.bundle.kept_inline, 1)
    self.assertRegex(result.bundle.kept_inline[0],
                     r"^folded/while_body_\d+/while/Const$")
    self.assertEqual(result.bundle.lifted, [])
    self.assertLen(_large_function_consts(_graph_def(result.path)), 1)
    self.assertTrue(result.numerics["folded"].identical,
                    result.numerics["folded"].to_text())
    # Past the budget it is lifted anyway, and reported as such.
    with mock.patch.object(externalize,
                                    "DEFAULT_INLINE_BUDGET_BYTES", 0):
      result = merge_lib.merge_and_publish(
          spec, base, externalize_threshold_bytes=_THRESHOLD,
          allow_same_content=True)
    self.assertEqual(result.bundle.folded_externalized,
                     result.bundle.lifted)
    self.assertLen(result.bundle.lifted, 1)
    self.assertEqual(_large_function_consts(_graph_def(result.path)), [])


def _graph(text: str) -> tf.compat.v1.GraphDef:
  return text_format.Parse(text, tf.compat.v1.GraphDef())


def _big_const(name: str, control: str = "") -> str:
  """Text of a 2 KiB float Const node (body syntax)."""
  values = np.arange(512, dtype=np.float32)
  tensor = text_format.MessageToString(tf.make_tensor_proto(values),
                                       as_one_line=True)
  return (f'node_def {{ name: "{name}" op: "Const" {control} '
          'attr { key: "dtype" value { type: DT_FLOAT } } '
          f'attr {{ key: "value" value {{ tensor {{ {tensor} }} }} }} }}')


def _function(name: str, body: str = "", inputs=("x",), ret="x") -> str:
  args = " ".join(f'input_arg {{ name: "{a}" type: DT_FLOAT }}'
                  for a in inputs)
  return (f'function {{ signature {{ name: "{name}" {args} '
          f'output_arg {{ name: "y" type: DT_FLOAT }} }} {body} '
          f'ret {{ key: "y" value: "{ret}" }} }}')


def _lift(graph_def):
  analysis = function_constants.Analysis(graph_def)
  constants = function_constants.large_constants(
      graph_def, _THRESHOLD, frozenset())
  return function_constants.lift(graph_def, analysis, constants)


class RewriteRulesTest(absltest.TestCase):

  def test_case_gives_every_branch_the_argument(self):
    graph_def = _graph(f"""
      node {{ name: "i" op: "Placeholder" }}
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "case" op: "Case" input: "i" input: "x" input: "^i"
             attr {{ key: "Tin" value {{ list {{ type: DT_FLOAT }} }} }}
             attr {{ key: "Tout" value {{ list {{ type: DT_FLOAT }} }} }}
             attr {{ key: "branches" value {{ list {{
               func {{ name: "b0" }} func {{ name: "b1" }} }} }} }} }}
      library {{
        {_function("b0")}
        {_function("b1", _big_const("w") + '''
          node_def { name: "mul" op: "Mul" input: "x" input: "w:output:0"
                     attr { key: "T" value { type: DT_FLOAT } } }''',
                   ret="mul:z:0")}
      }}""")
    lifted = _lift(graph_def)
    self.assertEqual(lifted.graph_names,
                     {("b1", "w"): "function_constants/b1/w"})
    case = graph_def.node[2]
    self.assertEqual(list(case.input),
                     ["i", "x", "function_constants/b1/w", "^i"])
    self.assertLen(case.attr["Tin"].list.type, 2)
    b0, b1 = graph_def.library.function
    self.assertEqual([a.name for a in b0.signature.input_arg],
                     ["x", "merge_w"])
    self.assertEqual([a.name for a in b1.signature.input_arg],
                     ["x", "merge_w"])
    self.assertEqual([n.name for n in b1.node_def], ["mul"])
    self.assertEqual(list(b1.node_def[0].input), ["x", "merge_w"])
    self.assertEqual(graph_def.node[3].op, "Const")

  def test_control_edges_from_the_constant_move_to_its_own_inputs(self):
    graph_def = _graph(f"""
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "call" op: "f" input: "x" }}
      library {{ {_function("f", '''
          node_def { name: "dep" op: "NoOp" }''' +
          _big_const("w", 'input: "^dep"') + '''
          node_def { name: "id" op: "Identity" input: "x" input: "^w"
                     attr { key: "T" value { type: DT_FLOAT } } }
          node_def { name: "mul" op: "Mul" input: "id:output:0"
                     input: "w:output:0"
                     attr { key: "T" value { type: DT_FLOAT } } }''',
          ret="mul:z:0")} }}""")
    _lift(graph_def)
    body = {n.name: n for n in graph_def.library.function[0].node_def}
    self.assertNotIn("w", body)
    self.assertEqual(list(body["id"].input), ["x", "^dep"])
    self.assertEqual(list(body["mul"].input), ["id:output:0", "merge_w"])
    self.assertEqual(list(graph_def.node[1].input),
                     ["x", "function_constants/f/w"])

  def _unchanged(self, text: str, reason: str):
    graph_def = _graph(text)
    before = graph_def.SerializeToString(deterministic=True)
    lifted = _lift(graph_def)
    self.assertEqual(lifted.graph_names, {})
    (key, why), = lifted.inline.items()
    self.assertEqual(key, ("f", "w"))
    self.assertIn(reason, why)
    self.assertEqual(graph_def.SerializeToString(deterministic=True), before)

  def test_function_referenced_by_another_attr_stays_inline(self):
    self._unchanged(f"""
      node {{ name: "ds" op: "MapDataset"
             attr {{ key: "f" value {{ func {{ name: "f" }} }} }} }}
      library {{ {_function("f", _big_const("w"), ret="w:output:0")} }}""",
                    "refers to it in attr f, which is not rewritten")

  def test_function_with_a_gradient_stays_inline(self):
    self._unchanged(f"""
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "call" op: "f" input: "x" }}
      library {{ {_function("f", _big_const("w"), ret="w:output:0")}
                 {_function("g")}
                 gradient {{ function_name: "f" gradient_func: "g" }} }}""",
                    "the library's gradients name it")

  def test_callee_of_an_unrewritable_caller_stays_inline(self):
    self._unchanged(f"""
      node {{ name: "ds" op: "MapDataset"
             attr {{ key: "f" value {{ func {{ name: "caller" }} }} }} }}
      library {{
        {_function("caller", '''node_def { name: "c" op: "f" input: "x" }''',
                   ret="c:y:0")}
        {_function("f", _big_const("w"), ret="w:output:0")} }}""",
                    "its caller caller cannot be rewritten")

  def test_call_inside_a_tf1_loop_frame_stays_inline(self):
    self._unchanged(f"""
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "enter" op: "Enter" input: "x"
             attr {{ key: "frame_name" value {{ s: "loop" }} }} }}
      node {{ name: "call" op: "PartitionedCall" input: "enter"
             attr {{ key: "Tin" value {{ list {{ type: DT_FLOAT }} }} }}
             attr {{ key: "Tout" value {{ list {{ type: DT_FLOAT }} }} }}
             attr {{ key: "f" value {{ func {{ name: "f" }} }} }} }}
      library {{ {_function("f", _big_const("w"), ret="w:output:0")} }}""",
                    "runs inside a TF1 while-loop frame")

  def test_while_body_used_otherwise_stays_inline(self):
    self._unchanged(f"""
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "loop" op: "While" input: "x"
             attr {{ key: "T" value {{ list {{ type: DT_FLOAT }} }} }}
             attr {{ key: "cond" value {{ func {{ name: "c" }} }} }}
             attr {{ key: "body" value {{ func {{ name: "f" }} }} }} }}
      node {{ name: "call" op: "f" input: "x" }}
      library {{ {_function("c")}
                 {_function("f", _big_const("w"), ret="w:output:0")} }}""",
                    "While body also used otherwise")

  def test_externalizer_reports_constants_left_in_functions(self):
    graph_def = _graph(f"""
      node {{ name: "ds" op: "MapDataset"
             attr {{ key: "f" value {{ func {{ name: "f" }} }} }} }}
      library {{ {_function("f", _big_const("w"), ret="w:output:0")} }}""")
    externalizer = externalize.Externalizer(_THRESHOLD, None)
    prepared = externalizer.prepare(graph_def, ["ds"], scope="m")
    self.assertEqual(prepared.weights, set())
    self.assertLen(externalizer.function_inline, 1)
    self.assertTrue(externalizer.function_inline[0].startswith("m/f/w: "),
                    externalizer.function_inline)
    self.assertEqual(externalizer.function_inline_bytes, 2048)

  def test_lifting_is_deterministic(self):
    text = f"""
      node {{ name: "x" op: "Placeholder" }}
      node {{ name: "a" op: "f" input: "x" }}
      node {{ name: "b" op: "g" input: "x" }}
      library {{
        {_function("f", _big_const("w") + _big_const("v") +
                   '''node_def { name: "c" op: "g" input: "x" }''',
                   ret="c:y:0")}
        {_function("g", _big_const("w"), ret="w:output:0")} }}"""
    first, second = _graph(text), _graph(text)
    _lift(first)
    _lift(second)
    self.assertEqual(first.SerializeToString(deterministic=True),
                     second.SerializeToString(deterministic=True))
    f, g = first.library.function
    # f: its own two constants plus g's, which it passes on.
    self.assertEqual([a.name for a in f.signature.input_arg],
                     ["x", "merge_v", "merge_w", "merge_w_2"])
    self.assertEqual([a.name for a in g.signature.input_arg],
                     ["x", "merge_w"])
    call, = [n for n in f.node_def if n.name == "c"]
    self.assertEqual(list(call.input), ["x", "merge_w_2"])
    nodes = {n.name: n for n in first.node}
    self.assertEqual(list(nodes["a"].input),
                     ["x", "function_constants/f/v", "function_constants/f/w",
                      "function_constants/g/w"])
    self.assertEqual(list(nodes["b"].input), ["x", "function_constants/g/w"])


if __name__ == "__main__":
  absltest.main()
