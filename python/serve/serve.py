r"""Serves SavedModels over TF Serving's gRPC and REST APIs, like its server.

Every flag of tensorflow_model_server, with its name, type and default (see
python/serve/flags.py and the README's flag table), plus --host and
--drain_timeout_seconds:

  bazel run //python/serve -- --port=8500 --model_name=m \
      --model_base_path=/abs/path/to/m
  bazel run //python/serve -- --model_config_file=/abs/models.config
  bazel run //python/serve -- ... --ssl_config_file=/abs/ssl.config  # TLS
  bazel run //python/serve -- ... --rest_api_port=8501 \
      --monitoring_config_file=/abs/monitoring.config  # REST + Prometheus

SIGTERM or SIGINT stops accepting requests, drains the ones in flight (for up
to --drain_timeout_seconds) and exits 0; during start-up it abandons the
loading and exits 0. A second SIGTERM or SIGINT exits at once with status 1,
dropping what is still in flight. As tensorflow_model_server, a server that
cannot start (a bad config file, a model that does not load, a port in use)
prints "Failed to start server. Error: ..." and exits 255; a bad command line
exits 2 with one line saying what is wrong.
Before flags are parsed (while TensorFlow is imported) a signal still has its
default effect: the process dies at once, with nothing loaded or served yet.
"""

# First, before anything imports TensorFlow: its INFO chatter stays off
# unless --verbose (see python/common/quiet.py).
from python.common import quiet  # pylint: disable=unused-import,g-bad-import-order

import gc
import os
import sys

from absl import app
from absl import logging
from google.protobuf import text_format
import tensorflow as tf

from python.common import cli
from python.common import tf_env
from python.serve import batching
from python.serve import flags as serve_flags
from python.serve import model_manager
from python.serve import servable as servable_lib
from python.serve import server_config
from python.serve import server_lib
from python.serve import signal_waiter

# Exit status of a server that could not start: tensorflow_model_server's
# main() returns -1 ("Failed to start server. Error: ..."), which the shell
# sees as 255.
EXIT_START_FAILED = 255
SERVER_VERSION = '2.21.0-tf_serving_merge'


def _session_config() -> tf.compat.v1.ConfigProto:
  """--tensorflow_session_config_file, then the parallelism flags on top."""
  config = tf.compat.v1.ConfigProto()
  path = cli.user_path(serve_flags.TENSORFLOW_SESSION_CONFIG_FILE.value)
  if path:
    try:
      with open(path, encoding='utf-8') as f:
        text_format.Parse(f.read(), config)
    except (OSError, UnicodeDecodeError) as e:
      raise server_config.ServerError(
          f'Cannot read --tensorflow_session_config_file={path}: {e}') from e
    except text_format.ParseError as e:
      raise server_config.ServerError(
          'Error parsing text-format tensorflow.ConfigProto: '
          f'{str(e)[:300]}. Invalid protobuf file: \'{path}\'') from e
  session = serve_flags.TENSORFLOW_SESSION_PARALLELISM.value
  intra = serve_flags.TENSORFLOW_INTRA_OP_PARALLELISM.value or session
  inter = serve_flags.TENSORFLOW_INTER_OP_PARALLELISM.value or session
  if intra:
    config.intra_op_parallelism_threads = intra
  if inter:
    config.inter_op_parallelism_threads = inter
  return config


# --- batching (python/serve/batching.py) -----------------------------------
def _batching_parameters():
  """The server's BatchingParameters, as server.cc builds them, or None.

  Raises:
    server_config.ServerError: unreadable or invalid file, or a file without
      --enable_batching (TF Serving refuses that too).
  """
  f = serve_flags
  path = cli.user_path(f.BATCHING_PARAMETERS_FILE.value)
  if not f.ENABLE_BATCHING.value:
    if path:
      raise server_config.ServerError(
          'server_options.batching_parameters_file is set without setting '
          'server_options.enable_batching to true. Add --enable_batching.')
    return None
  if not path:
    return batching.default_batching_parameters()
  try:
    params = batching.read_batching_parameters_file(path)
    batching.queue_options(params, f'--batching_parameters_file={path}')
    batching.scheduler_options(params, f'--batching_parameters_file={path}')
  except batching.BatchingConfigError as e:
    raise server_config.ServerError(str(e)) from e
  return params
# --- end batching -----------------------------------------------------------


def _options() -> server_config.ServerOptions:
  f = serve_flags
  runtime = servable_lib.RuntimeOptions(
      enable_signature_method_name_check=(
          f.ENABLE_SIGNATURE_METHOD_NAME_CHECK.value),
      serialize_as_tensor_content=(
          f.ENABLE_SERIALIZATION_AS_TENSOR_CONTENT.value),
      remove_unused_fields_from_bundle_metagraph=(
          f.REMOVE_UNUSED_FIELDS_FROM_BUNDLE_METAGRAPH.value))
  manager = model_manager.ManagerOptions(
      saved_model_tags=[t for t in f.SAVED_MODEL_TAGS.value.split(',') if t]
      or ['serve'],
      session_config=_session_config(),
      enable_model_warmup=f.ENABLE_MODEL_WARMUP.value,
      num_request_iterations_for_warmup=max(
          1, f.NUM_REQUEST_ITERATIONS_FOR_WARMUP.value),
      file_system_poll_wait_seconds=f.FILE_SYSTEM_POLL_WAIT_SECONDS.value,
      max_num_load_retries=f.MAX_NUM_LOAD_RETRIES.value,
      load_retry_interval_seconds=max(
          0, f.LOAD_RETRY_INTERVAL_MICROS.value) / 1e6,
      allow_version_labels_for_unavailable_models=(
          f.ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS.value),
      num_load_threads=f.NUM_LOAD_THREADS.value,
      num_unload_threads=f.NUM_UNLOAD_THREADS.value,
      model_cache_dir=cli.user_path(f.MODEL_CACHE_DIR.value),
      batching_parameters=_batching_parameters(),
      enable_per_model_batching_parameters=(
          f.ENABLE_PER_MODEL_BATCHING_PARAMETERS.value),
      runtime=runtime)
  return server_config.ServerOptions(
      port=f.PORT.value,
      host=f.HOST.value,
      grpc_socket_path=cli.user_path(f.GRPC_SOCKET_PATH.value),
      grpc_channel_arguments=serve_flags.parse_channel_arguments(
          f.GRPC_CHANNEL_ARGUMENTS.value),
      enable_grpc_healthcheck_service=(
          f.ENABLE_GRPC_HEALTHCHECK_SERVICE.value),
      model_name=f.MODEL_NAME.value,
      model_base_path=f.MODEL_BASE_PATH.value,
      model_config_file=cli.user_path(f.MODEL_CONFIG_FILE.value),
      model_config_file_poll_wait_seconds=(
          f.MODEL_CONFIG_FILE_POLL_WAIT_SECONDS.value),
      grpc_max_threads=f.GRPC_MAX_THREADS.value,
      ssl_config_file=cli.user_path(f.SSL_CONFIG_FILE.value),
      rest_api_port=f.REST_API_PORT.value,
      rest_api_num_threads=f.REST_API_NUM_THREADS.value,
      rest_api_timeout_in_ms=f.REST_API_TIMEOUT_IN_MS.value,
      rest_api_enable_cors_support=f.REST_API_ENABLE_CORS_SUPPORT.value,
      monitoring_config_file=cli.user_path(f.MONITORING_CONFIG_FILE.value),
      drain_timeout_seconds=f.DRAIN_TIMEOUT_SECONDS.value,
      manager=manager)


def _check_flags(argv) -> None:
  """Raises app.UsageError (exit 2) for a command line TF Serving rejects."""
  f = serve_flags
  if len(argv) > 1:
    raise cli.usage_error(f'unknown argument: {argv[1]}. Flags take the form '
                          '--name=value.')
  if not f.MODEL_BASE_PATH.value and not f.MODEL_CONFIG_FILE.value:
    raise cli.usage_error(
        'Both --model_base_path and --model_config_file are empty! Pass '
        '--model_base_path=/abs/path (with --model_name) or '
        '--model_config_file=/abs/models.config.')
  base_path = f.MODEL_BASE_PATH.value
  if (not f.MODEL_CONFIG_FILE.value and
      not model_manager.is_absolute_path_or_uri(base_path)):
    raise cli.usage_error(
        f'Expected model {f.MODEL_NAME.value} to have an absolute path or URI; '
        f'got base_path()={base_path}. Pass e.g. '
        f'--model_base_path="$PWD/{base_path}".')
  for holder in (f.PORT, f.REST_API_PORT):
    if not 0 <= holder.value < 65536:
      raise cli.usage_error(
          f'--{holder.name}={holder.value} is not in [0, 65535].')
  if not f.PORT.value and not f.GRPC_SOCKET_PATH.value:
    raise cli.usage_error(
        '--port=0 disables the gRPC port and --grpc_socket_path is empty: '
        'nothing would serve gRPC. Pass a --port or a --grpc_socket_path.')
  if f.REST_API_PORT.value and f.REST_API_PORT.value == f.PORT.value:
    raise cli.usage_error(
        f'--rest_api_port cannot be same as --port ({f.PORT.value}). Please '
        'use a different port for HTTP/REST API.')
  try:
    f.parse_channel_arguments(f.GRPC_CHANNEL_ARGUMENTS.value)
  except ValueError as e:
    raise cli.usage_error(str(e)) from e
  if f.PLATFORM_CONFIG_FILE.value:
    raise cli.usage_error(
        f'--platform_config_file={f.PLATFORM_CONFIG_FILE.value}: platform '
        'configs (custom platforms, SessionBundleConfig) are not supported by '
        'python/serve; use --tensorflow_session_config_file for session '
        'options.')


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
  if serve_flags.VERSION.value:
    print(f'TensorFlow ModelServer: {SERVER_VERSION}\n'
          f'TensorFlow Library: {tf.__version__}', flush=True)
    _exit_process(0)
  _check_flags(argv)
  for note in serve_flags.ignored_notes():
    logging.warning('%s', note)
  # Merged bundles keep large weights in variables/; oneDNN runs a MatMul or
  # Conv whose weights are not Const nodes through another kernel, which can
  # change the last bits of an answer. Served weights never change after the
  # restore, so tell oneDNN to treat them as frozen, as the launcher does for
  # a real tensorflow_model_server (see python/merge/externalize.py). Read
  # when kernels are created, so setting it here, before any load, suffices.
  os.environ.setdefault(tf_env.ONEDNN_ASSUME_FROZEN_WEIGHTS, '1')
  # TensorFlow's and gRPC's modules leave ~370k objects that CPython's
  # collector tracks and that live as long as the process. A full
  # collection walks them all, holding the GIL for ~0.2 s on this machine,
  # and serving stalls for as long; CPython runs one whenever enough
  # long-lived objects have piled up (after loads, for instance). Frozen, the
  # collector skips them; what versions and requests create later is
  # collected as before.
  gc.freeze()
  with signal_waiter.SignalWaiter() as signals:
    try:
      status = server_lib.serve_until_signal(
          server_lib.ModelServer(_options()), signals)
    except server_config.ServerError as e:
      print(f'Failed to start server. Error: {e}', file=sys.stderr,
            flush=True)
      status = EXIT_START_FAILED
  _exit_process(status)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
