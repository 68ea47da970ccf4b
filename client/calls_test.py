"""Tests for calls: how one request's inputs are made, against a fake server."""

from absl.testing import absltest
import numpy as np

from client import calls
from client import client_lib
from client import fake_server_testlib
from client import input_files


class CallsTest(fake_server_testlib.ServerTestCase):

  def setUp(self):
    super().setUp()
    self.client = self.make_client()
    self.signatures = self.client.metadata().signatures

  def test_missing_inputs_are_sampled(self):
    inputs, info = calls.build_inputs(self.client, self.signatures["scale"],
                                      [], batch_size=2)
    self.assertEqual(inputs["x"].shape, (2, 3))
    self.assertEqual(info["x"].to_json(),
                     {"dtype": "float32", "shape": [2, 3], "source": "sample"})

  def test_file_inputs_say_what_they_are_sent_as(self):
    loaded = [
        input_files.NamedArray("x", np.ones((4, 3)), None, "x.npy"),
        input_files.NamedArray("f", np.ones((4, 1), np.float32), None,
                               "f.npy"),
    ]
    claimed = calls.predict_input_names(self.signatures.values())
    self.assertEqual(claimed, {"x", "data"})
    _, scale = calls.build_inputs(self.client, self.signatures["scale"],
                                  loaded, 1, claimed)
    self.assertEqual(scale["x"].source, "file (float64, sent as float32)")
    given, reg = calls.build_inputs(self.client, self.signatures["reg"],
                                    loaded, 1, claimed)
    self.assertEqual(list(given), ["f"])  # "x" goes to the predict signature.
    self.assertEqual((reg["f"].dtype, reg["f"].source), ("float32", "file"))

  def test_examples_without_features_are_empty_when_the_server_takes_them(
      self):
    info = {}
    result, examples = calls.call_signature(
        self.client, self.signatures["cls"], {}, 3, calls.Bundle(), info)
    self.assertEqual(result.method, "classify")
    self.assertLen(examples, 3)
    self.assertEqual(info[client_lib.EXAMPLES_INPUT_ALIAS].to_json(),
                     {"dtype": "tf.Example", "shape": [3],
                      "source": "empty tf.Examples", "features": {}})


if __name__ == "__main__":
  absltest.main()
