"""Every flag of tensorflow_model_server, with its name, type and default.

The list follows tensorflow_serving/model_servers/main.cc (and the defaults of
`Server::Options` in server.h). Each flag is in one of three groups:

* implemented: behaves as in TF Serving;
* `IGNORED`: cannot apply on this runtime (TPU, GPU, TFLite, XLA, ALTS,
  profiler, ...); a non-default value is accepted and logs one line saying
  that it is ignored and why;
* this server's own additions (`--host`, `--drain_timeout_seconds`,
  `--model_cache_dir`).

The README's flag table lists every flag with its status.
"""

import os
from typing import List, Tuple

from absl import flags

_CPUS = os.cpu_count() or 1

# --- gRPC -------------------------------------------------------------------
PORT = flags.DEFINE_integer(
    'port', 8500,
    'TCP port to listen on for gRPC API. Disabled if port set to zero (then '
    '--grpc_socket_path must be set).')
GRPC_SOCKET_PATH = flags.DEFINE_string(
    'grpc_socket_path', '',
    'If non-empty, listen to a UNIX socket for gRPC API on the given path. '
    'Can be either relative or absolute path.')
GRPC_CHANNEL_ARGUMENTS = flags.DEFINE_string(
    'grpc_channel_arguments', '',
    'A comma separated list of arguments to be passed to the grpc server. '
    '(e.g. grpc.max_connection_age_ms=2000)')
GRPC_MAX_THREADS = flags.DEFINE_integer(
    'grpc_max_threads', 4 * _CPUS,
    'Max grpc server threads to handle grpc messages.', lower_bound=1)
ENABLE_GRPC_HEALTHCHECK_SERVICE = flags.DEFINE_bool(
    'enable_grpc_healthcheck_service', False,
    'Enable the standard gRPC healthcheck service (grpc.health.v1.Health), '
    'reporting each served model by name as well as the server as a whole.')
SSL_CONFIG_FILE = flags.DEFINE_string(
    'ssl_config_file', '',
    'If non-empty, read an ascii SSLConfig protobuf from the supplied file '
    'name and set up a secure gRPC channel.')
USE_ALTS_CREDENTIALS = flags.DEFINE_bool(
    'use_alts_credentials', False, 'Use Google ALTS credentials.')

# --- HTTP/REST --------------------------------------------------------------
REST_API_PORT = flags.DEFINE_integer(
    'rest_api_port', 0,
    'Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will '
    'not be exported. This port must be different than the one specified in '
    '--port.')
REST_API_NUM_THREADS = flags.DEFINE_integer(
    'rest_api_num_threads', 4 * _CPUS,
    'Number of threads for HTTP/REST API processing. If not set, will be auto '
    'set based on number of CPUs.')
REST_API_TIMEOUT_IN_MS = flags.DEFINE_integer(
    'rest_api_timeout_in_ms', 30000, 'Timeout for HTTP/REST API calls.')
REST_API_ENABLE_CORS_SUPPORT = flags.DEFINE_bool(
    'rest_api_enable_cors_support', False, 'Enable CORS headers in response')
MONITORING_CONFIG_FILE = flags.DEFINE_string(
    'monitoring_config_file', '',
    'If non-empty, read an ascii MonitoringConfig protobuf from the supplied '
    'file name')

# --- batching ---------------------------------------------------------------
ENABLE_BATCHING = flags.DEFINE_bool('enable_batching', False,
                                    'enable batching')
BATCHING_PARAMETERS_FILE = flags.DEFINE_string(
    'batching_parameters_file', '',
    'If non-empty, read an ascii BatchingParameters protobuf from the '
    'supplied file name and use the contained values instead of the '
    'defaults.')
ENABLE_PER_MODEL_BATCHING_PARAMETERS = flags.DEFINE_bool(
    'enable_per_model_batching_parameters', False,
    'Enables model specific batching params read from `batching_params.pbtxt` '
    'in the SavedModel dir. Only applicable with --enable_batching.')

# --- models -----------------------------------------------------------------
MODEL_NAME = flags.DEFINE_string(
    'model_name', 'default',
    'name of model (ignored if --model_config_file flag is set)')
MODEL_BASE_PATH = flags.DEFINE_string(
    'model_base_path', '',
    'path to export (ignored if --model_config_file flag is set, otherwise '
    'required). Must be absolute or a URI.')
MODEL_CONFIG_FILE = flags.DEFINE_string(
    'model_config_file', '',
    'If non-empty, read an ascii ModelServerConfig protobuf from the supplied '
    'file name, and serve the models in that file. (If used, --model_name, '
    '--model_base_path are ignored.)')
MODEL_CONFIG_FILE_POLL_WAIT_SECONDS = flags.DEFINE_integer(
    'model_config_file_poll_wait_seconds', 0,
    'Interval in seconds between each poll of the filesystem for '
    'model_config_file. If unset or set to zero, poll will be done exactly '
    'once and not periodically.')
FILE_SYSTEM_POLL_WAIT_SECONDS = flags.DEFINE_integer(
    'file_system_poll_wait_seconds', 1,
    'Interval in seconds between each poll of the filesystem for new model '
    'version. If set to zero poll will be exactly done once and not '
    'periodically. Setting this to negative value will disable polling '
    'entirely.')
ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS = flags.DEFINE_bool(
    'allow_version_labels_for_unavailable_models', False,
    'If true, allows assigning unused version labels to models that are not '
    'available yet.')
NUM_LOAD_THREADS = flags.DEFINE_integer(
    'num_load_threads', 0,
    'The number of threads in the thread-pool used to load servables. If set '
    'as 0, servable loads are performed serially in the manager\'s main work '
    'loop.', lower_bound=0)
NUM_UNLOAD_THREADS = flags.DEFINE_integer(
    'num_unload_threads', 0,
    'The number of threads in the thread-pool used to unload servables. If '
    'set as 0, unloads are performed serially in the manager\'s main work '
    'loop.', lower_bound=0)
MAX_NUM_LOAD_RETRIES = flags.DEFINE_integer(
    'max_num_load_retries', 5,
    'maximum number of times it retries loading a model after the first '
    'failure, before giving up. If set to 0, a load is attempted only once.',
    lower_bound=0)
LOAD_RETRY_INTERVAL_MICROS = flags.DEFINE_integer(
    'load_retry_interval_micros', 60 * 1000 * 1000,
    'The interval, in microseconds, between each servable load retry. If set '
    'negative, it doesn\'t wait.')
FLUSH_FILESYSTEM_CACHES = flags.DEFINE_bool(
    'flush_filesystem_caches', True,
    'If true (the default), filesystem caches will be flushed after the '
    'initial load of all servables, and after each subsequent individual '
    'servable reload.')
SAVED_MODEL_TAGS = flags.DEFINE_string(
    'saved_model_tags', 'serve',
    'Comma-separated set of tags corresponding to the meta graph def to load '
    'from SavedModel.')
ENABLE_MODEL_WARMUP = flags.DEFINE_bool(
    'enable_model_warmup', True,
    'Enables model warmup, which triggers lazy initializations (such as TF '
    'optimizations) at load time, to reduce first request latency.')
NUM_REQUEST_ITERATIONS_FOR_WARMUP = flags.DEFINE_integer(
    'num_request_iterations_for_warmup', 1,
    'Number of times a request is iterated during warmup replay. This value '
    'is used only if > 0.')
REMOVE_UNUSED_FIELDS_FROM_BUNDLE_METAGRAPH = flags.DEFINE_bool(
    'remove_unused_fields_from_bundle_metagraph', True,
    'Removes unused fields from MetaGraphDef proto message to save memory.')
ENABLE_SIGNATURE_METHOD_NAME_CHECK = flags.DEFINE_bool(
    'enable_signature_method_name_check', False,
    'Enable method_name check for SignatureDef. Disable this if serving '
    'native TF2 regression/classification models.')
ENABLE_SERIALIZATION_AS_TENSOR_CONTENT = flags.DEFINE_bool(
    'enable_serialization_as_tensor_content', False,
    'Enable serialization of predict response as tensor content.')

# --- TensorFlow session -----------------------------------------------------
TENSORFLOW_SESSION_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_session_parallelism', 0,
    'Number of threads to use for running a Tensorflow session. '
    'Auto-configured by default.', lower_bound=0)
TENSORFLOW_SESSION_CONFIG_FILE = flags.DEFINE_string(
    'tensorflow_session_config_file', '',
    'If non-empty, read an ascii TensorFlow Session ConfigProto protobuf from '
    'the supplied file name. Note, parts of the session config (threads, '
    'parallelism etc.) can be overridden if needed, via corresponding command '
    'line flags.')
TENSORFLOW_INTRA_OP_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_intra_op_parallelism', 0,
    'Number of threads to use to parallelize the execution of an individual '
    'op. Auto-configured by default.', lower_bound=0)
TENSORFLOW_INTER_OP_PARALLELISM = flags.DEFINE_integer(
    'tensorflow_inter_op_parallelism', 0,
    'Controls the number of operators that can be executed simultaneously. '
    'Auto-configured by default.', lower_bound=0)
PLATFORM_CONFIG_FILE = flags.DEFINE_string(
    'platform_config_file', '',
    'If non-empty, read an ascii PlatformConfigMap protobuf from the supplied '
    'file name, and use that platform config instead of the Tensorflow '
    'platform.')
THREAD_POOL_FACTORY_CONFIG_FILE = flags.DEFINE_string(
    'thread_pool_factory_config_file', '',
    'If non-empty, read an ascii ThreadPoolConfig protobuf from the supplied '
    'file name.')

# --- hardware and experimental features that cannot apply here --------------
PER_PROCESS_GPU_MEMORY_FRACTION = flags.DEFINE_float(
    'per_process_gpu_memory_fraction', 0.0,
    'Fraction that each process occupies of the GPU memory space.')
PREFER_TFLITE_MODEL = flags.DEFINE_bool(
    'prefer_tflite_model', False,
    'EXPERIMENTAL; Prefer TensorFlow Lite model from `model.tflite`.')
USE_TFLITE_MODEL = flags.DEFINE_bool(
    'use_tflite_model', False,
    'EXPERIMENTAL; older name of --prefer_tflite_model.')
NUM_TFLITE_POOLS = flags.DEFINE_integer(
    'num_tflite_pools', _CPUS,
    'EXPERIMENTAL; Number of TFLite interpreter pools.')
NUM_TFLITE_INTERPRETERS_PER_POOL = flags.DEFINE_integer(
    'num_tflite_interpreters_per_pool', 1,
    'EXPERIMENTAL; Number of TFLite interpreters in an interpreter pool.')
XLA_CPU_COMPILATION_ENABLED = flags.DEFINE_bool(
    'xla_cpu_compilation_enabled', False,
    'EXPERIMENTAL; Enable XLA:CPU JIT (default is disabled).')
XLA_GPU_COMPILATION_ENABLED = flags.DEFINE_bool(
    'xla_gpu_compilation_enabled', False,
    'EXPERIMENTAL; Enable both XLA:CPU JIT and XLA:GPU JIT.')
ENABLE_PROFILER = flags.DEFINE_bool('enable_profiler', True,
                                    'Enable profiler service.')
MIXED_PRECISION = flags.DEFINE_string('mixed_precision', '',
                                      'specify mixed_precision mode')
SKIP_INITIALIZE_TPU = flags.DEFINE_bool(
    'skip_initialize_tpu', False, 'Whether to skip auto initializing TPU.')
VERSION = flags.DEFINE_bool('version', False, 'Display version')

# --- this server's own flags ------------------------------------------------
HOST = flags.DEFINE_string(
    'host', '127.0.0.1',
    'Address to bind the gRPC (and REST) port. TF Serving binds every '
    'interface; this server only when asked (--host=0.0.0.0).')
DRAIN_TIMEOUT_SECONDS = flags.DEFINE_float(
    'drain_timeout_seconds', 30.0,
    'On SIGTERM/SIGINT, how long in-flight requests may take to finish '
    'before they are cancelled. A second signal exits at once.',
    lower_bound=0.0)
MODEL_CACHE_DIR = flags.DEFINE_string(
    'model_cache_dir', '',
    'Where versions of s3:// base paths are downloaded before they are '
    'loaded (deleted again once unloaded). Default: a temporary directory '
    'removed at shutdown. One server per directory.')

# Flags that cannot apply on this runtime: flag -> why a non-default value
# is ignored.
IGNORED: List[Tuple[flags.FlagHolder, str]] = [
    (USE_ALTS_CREDENTIALS, 'ALTS needs Google infrastructure; use '
                           '--ssl_config_file for TLS'),
    (PER_PROCESS_GPU_MEMORY_FRACTION, 'this server runs on the CPU only'),
    (PREFER_TFLITE_MODEL, 'TensorFlow Lite models are not served here; the '
                          'SavedModel is used'),
    (USE_TFLITE_MODEL, 'TensorFlow Lite models are not served here; the '
                       'SavedModel is used'),
    (NUM_TFLITE_POOLS, 'TensorFlow Lite models are not served here'),
    (NUM_TFLITE_INTERPRETERS_PER_POOL, 'TensorFlow Lite models are not served '
                                       'here'),
    (XLA_CPU_COMPILATION_ENABLED, 'XLA JIT is not enabled by this runtime; '
                                  'graphs run with the standard kernels'),
    (XLA_GPU_COMPILATION_ENABLED, 'this server runs on the CPU only'),
    (ENABLE_PROFILER, 'the TensorFlow profiler service is not served here'),
    (MIXED_PRECISION, 'mixed precision rewriting needs a GPU or TPU'),
    (SKIP_INITIALIZE_TPU, 'there is no TPU'),
    (THREAD_POOL_FACTORY_CONFIG_FILE, 'custom thread pool factories are a '
                                      'C++ extension point'),
    (FLUSH_FILESYSTEM_CACHES, 'the Python runtime keeps no file-system cache '
                              'to flush'),
]


def is_default(holder: flags.FlagHolder) -> bool:
  """Whether a flag still has its default value."""
  return holder.value == holder.default


def ignored_notes() -> List[str]:
  """One line per ignored flag set to a non-default value."""
  return [f'--{holder.name}={holder.value} is ignored: {why}.'
          for holder, why in IGNORED if not is_default(holder)]


def parse_channel_arguments(text: str) -> List[Tuple[str, object]]:
  """Parses --grpc_channel_arguments like TF Serving.

  "k1=v1,k2=v2": a value that parses as a 32-bit integer is passed as one,
  any other as a string (gRPC ignores arguments it does not know).

  Args:
    text: The flag value.

  Returns:
    (key, value) pairs in order.

  Raises:
    ValueError: an entry is not `key=value`.
  """
  result = []
  for entry in text.split(','):
    if not entry.strip():
      continue
    key, sep, value = entry.partition('=')
    if not sep or not key.strip():
      raise ValueError(
          f'--grpc_channel_arguments: {entry!r} is not key=value; pass e.g. '
          '--grpc_channel_arguments=grpc.max_connection_age_ms=2000')
    key, value = key.strip(), value.strip()
    try:
      number = int(value)
    except ValueError:
      result.append((key, value))
    else:
      result.append((key, number) if -2**31 <= number < 2**31 else
                    (key, value))
  return result
