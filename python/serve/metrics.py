"""TF Serving's Prometheus metrics, plus a per-signature label it lacks.

What tensorflow_model_server exports on its REST port when a MonitoringConfig
(`--monitoring_config_file`, text proto `prometheus_config { enable: true
path: "/monitoring/prometheus/metrics" }`) enables it, with TF's metric names
mangled the way its PrometheusExporter mangles them (every character outside
`[a-zA-Z0-9_]` becomes `:`):

| metric | type | labels |
| --- | --- | --- |
| `:tensorflow:serving:request_count` | counter | model_name, status, **signature_name** |
| `:tensorflow:serving:request_latency` | histogram (us) | model_name, API, entrypoint, **signature_name** |
| `:tensorflow:serving:runtime_latency` | histogram (us) | model_name, API, runtime |
| `:tensorflow:serving:model_warmup_latency` | histogram (us) | model_path, status |
| `:tensorflow:cc:saved_model:load_attempt_count` | counter | model_path, status |
| `:tensorflow:cc:saved_model:load_latency` | counter (us) | model_path |

`signature_name` is this project's addition (no TF Serving release has it,
serving#1959): every model of a merged bundle shares one model_name, so it is
what tells them apart. As in TF Serving, request_count counts every request
with its gRPC status name (OK, INVALID_ARGUMENT, ...), request_latency only
successful ones; API is Predict/Classify/Regress and entrypoint GRPC or REST;
histograms use TF's exponential buckets (10 us growing by 1.8, 33 buckets).

The values live in a `prometheus_client.CollectorRegistry` (one per server,
no global state) through a custom collector; `Metrics.page()` renders it in
the Prometheus text format exactly as TF Serving's exporter does. (The
client's own `generate_latest` would rename every counter to `<name>_total`,
which would break dashboards built on TF Serving's series names.)
"""

import contextlib
import dataclasses
import math
import threading
import time
from typing import Dict, Iterator, List, Tuple

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from prometheus_client import registry as prometheus_registry
from prometheus_client import core as prometheus_core

from python.serve import serving_error

DEFAULT_PATH = '/monitoring/prometheus/metrics'
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

REQUEST_COUNT = ':tensorflow:serving:request_count'
REQUEST_LATENCY = ':tensorflow:serving:request_latency'
RUNTIME_LATENCY = ':tensorflow:serving:runtime_latency'
WARMUP_LATENCY = ':tensorflow:serving:model_warmup_latency'
LOAD_ATTEMPT_COUNT = ':tensorflow:cc:saved_model:load_attempt_count'
LOAD_LATENCY = ':tensorflow:cc:saved_model:load_latency'

ENTRYPOINT_GRPC = 'GRPC'
ENTRYPOINT_REST = 'REST'
RUNTIME = 'TF1'  # Session-based, as TF Serving labels its SavedModel runtime.
UNKNOWN_SIGNATURE = ''  # Label of requests for a signature the model lacks.

# monitoring::Buckets::Exponential(10, 1.8, 33): 33 finite limits, then +Inf.
BUCKET_LIMITS: Tuple[float, ...] = tuple(10.0 * 1.8**i for i in range(33))


def _monitoring_config_class():
  """tensorflow.serving.MonitoringConfig (config/monitoring_config.proto).

  The tensorflow-serving-api wheel ships no Python module for it, so the two
  messages are declared here, field for field, in a private descriptor pool.
  """
  proto = descriptor_pb2.FileDescriptorProto(
      name='tensorflow_serving/config/monitoring_config.proto',
      package='tensorflow.serving', syntax='proto3')
  prometheus = proto.message_type.add(name='PrometheusConfig')
  prometheus.field.add(name='enable', number=1, type=8, label=1)  # bool
  prometheus.field.add(name='path', number=2, type=9, label=1)  # string
  monitoring = proto.message_type.add(name='MonitoringConfig')
  monitoring.field.add(name='prometheus_config', number=1, type=11, label=1,
                       type_name='.tensorflow.serving.PrometheusConfig')
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName('tensorflow.serving.MonitoringConfig'))


MonitoringConfig = _monitoring_config_class()


class MonitoringConfigError(ValueError):
  """--monitoring_config_file is unreadable or not a MonitoringConfig."""


@dataclasses.dataclass(frozen=True)
class PrometheusOptions:
  """Whether and where the REST port serves the metrics page."""
  enable: bool = False
  path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str) -> PrometheusOptions:
  """Parses a text-format MonitoringConfig.

  Args:
    text: The text proto.
    source: Where it came from, for messages.

  Returns:
    The Prometheus options (an empty path means DEFAULT_PATH, as in TF
    Serving).

  Raises:
    MonitoringConfigError: the text does not parse, or the path does not
      start with '/'.
  """
  config = MonitoringConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise MonitoringConfigError(
        f"Invalid protobuf file: '{source}': {str(e).rstrip('.')}. Expected e.g. "
        'prometheus_config { enable: true path: "/monitoring/prometheus/'
        'metrics" }') from e
  path = config.prometheus_config.path or DEFAULT_PATH
  if not path.startswith('/'):
    raise MonitoringConfigError(
        f'{source}: prometheus_config.path must start with "/"; got '
        f'"{path}". Use e.g. "{DEFAULT_PATH}".')
  return PrometheusOptions(enable=config.prometheus_config.enable, path=path)


def read_monitoring_config_file(path: str) -> PrometheusOptions:
  """Reads --monitoring_config_file.

  Raises:
    MonitoringConfigError: unreadable or invalid file.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise MonitoringConfigError(
        f'Cannot read --monitoring_config_file={path}: {e}') from e
  return parse_monitoring_config(text, path)


class _Histogram:
  """Cumulative bucket counts and sum of one label set."""

  __slots__ = ('counts', 'total')

  def __init__(self):
    self.counts = [0] * (len(BUCKET_LIMITS) + 1)
    self.total = 0.0

  def add(self, value: float) -> None:
    index = len(BUCKET_LIMITS)
    for i, limit in enumerate(BUCKET_LIMITS):
      if value < limit:
        index = i
        break
    self.counts[index] += 1
    self.total += value


@dataclasses.dataclass
class _Family:
  name: str
  documentation: str
  kind: str  # 'counter' | 'histogram'
  labels: Tuple[str, ...]
  values: Dict[Tuple[str, ...], object] = dataclasses.field(
      default_factory=dict)


def _micros(seconds: float) -> float:
  return max(0.0, seconds) * 1e6


class Metrics:
  """The server's metrics: thread-safe recording, one Prometheus registry."""

  def __init__(self):
    self._lock = threading.Lock()
    self._families: Dict[str, _Family] = {}
    for name, doc, kind, labels in (
        (REQUEST_COUNT, 'The total number of requests.', 'counter',
         ('model_name', 'status', 'signature_name')),
        (REQUEST_LATENCY, 'Distribution of wall time (in microseconds) for '
         'Tensorflow Serving request.', 'histogram',
         ('model_name', 'API', 'entrypoint', 'signature_name')),
        (RUNTIME_LATENCY, 'Distribution of wall time (in microseconds) for '
         'Tensorflow runtime.', 'histogram', ('model_name', 'API', 'runtime')),
        (WARMUP_LATENCY, 'Distribution of wall time (in microseconds) for '
         'warming up the model.', 'histogram', ('model_path', 'status')),
        (LOAD_ATTEMPT_COUNT, 'The number of times a SavedModel was '
         'successfully loaded.', 'counter', ('model_path', 'status')),
        (LOAD_LATENCY, 'Latency in microseconds for SavedModels that were '
         'successfully loaded.', 'counter', ('model_path',)),
    ):
      self._families[name] = _Family(name, doc, kind, labels)
    self.registry = prometheus_registry.CollectorRegistry(auto_describe=False)
    self.registry.register(_Collector(self))

  def _count(self, name: str, labels: Tuple[str, ...], amount: float = 1
            ) -> None:
    with self._lock:
      values = self._families[name].values
      values[labels] = values.get(labels, 0) + amount

  def _observe(self, name: str, labels: Tuple[str, ...], value: float
              ) -> None:
    with self._lock:
      values = self._families[name].values
      histogram = values.get(labels)
      if histogram is None:
        histogram = values[labels] = _Histogram()
      histogram.add(value)

  # --- recording ----------------------------------------------------------

  def record_request(self, model_name: str, signature_name: str, api: str,
                     entrypoint: str, status: grpc.StatusCode,
                     seconds: float) -> None:
    """One finished Predict/Classify/Regress request."""
    self._count(REQUEST_COUNT, (model_name, status.name, signature_name))
    if status == grpc.StatusCode.OK:
      self._observe(REQUEST_LATENCY,
                    (model_name, api, entrypoint, signature_name),
                    _micros(seconds))

  def record_runtime(self, model_name: str, api: str, seconds: float) -> None:
    """One Session run of a request."""
    self._observe(RUNTIME_LATENCY, (model_name, api, RUNTIME),
                  _micros(seconds))

  def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
    """One attempt to load a version (TF's C++ loader's two metrics)."""
    self._count(LOAD_ATTEMPT_COUNT, (model_path, 'success' if ok else 'fail'))
    if ok:
      self._count(LOAD_LATENCY, (model_path,), round(_micros(seconds)))

  def record_warmup(self, model_path: str, status: grpc.StatusCode,
                    seconds: float) -> None:
    """The warmup of one loaded version."""
    self._observe(WARMUP_LATENCY, (model_path, status.name), _micros(seconds))

  @contextlib.contextmanager
  def request(self, model_name: str, api: str, entrypoint: str
             ) -> Iterator['RequestRecord']:
    """Times a request and records it when the block exits.

    The block sets `record.signature_name` once it knows the signature; a
    `ServingError` leaving the block is recorded with its code, any other
    exception as INTERNAL.
    """
    record = RequestRecord()
    start = time.monotonic()
    status = grpc.StatusCode.INTERNAL
    try:
      yield record
      status = grpc.StatusCode.OK
    except serving_error.ServingError as e:
      status = e.code
      raise
    finally:
      self.record_request(model_name, record.signature_name, api, entrypoint,
                          status, time.monotonic() - start)

  def timed(self, servable, model_name: str, api: str) -> '_TimedServable':
    """`servable` with each `run` recorded as runtime_latency."""
    return _TimedServable(servable, self, model_name, api)

  # --- export ---------------------------------------------------------------

  def snapshot(self) -> List[_Family]:
    """A consistent copy of every family (for the collector)."""
    with self._lock:
      copies = []
      for family in self._families.values():
        values = {}
        for labels, value in family.values.items():
          if isinstance(value, _Histogram):
            copy = _Histogram()
            copy.counts = list(value.counts)
            copy.total = value.total
            value = copy
          values[labels] = value
        copies.append(dataclasses.replace(family, values=values))
      return copies

  def page(self) -> str:
    """The Prometheus text page, in TF Serving's exporter format."""
    lines = []
    for metric in self.registry.collect():
      lines.append(f'# HELP {metric.name} {_escape_help(metric.documentation)}')
      lines.append(f'# TYPE {metric.name} {metric.type}')
      for sample in metric.samples:
        labels = ','.join(f'{k}="{_escape_label(v)}"'
                          for k, v in sample.labels.items())
        lines.append(f'{sample.name}{{{labels}}} {_number(sample.value)}')
    return '\n'.join(lines) + '\n'


class RequestRecord:
  """What `Metrics.request` learns while the request runs."""

  def __init__(self):
    self.signature_name = UNKNOWN_SIGNATURE


class _TimedServable:
  """Delegates to a Servable, timing `run` calls."""

  def __init__(self, servable, metrics: Metrics, model_name: str, api: str):
    self._servable = servable
    self._metrics = metrics
    self._model_name = model_name
    self._api = api

  def __getattr__(self, name):
    return getattr(self._servable, name)

  def run(self, *args, **kwargs):
    start = time.monotonic()
    try:
      return self._servable.run(*args, **kwargs)
    finally:
      self._metrics.record_runtime(self._model_name, self._api,
                                   time.monotonic() - start)


def _bucket_limit(limit: float) -> str:
  """absl::StrCat of a double: %g with 6 significant digits."""
  return '%.6g' % limit


def _number(value: float) -> str:
  if isinstance(value, int) or float(value).is_integer():
    return str(int(value))
  if math.isinf(value):
    return '+Inf' if value > 0 else '-Inf'
  return repr(float(value))


def _escape_label(value: str) -> str:
  return value.replace('\\', r'\\').replace('"', r'\"').replace('\n', r'\n')


def _escape_help(text: str) -> str:
  return text.replace('\\', r'\\').replace('\n', r'\n')


class _Collector(prometheus_registry.Collector):
  """Turns a `Metrics` snapshot into prometheus_client metric families."""

  def __init__(self, metrics: Metrics):
    self._metrics = metrics

  def collect(self) -> Iterator[prometheus_core.Metric]:
    for family in self._metrics.snapshot():
      metric = prometheus_core.Metric(family.name, family.documentation,
                                      family.kind)
      # Metric strips a counter's "_total"; TF's names have none.
      metric.name = family.name
      for labels, value in sorted(family.values.items()):
        label_map = dict(zip(family.labels, labels))
        if family.kind == 'counter':
          metric.add_sample(family.name, label_map, value)
          continue
        cumulative = 0
        for i, count in enumerate(value.counts):
          cumulative += count
          limit = (_bucket_limit(BUCKET_LIMITS[i]) if i < len(BUCKET_LIMITS)
                   else '+Inf')
          metric.add_sample(family.name + '_bucket',
                            dict(label_map, le=limit), cumulative)
        metric.add_sample(family.name + '_sum', label_map, value.total)
        metric.add_sample(family.name + '_count', label_map, cumulative)
      yield metric

