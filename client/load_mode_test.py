"""Tests for load_mode: counting in load mode, against the fake server."""

from absl.testing import absltest
from absl.testing import parameterized

from client import fake_server_testlib
from client import load_mode


class LoadReportTest(absltest.TestCase):

  def test_counts_throughput_and_percentiles(self):
    r = load_mode.LoadReport("s", "predict", 5, [0.004, 0.001, 0.003, 0.002],
                             2.0, {"UNAVAILABLE: x": 1}, {"2": 4})
    self.assertEqual((r.succeeded, r.failed, r.ok), (4, 1, False))
    self.assertEqual(r.throughput_rps, 2.5)
    self.assertEqual(r.latency_percentile_s(50), 0.002)  # Nearest rank.
    self.assertEqual(r.latency_percentile_s(99), 0.004)

  def test_no_time_is_no_throughput(self):
    r = load_mode.LoadReport("s", "predict", 1, [], 0.0, {}, {},
                             input_error="bad")
    self.assertEqual(r.throughput_rps, 0.0)
    self.assertFalse(r.ok)


class LoadTest(fake_server_testlib.ServerTestCase):

  def setUp(self):
    super().setUp()
    self.client = self.make_client()
    self.signatures = self.client.metadata().signatures

  @parameterized.parameters((0, 1), (1, 0))
  def test_refuses_no_requests_or_no_concurrency(self, requests, concurrency):
    with self.assertRaisesRegex(ValueError, "must be >= 1"):
      load_mode.load(self.client, [self.signatures["scale"]], [], 1, requests,
                     concurrency, None)

  def test_every_request_counted_once(self):
    self.server.servicer.fail_next(
        fake_server_testlib.grpc.StatusCode.RESOURCE_EXHAUSTED, 2)
    [report] = load_mode.load(self.client, [self.signatures["scale"]], [], 1,
                              9, 3, None)
    self.assertEqual((report.requests, report.succeeded, report.failed),
                     (9, 7, 2))
    self.assertEqual(report.errors,
                     {"RESOURCE_EXHAUSTED: injected failure": 2})
    self.assertEqual(report.versions, {"2": 7})
    self.assertGreater(report.elapsed_s, 0)

  def test_input_that_cannot_be_made_is_reported_not_sent(self):
    counts = self.server.servicer.calls
    before = counts["Predict"]
    [report] = load_mode.load(self.client, [self.signatures["blob"]], [], 1,
                              4, 2, None)
    self.assertEqual(counts["Predict"], before)
    self.assertRegex(report.input_error, "unknown rank")
    self.assertEqual((report.succeeded, report.failed), (0, 0))


if __name__ == "__main__":
  absltest.main()
