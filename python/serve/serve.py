r"""Serves SavedModels over TF Serving's gRPC and REST APIs, like its server.

Same flag names and defaults as tensorflow_model_server, plus --host:

  bazel run //python/serve -- --port=8500 --model_name=m \
      --model_base_path=/abs/path/to/m
  bazel run //python/serve -- --model_config_file=/abs/models.config
  bazel run //python/serve -- ... --ssl_config_file=/abs/ssl.config  # TLS
  bazel run //python/serve -- ... --rest_api_port=8501 \
      --monitoring_config_file=/abs/monitoring.config  # REST + Prometheus

SIGTERM or SIGINT stops accepting requests, drains the ones in flight (for up
to --drain_timeout_seconds) and exits 0; during start-up it abandons the
loading and exits 0. A second SIGTERM or SIGINT exits at once with status 1,
dropping what is still in flight. Exit status 1 otherwise means the server
could not start (e.g. a model that does not load), 2 a bad command line.
Before flags are parsed (while TensorFlow is imported) a signal still has its
default effect: the process dies at once, with nothing loaded or served yet.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from python.common import cli
from python.serve import model_manager
from python.serve import server_lib
from python.serve import signal_waiter

_PORT = flags.DEFINE_integer('port', 8500, 'Port to listen on for gRPC API.')
_HOST = flags.DEFINE_string(
    'host', '127.0.0.1',
    'Address to bind. TF Serving binds every interface; this server only '
    'when asked (--host=0.0.0.0).')
# --- REST API and monitoring (issue 12; the lead moves these to flags.py) ---
_REST_API_PORT = flags.DEFINE_integer(
    'rest_api_port', 0,
    'Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will '
    'not be exported. This port must be different than the one specified in '
    '--port.')
_REST_API_NUM_THREADS = flags.DEFINE_integer(
    'rest_api_num_threads', 4 * (os.cpu_count() or 1),
    'Number of threads for HTTP/REST API processing. If not set, will be '
    'auto set based on number of CPUs.', lower_bound=1)
_REST_API_TIMEOUT_IN_MS = flags.DEFINE_integer(
    'rest_api_timeout_in_ms', 30000,
    'Timeout for HTTP/REST API calls (the TensorFlow run of each request); '
    '0 or less: none.')
_REST_API_ENABLE_CORS_SUPPORT = flags.DEFINE_bool(
    'rest_api_enable_cors_support', False,
    'Enable CORS headers in response.')
_MONITORING_CONFIG_FILE = flags.DEFINE_string(
    'monitoring_config_file', '',
    'If non-empty, read an ascii MonitoringConfig protobuf from the supplied '
    'file name (prometheus_config { enable: true path: "..." }); the page is '
    'served on --rest_api_port.')
# --- end of REST API and monitoring ---
_MODEL_NAME = flags.DEFINE_string(
    'model_name', 'default',
    'Name of model (ignored if --model_config_file flag is set).')
_MODEL_BASE_PATH = flags.DEFINE_string(
    'model_base_path', '',
    'Path to export (ignored if --model_config_file flag is set, otherwise '
    'required). Must be absolute or a URI.')
_MODEL_CONFIG_FILE = flags.DEFINE_string(
    'model_config_file', '',
    'If non-empty, read an ascii ModelServerConfig protobuf from the supplied '
    'file name, and serve the models in that file. (If used, --model_name, '
    '--model_base_path are ignored.)')
_MODEL_CONFIG_FILE_POLL_WAIT_SECONDS = flags.DEFINE_integer(
    'model_config_file_poll_wait_seconds', 0,
    'Interval in seconds between each poll of the model config file; 0 reads '
    'it once at startup.')
_FILE_SYSTEM_POLL_WAIT_SECONDS = flags.DEFINE_integer(
    'file_system_poll_wait_seconds', 1,
    'Interval in seconds between each poll of the filesystem for new model '
    'versions. 0 polls exactly once; a negative value never polls again.')
_ENABLE_MODEL_WARMUP = flags.DEFINE_bool(
    'enable_model_warmup', True,
    'Replay assets.extra/tf_serving_warmup_requests of each version before '
    'serving it.')
_NUM_REQUEST_ITERATIONS_FOR_WARMUP = flags.DEFINE_integer(
    'num_request_iterations_for_warmup', 1,
    'Number of times each warmup record is replayed.', lower_bound=1)
_GRPC_MAX_THREADS = flags.DEFINE_integer(
    'grpc_max_threads', 4 * (os.cpu_count() or 1),
    'Max gRPC server threads to handle gRPC messages.', lower_bound=1)
_MAX_NUM_LOAD_RETRIES = flags.DEFINE_integer(
    'max_num_load_retries', 5,
    'Maximum number of times it retries loading a model after the first '
    'failure, before giving up.', lower_bound=0)
_LOAD_RETRY_INTERVAL_MICROS = flags.DEFINE_integer(
    'load_retry_interval_micros', 60 * 1000 * 1000,
    'The interval, in microseconds, between each servable load retry.',
    lower_bound=0)
_SAVED_MODEL_TAGS = flags.DEFINE_string(
    'saved_model_tags', 'serve',
    'Comma-separated set of tags corresponding to the meta graph def to '
    'load from SavedModel.')
_TENSORFLOW_SESSION_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_session_parallelism', 0,
    'Number of threads to use for running a Tensorflow session; 0 = auto.',
    lower_bound=0)
_TENSORFLOW_INTRA_OP_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_intra_op_parallelism', 0,
    'Number of threads for intra-op parallelism; 0 = auto. Overrides '
    '--tensorflow_session_parallelism.', lower_bound=0)
_TENSORFLOW_INTER_OP_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_inter_op_parallelism', 0,
    'Number of threads for inter-op parallelism; 0 = auto. Overrides '
    '--tensorflow_session_parallelism.', lower_bound=0)
_ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS = flags.DEFINE_bool(
    'allow_version_labels_for_unavailable_models', False,
    'If true, allows assigning unused version labels to models that are not '
    'available yet.')
_SSL_CONFIG_FILE = flags.DEFINE_string(
    'ssl_config_file', '',
    'If non-empty, read an ascii SSLConfig protobuf from the supplied file '
    'name and set up a secure gRPC channel (server_key, server_cert, '
    'custom_ca, client_verify hold PEM text).')
_DRAIN_TIMEOUT_SECONDS = flags.DEFINE_float(
    'drain_timeout_seconds', 30.0,
    'On SIGTERM/SIGINT, how long in-flight requests may take to finish '
    'before they are cancelled. A second signal exits at once.',
    lower_bound=0.0)

def _options() -> server_lib.ServerOptions:
  intra = (_TENSORFLOW_INTRA_OP_PARALLELISM.value or
           _TENSORFLOW_SESSION_PARALLELISM.value)
  inter = (_TENSORFLOW_INTER_OP_PARALLELISM.value or
           _TENSORFLOW_SESSION_PARALLELISM.value)
  manager = model_manager.ManagerOptions(
      saved_model_tags=[t for t in _SAVED_MODEL_TAGS.value.split(',') if t],
      session_config=tf.compat.v1.ConfigProto(
          intra_op_parallelism_threads=intra,
          inter_op_parallelism_threads=inter),
      enable_model_warmup=_ENABLE_MODEL_WARMUP.value,
      num_request_iterations_for_warmup=(
          _NUM_REQUEST_ITERATIONS_FOR_WARMUP.value),
      file_system_poll_wait_seconds=_FILE_SYSTEM_POLL_WAIT_SECONDS.value,
      max_num_load_retries=_MAX_NUM_LOAD_RETRIES.value,
      load_retry_interval_seconds=_LOAD_RETRY_INTERVAL_MICROS.value / 1e6,
      allow_version_labels_for_unavailable_models=(
          _ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS.value))
  return server_lib.ServerOptions(
      port=_PORT.value,
      host=_HOST.value,
      model_name=_MODEL_NAME.value,
      model_base_path=_MODEL_BASE_PATH.value,
      model_config_file=cli.user_path(_MODEL_CONFIG_FILE.value),
      model_config_file_poll_wait_seconds=(
          _MODEL_CONFIG_FILE_POLL_WAIT_SECONDS.value),
      grpc_max_threads=_GRPC_MAX_THREADS.value,
      ssl_config_file=cli.user_path(_SSL_CONFIG_FILE.value),
      drain_timeout_seconds=_DRAIN_TIMEOUT_SECONDS.value,
      manager=manager,
      rest_api_port=_REST_API_PORT.value,
      rest_api_num_threads=_REST_API_NUM_THREADS.value,
      rest_api_timeout_in_ms=_REST_API_TIMEOUT_IN_MS.value,
      rest_api_enable_cors_support=_REST_API_ENABLE_CORS_SUPPORT.value,
      monitoring_config_file=cli.user_path(_MONITORING_CONFIG_FILE.value))


def _check_flags(argv) -> None:
  """Raises app.UsageError (exit 2) for a command line TF Serving rejects."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}', exitcode=2)
  if not _MODEL_BASE_PATH.value and not _MODEL_CONFIG_FILE.value:
    raise app.UsageError(
        'Both --model_base_path and --model_config_file are empty! Pass '
        '--model_base_path=/abs/path (with --model_name) or '
        '--model_config_file=/abs/models.config.', exitcode=2)
  base_path = _MODEL_BASE_PATH.value
  if (not _MODEL_CONFIG_FILE.value and
      not model_manager.is_absolute_path_or_uri(base_path)):
    raise app.UsageError(
        f'Expected model {_MODEL_NAME.value} to have an absolute path or URI; '
        f'got base_path()={base_path}. Pass e.g. '
        f'--model_base_path="$PWD/{base_path}".', exitcode=2)
  if not 0 <= _PORT.value < 65536:
    raise app.UsageError(f'--port={_PORT.value} is not in [0, 65535].',
                         exitcode=2)
  if not 0 <= _REST_API_PORT.value < 65536:
    raise app.UsageError(
        f'--rest_api_port={_REST_API_PORT.value} is not in [0, 65535] '
        '(0 = no REST API).', exitcode=2)
  if _REST_API_PORT.value and _REST_API_PORT.value == _PORT.value:
    raise app.UsageError(
        f'--port={_PORT.value} and --rest_api_port={_REST_API_PORT.value} '
        'cannot be the same. Pick e.g. --rest_api_port=8501.', exitcode=2)


def _exit_process(status: int) -> None:
  """Flushes the logs and ends the process without interpreter teardown.

  By now the server has done what it promised (requests drained, versions
  unloaded) or given up on it (second signal, drain timeout). A normal exit
  would add CPython's teardown of TensorFlow and gRPC: about 1.3 CPU-seconds,
  which is 10-20 s of wall time on a loaded 2-core machine, and unsafe while
  a request or a model load still runs in TensorFlow in a daemon thread:
  CPython ends such a thread with pthread_exit inside C++ code, which can
  abort the process ("FATAL: exception not rethrown").

  Args:
    status: The exit status.
  """
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def main(argv):
  _check_flags(argv)
  # Merged bundles keep large weights in variables/; oneDNN runs a MatMul or
  # Conv whose weights are not Const nodes through another kernel, which can
  # change the last bits of an answer. Served weights never change after the
  # restore, so tell oneDNN to treat them as frozen, as the launcher does for
  # a real tensorflow_model_server (see python/merge/externalize.py). Read
  # when kernels are created, so setting it here, before any load, suffices.
  os.environ.setdefault('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS', '1')
  with signal_waiter.SignalWaiter() as signals:
    try:
      status = server_lib.serve_until_signal(
          server_lib.ModelServer(_options()), signals)
    except server_lib.ServerError as e:
      print(f'Failed to start server. Error: {e}', file=sys.stderr,
            flush=True)
      status = 1
  _exit_process(status)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
