"""Tests of metrics: TF Serving's names and format, parsed by prometheus_client."""

from absl.testing import absltest
import grpc
from prometheus_client import parser

from python.serve import metrics
from python.serve import serving_error


def _families(page):
  return {f.name: f for f in parser.text_string_to_metric_families(page)}


def _value(family, sample_name, **labels):
  for sample in family.samples:
    if sample.name == sample_name and all(
        sample.labels.get(k) == v for k, v in labels.items()):
      return sample.value
  return None


class MonitoringConfigTest(absltest.TestCase):

  def test_default_and_custom_path(self):
    self.assertEqual(
        metrics.parse_monitoring_config('prometheus_config { enable: true }',
                                        'f'),
        metrics.PrometheusOptions(True, metrics.DEFAULT_PATH))
    self.assertEqual(
        metrics.parse_monitoring_config(
            'prometheus_config { enable: true path: "/m" }', 'f').path, '/m')
    self.assertFalse(metrics.parse_monitoring_config('', 'f').enable)

  def test_errors_name_the_file_and_the_fix(self):
    with self.assertRaisesRegex(metrics.MonitoringConfigError,
                                r"Invalid protobuf file: 'f'.*enabled.*"
                                r'Expected e.g. prometheus_config'):
      metrics.parse_monitoring_config('prometheus_config { enabled: true }',
                                      'f')
    with self.assertRaisesRegex(metrics.MonitoringConfigError,
                                'must start with "/"'):
      metrics.parse_monitoring_config(
          'prometheus_config { enable: true path: "m" }', 'f')
    with self.assertRaisesRegex(metrics.MonitoringConfigError,
                                'Cannot read --monitoring_config_file'):
      metrics.read_monitoring_config_file('/nonexistent/monitoring.config')


class MetricsTest(absltest.TestCase):

  def test_request_count_and_latency_per_signature(self):
    m = metrics.Metrics()
    for _ in range(3):
      with m.request('merged', 'Predict', metrics.ENTRYPOINT_GRPC) as record:
        record.signature_name = 'a'
    with m.request('merged', 'Predict', metrics.ENTRYPOINT_REST) as record:
      record.signature_name = 'b'
    with self.assertRaises(serving_error.ServingError):
      with m.request('merged', 'Predict', metrics.ENTRYPOINT_REST) as record:
        record.signature_name = 'b'
        raise serving_error.invalid_argument('bad')
    families = _families(m.page())
    count = families[metrics.REQUEST_COUNT]
    self.assertEqual(count.type, 'counter')
    name = metrics.REQUEST_COUNT + '_total'  # The parser's normal form.
    self.assertEqual(_value(count, name, signature_name='a', status='OK'), 3)
    self.assertEqual(_value(count, name, signature_name='b', status='OK'), 1)
    self.assertEqual(_value(count, name, signature_name='b',
                            status='INVALID_ARGUMENT'), 1)
    latency = families[metrics.REQUEST_LATENCY]
    self.assertEqual(latency.type, 'histogram')
    count_name = metrics.REQUEST_LATENCY + '_count'
    self.assertEqual(_value(latency, count_name, signature_name='a',
                            API='Predict', entrypoint='GRPC'), 3)
    # Only successful requests have a latency, as in TF Serving.
    self.assertEqual(_value(latency, count_name, signature_name='b',
                            entrypoint='REST'), 1)
    self.assertEqual(_value(latency, metrics.REQUEST_LATENCY + '_bucket',
                            signature_name='a', le='+Inf'), 3)

  def test_counter_samples_keep_tf_serving_names(self):
    m = metrics.Metrics()
    m.record_load('/m/1', True, 0.25)
    m.record_load('/m/2', False, 0.1)
    page = m.page()
    self.assertIn('# TYPE :tensorflow:cc:saved_model:load_attempt_count '
                  'counter\n', page)
    self.assertIn(':tensorflow:cc:saved_model:load_attempt_count{model_path='
                  '"/m/1",status="success"} 1\n', page)
    self.assertIn(':tensorflow:cc:saved_model:load_latency{model_path="/m/1"}'
                  ' 250000\n', page)
    self.assertNotIn('_total', page)
    self.assertNotIn('model_path="/m/2"}', page.split('load_latency')[-1])

  def test_histogram_buckets_are_tf_exponential_buckets(self):
    m = metrics.Metrics()
    m.record_warmup('/m/1', grpc.StatusCode.OK, 15e-6)  # 15 us
    family = _families(m.page())[metrics.WARMUP_LATENCY]
    buckets = [(s.labels['le'], s.value) for s in family.samples
               if s.name.endswith('_bucket')]
    self.assertLen(buckets, 34)
    self.assertEqual(buckets[0], ('10', 0))
    self.assertEqual(buckets[1], ('18', 1))
    self.assertEqual(buckets[-1], ('+Inf', 1))
    self.assertAlmostEqual(
        _value(family, metrics.WARMUP_LATENCY + '_sum', status='OK'), 15,
        places=3)

  def test_timed_servable_records_runtime_latency(self):

    class Fake:
      name = 'm'

      def run(self, feeds, fetches, timeout_s=None):
        del timeout_s
        return [feeds[f] for f in fetches]

    m = metrics.Metrics()
    timed = m.timed(Fake(), 'm', 'Regress')
    self.assertEqual(timed.name, 'm')
    self.assertEqual(timed.run({'a': 1}, ['a']), [1])
    family = _families(m.page())[metrics.RUNTIME_LATENCY]
    self.assertEqual(_value(family, metrics.RUNTIME_LATENCY + '_count',
                            API='Regress', runtime='TF1'), 1)


if __name__ == '__main__':
  absltest.main()
