"""Tests for input_files: --input parsing and .npy/.npz/.json loading."""

import json
import os
import pickle

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from client import input_files


class ParseInputFlagTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("alias", "x=a.npy", "a.npy", "x", None),
      ("scoped", "sig:x=dir/a.json", "dir/a.json", "x", "sig"),
      ("whole_npz", "a.npz", "a.npz", None, None),
      ("scoped_whole_json", "sig:d/a.json", "d/a.json", None, "sig"),
      ("path_with_equals", "x=dir=1/a.npz", "dir=1/a.npz", "x", None))
  def test_parses(self, text, path, name, signature):
    spec = input_files.parse_input_flag(text)
    self.assertEqual((spec.path, spec.name, spec.signature),
                     (path, name, signature))

  @parameterized.named_parameters(
      ("pickle", "x=a.pkl", r"--input=x=a.pkl: 'a.pkl' must end in .npy, "
       r".npz, .json \(pickle files are refused"),
      ("npy_needs_alias", "a.npy", r"name it, e.g. --input=ALIAS=a.npy"),
      ("empty_alias", "=a.npy", r"expected \[SIGNATURE:\]ALIAS=FILE"),
      ("empty_signature", ":x=a.npy", r"expected \[SIGNATURE:\]ALIAS=FILE"))
  def test_rejects(self, text, pattern):
    with self.assertRaisesRegex(input_files.InputFileError, pattern):
      input_files.parse_input_flag(text)


class LoadInputsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  def path(self, name):
    return os.path.join(self.dir, name)

  def test_npy(self):
    np.save(self.path("x.npy"), np.arange(6, dtype=np.float32).reshape(2, 3))
    [item] = input_files.load_inputs([f"x={self.path('x.npy')}"])
    self.assertEqual(item.name, "x")
    self.assertIsNone(item.signature)
    np.testing.assert_array_equal(item.array, [[0, 1, 2], [3, 4, 5]])

  def test_npz_by_name_single_and_whole(self):
    np.savez(self.path("ab.npz"), a=np.ones(2), b=np.zeros(3))
    np.savez(self.path("one.npz"), only=np.arange(4))
    items = input_files.load_inputs([
        f"s:b={self.path('ab.npz')}", f"z={self.path('one.npz')}",
        self.path("ab.npz")])
    self.assertEqual([(i.signature, i.name, i.array.shape) for i in items],
                     [("s", "b", (3,)), (None, "z", (4,)), (None, "a", (2,)),
                      (None, "b", (3,))])

  def test_npz_missing_name_lists_contents(self):
    np.savez(self.path("ab.npz"), a=np.ones(2), b=np.zeros(3))
    with self.assertRaisesRegex(input_files.InputFileError,
                                r"has no array 'c'; it has \['a', 'b'\]"):
      input_files.load_inputs([f"c={self.path('ab.npz')}"])

  def test_json_list_and_object(self):
    with open(self.path("list.json"), "w") as f:
      json.dump([[1.5, 2.5]], f)
    with open(self.path("obj.json"), "w") as f:
      json.dump({"words": ["a", "b"], "n": [1, 2]}, f)
    items = input_files.load_inputs(
        [f"x={self.path('list.json')}", self.path("obj.json")])
    by_name = {i.name: i.array for i in items}
    np.testing.assert_array_equal(by_name["x"], [[1.5, 2.5]])
    self.assertEqual(by_name["words"].tolist(), ["a", "b"])
    self.assertEqual(by_name["n"].dtype.kind, "i")

  def test_json_ragged_is_refused(self):
    with open(self.path("ragged.json"), "w") as f:
      json.dump([[1], [2, 3]], f)
    with self.assertRaisesRegex(input_files.InputFileError,
                                "not a rectangular array"):
      input_files.load_inputs([f"x={self.path('ragged.json')}"])

  def test_pickled_npy_is_refused(self):
    np.save(self.path("obj.npy"), np.array([{"a": 1}], dtype=object),
            allow_pickle=True)
    with self.assertRaisesRegex(input_files.InputFileError,
                                r"holds Python objects \(pickle\), which the "
                                "client refuses to load"):
      input_files.load_inputs([f"x={self.path('obj.npy')}"])

  def test_pickle_bytes_renamed_npy_are_refused(self):
    with open(self.path("evil.npy"), "wb") as f:
      pickle.dump({"a": 1}, f)
    with self.assertRaisesRegex(input_files.InputFileError, "evil.npy"):
      input_files.load_inputs([f"x={self.path('evil.npy')}"])

  def test_missing_file(self):
    with self.assertRaisesRegex(input_files.InputFileError,
                                r"no such file '.*nope.npy'"):
      input_files.load_inputs([f"x={self.path('nope.npy')}"])

  def test_name_given_twice(self):
    np.save(self.path("x.npy"), np.ones(1))
    with self.assertRaisesRegex(input_files.InputFileError,
                                "'x' was already given by --input=x="):
      input_files.load_inputs([f"x={self.path('x.npy')}"] * 2)


class InputsForSignatureTest(absltest.TestCase):

  def test_scoped_wins_and_examples_take_any_name(self):
    loaded = [
        input_files.NamedArray("x", np.zeros(1), None, "a"),
        input_files.NamedArray("x", np.ones(1), "s", "b"),
        input_files.NamedArray("f", np.ones(2), None, "c"),
    ]
    picked = input_files.inputs_for_signature(loaded, "s", {"x": None},
                                              any_name=False)
    self.assertEqual(list(picked), ["x"])
    np.testing.assert_array_equal(picked["x"], [1])
    picked = input_files.inputs_for_signature(loaded, "other", {},
                                              any_name=True)
    self.assertEqual(sorted(picked), ["f", "x"])
    np.testing.assert_array_equal(picked["x"], [0])


if __name__ == "__main__":
  absltest.main()
