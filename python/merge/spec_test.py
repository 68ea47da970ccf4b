"""Tests of the merge spec: TOML loading and every validation error."""

import os
import pathlib

from absl.testing import absltest
from absl.testing import parameterized

from python.merge import errors
from python.merge import spec as spec_lib
from python.merge.testdata import graphs


def _model(name="hyaudio_1", **overrides):
  model = {
      "signature_name": name,
      "frozen": "audio/hyaudio.pb",
      "inputs": {"inputs": "hyaudio/vggish_input:0"},
      "outputs": {"probs": "hyaudio/predict_probs:0",
                  "classes": "hyaudio/predict_classes:0"},
  }
  model.update(overrides)
  return {k: v for k, v in model.items() if v is not None}


class LoadSpecTest(parameterized.TestCase):

  def _write(self, models, **top):
    path = os.path.join(self.create_tempdir().full_path, "merge.toml")
    return graphs.write_spec(path, models, **top)

  def test_loads_models_with_defaults_and_resolves_paths(self):
    path = self._write(
        [_model("hyaudio_1"), _model("hyaudio_2", method="classify",
                                     inputs={"inputs": "ex:0"},
                                     outputs={"scores": "s:0"},
                                     frozen="/abs/other.pb")],
        message="add hyaudio", serving_default="hyaudio_1")
    spec = spec_lib.load_spec(path)
    self.assertEqual(spec.message, "add hyaudio")
    self.assertEqual(spec.serving_default, "hyaudio_1")
    self.assertEqual(spec.source, path)
    self.assertLen(spec.models, 2)
    first, second = spec.models
    self.assertEqual(first.method, "predict")
    self.assertEqual(first.frozen,
                     os.path.join(os.path.dirname(path), "audio/hyaudio.pb"))
    self.assertEqual(dict(first.outputs),
                     {"probs": "hyaudio/predict_probs:0",
                      "classes": "hyaudio/predict_classes:0"})
    self.assertEqual(second.frozen, "/abs/other.pb")
    self.assertEqual(second.method, "classify")
    # A spec loaded from a file passes the Python-side validation too.
    spec_lib.validate_spec(spec)

  def test_uri_frozen_path_is_kept(self):
    spec = spec_lib.load_spec(self._write([_model(frozen="gs://b/m.pb")]))
    self.assertEqual(spec.models[0].frozen, "gs://b/m.pb")

  @parameterized.named_parameters(
      ("unknown_top_key", [_model()], {"mesage": "x"},
       r'merge\.toml: unknown key "mesage"; did you mean "message"\? '
       r"Valid keys: message, serving_default, base, remove, "
       r"allowed_asset_dirs, model"),
      ("unknown_model_key", [_model(output={"a": "b:0"})], {},
       r'model #1 "hyaudio_1": unknown key "output"; did you mean '
       r'"outputs"\?'),
      ("missing_models", [], {"message": "x"},
       r'missing key "model"; add at least one \[\[model\]\]'),
      ("missing_frozen", [_model(frozen=None)], {},
       r'model #1 "hyaudio_1": missing key "frozen"'),
      ("missing_signature_name", [_model(signature_name=None)], {},
       r'model #1: missing key "signature_name"'),
      ("missing_outputs", [_model(), _model("b", outputs=None)], {},
       r'model #2 "b": missing key "outputs"'),
      ("duplicate_signature", [_model("a"), _model("b"), _model("a")], {},
       r'model #3 "a", key "signature_name": duplicate signature name "a" '
       r"\(also model #1\)"),
      ("unknown_method", [_model(method="predcit")], {},
       r'model #1 "hyaudio_1", key "method": unknown method \'predcit\'; '
       r"valid methods: predict, classify, regress"),
      ("signature_with_slash", [_model("a/b")], {},
       r"key \"signature_name\": 'a/b' is not a valid signature name"),
      ("reserved_signature", [_model("merge_internal")], {},
       r'"merge_internal" is reserved'),
      ("signature_not_string", [_model(signature_name=3)], {},
       r'model #1, key "signature_name": must be a string; got int 3'),
      ("inputs_not_table", [_model(inputs="x:0")], {},
       r'key "inputs": must be a table of alias = "tensor:0" entries'),
      ("empty_outputs", [_model(outputs={})], {},
       r'key "outputs": is empty; a signature needs at least one output'),
      ("tensor_not_string", [_model(inputs={"x": 1})], {},
       r'key "inputs": alias "x" must map to a tensor name string'),
      ("bad_tensor_name", [_model(outputs={"p": "probs:zero"})], {},
       r'alias "p" maps to "probs:zero", which is not a tensor name'),
      ("alias_in_inputs_and_outputs",
       [_model(inputs={"x": "a:0"}, outputs={"x": "b:0"})], {},
       r"alias collision: 'x' used both as input and output alias"),
      ("two_aliases_feed_one_tensor",
       [_model(inputs={"x": "a:0", "y": "a"})], {},
       r'alias collision: "x" and "y" both feed tensor "a"'),
      ("classify_wrong_input",
       [_model(method="classify", inputs={"wav": "w:0"},
               outputs={"scores": "s:0"})], {},
       r'method "classify" takes exactly one input aliased "inputs"'),
      ("classify_extra_output",
       [_model(method="classify", inputs={"inputs": "e:0"},
               outputs={"scores": "s:0", "probs": "p:0"})], {},
       r"method \"classify\" allows only the output aliases "
       r"\['classes', 'scores'\].*unexpected \['probs'\]"),
      ("regress_wrong_output",
       [_model(method="regress", inputs={"inputs": "e:0"},
               outputs={"value": "v:0"})], {},
       r'method "regress" takes exactly one output aliased "outputs"'),
      ("serving_default_unknown", [_model("hyaudio_1"), _model("hyaudio_2")],
       {"serving_default": "hyaudio_3"},
       r'key "serving_default": "hyaudio_3" is not a signature_name of any '
       r"model; valid choices: \['hyaudio_1', 'hyaudio_2'\]; did you mean"),
      ("message_not_string", [_model()], {"message": 5},
       r'key "message": must be a string; got 5'),
  )
  def test_invalid_spec(self, models, top, regex):
    path = self._write(models, **top)
    with self.assertRaisesRegex(errors.SpecError, regex) as cm:
      spec_lib.load_spec(path)
    # Every message names the spec file.
    self.assertIn(path, str(cm.exception))

  def test_invalid_toml_names_line(self):
    path = os.path.join(self.create_tempdir().full_path, "bad.toml")
    with open(path, "w") as f:
      f.write('[[model]]\nsignature_name = "a\n')
    with self.assertRaisesRegex(errors.SpecError,
                                r"bad\.toml: invalid TOML: .*line 2"):
      spec_lib.load_spec(path)

  def test_missing_file(self):
    path = os.path.join(self.create_tempdir().full_path, "nope.toml")
    with self.assertRaisesRegex(
        errors.SpecError, r"spec file .*nope\.toml does not exist"):
      spec_lib.load_spec(path)

  def test_directory(self):
    path = self.create_tempdir().full_path
    with self.assertRaisesRegex(errors.SpecError, r"is a directory"):
      spec_lib.load_spec(path)

  def test_binary_file_instead_of_toml(self):
    path = os.path.join(self.create_tempdir().full_path, "model.pb")
    with open(path, "wb") as f:
      f.write(b"\x0a\x8f\xff\xfe\x00binary")
    with self.assertRaisesRegex(
        errors.SpecError, r"model\.pb is not UTF-8 text .*did you pass a \.pb"):
      spec_lib.load_spec(path)


class ValidateSpecTest(parameterized.TestCase):

  def _spec(self, **overrides):
    model = dict(signature_name="a", frozen="/m/a.pb",
                 inputs={"x": "x:0"}, outputs={"y": "y:0"})
    model.update(overrides)
    return spec_lib.MergeSpec(models=(spec_lib.ModelSpec(**model),))

  def test_valid(self):
    spec_lib.validate_spec(self._spec())

  def test_path_like_frozen_and_list_of_models_are_accepted(self):
    spec = spec_lib.MergeSpec(models=[
        spec_lib.ModelSpec("a", pathlib.Path("/models/a.pb"), {"x": "x:0"},
                           {"y": "y:0"})])
    spec_lib.validate_spec(spec)
    self.assertIsInstance(spec.models, tuple)
    self.assertEqual(spec.models[0].frozen, "/models/a.pb")

  def test_relative_frozen_path_rejected(self):
    with self.assertRaisesRegex(
        errors.SpecError,
        r'model #1 "a", key "frozen": "a.pb" must be an absolute path or a '
        r"URI; pass os.path.abspath"):
      spec_lib.validate_spec(self._spec(frozen="a.pb"))

  def test_no_models(self):
    with self.assertRaisesRegex(errors.SpecError, r"no models"):
      spec_lib.validate_spec(spec_lib.MergeSpec(models=()))

  def test_not_a_spec(self):
    with self.assertRaisesRegex(errors.SpecError, r"expected a MergeSpec"):
      spec_lib.validate_spec({"models": []})

  def test_serving_default_clash(self):
    spec = spec_lib.MergeSpec(
        models=(spec_lib.ModelSpec("serving_default", "/a.pb", {"x": "x:0"},
                                   {"y": "y:0"}),
                spec_lib.ModelSpec("b", "/b.pb", {"x": "x:0"},
                                   {"y": "y:0"})),
        serving_default="b")
    with self.assertRaisesRegex(errors.SpecError,
                                r'a model is already named "serving_default"'):
      spec_lib.validate_spec(spec)

  def test_closest(self):
    self.assertEqual(
        spec_lib.closest("hyaudio/predict_prob:0",
                         ["hyaudio/predict_probs:0", "other:0"])[0],
        "hyaudio/predict_probs:0")


if __name__ == "__main__":
  absltest.main()
