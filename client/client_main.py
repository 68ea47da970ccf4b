"""Queries every signature of a model on TensorFlow Serving (or compatible).

Asks the server for the model's signatures (GetModelMetadata), builds inputs
from each signature's dtypes and shapes (or reads them from --input files),
and sends one Predict / Classify / Regress request per signature, printing the
outputs and latency; or, with --requests, load-tests each signature.

Classify and regress signatures get tf.Examples with the features the model
requires: read from the bundle with --model_base_path (warmup records, else
the graph's parse ops), else learned from the server's INVALID_ARGUMENT
answers; the report says where they came from.

Usage:
  bazel run //client -- --server=localhost:8500 --model_name=merged
  bazel run //client -- --server=localhost:8500 --model_name=merged \
      --signature_name=digits --input=images=/tmp/digits_test.npy --format=json
  bazel run //client -- --server=localhost:8500 --model_name=merged \
      --requests=1000 --concurrency=8
  bazel run //client -- --protocol=rest --server=localhost:8501 \
      --model_name=merged

Exit status: 0 when every request succeeded, 1 otherwise, 2 for bad usage.
TensorFlow's INFO logs are off unless --verbose.
"""


# First, before anything imports TensorFlow: its INFO chatter stays off
# unless --verbose (see python/common/quiet.py).
from python.common import quiet  # pylint: disable=unused-import,g-bad-import-order

from absl import app
from absl import flags

from client import client_lib
from client import input_files
from client import run_lib
from python.common import cli

_SERVER = flags.DEFINE_string(
    "server", "localhost:8500",
    "The server's address, host:port: its gRPC port, or with "
    "--protocol=rest its REST port (--rest_api_port, e.g. localhost:8501).")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "grpc", ["grpc", "rest"],
    "grpc: TF Serving's gRPC API. rest: its HTTP/REST API (JSON; same "
    "report, no TLS, and no version in the answers).")
_MODEL_NAME = flags.DEFINE_string(
    "model_name", None, "The model to query (e.g. merged).")
_MODEL_VERSION = flags.DEFINE_integer(
    "model_version", None, "Query this version (default: the latest).",
    lower_bound=0)
_VERSION_LABEL = flags.DEFINE_string(
    "version_label", None, "Query the version with this label.")
_SIGNATURE_NAME = flags.DEFINE_multi_string(
    "signature_name", [], "A signature to call; repeatable. Default: every "
    "signature the server reports.")
_INPUT = flags.DEFINE_multi_string(
    "input", [], "[SIGNATURE:]ALIAS=FILE.npy|.npz|.json, or FILE.npz|.json "
    "for every array in it; repeatable. For classify/regress signatures the "
    "names are tf.Example features. Inputs not given are sampled from the "
    "signature's dtype and shape.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 1, "The size of unknown dimensions of sampled inputs.",
    lower_bound=1)
_REQUESTS = flags.DEFINE_integer(
    "requests", 0, "Load mode: send this many requests per signature and "
    "report throughput and p50/p90/p99 latency (0: one request each).",
    lower_bound=0)
_CONCURRENCY = flags.DEFINE_integer(
    "concurrency", 1, "Load mode: requests in flight.", lower_bound=1)
_TIMEOUT = flags.DEFINE_float(
    "timeout", 10.0, "Deadline of every call, in seconds.")
_WAIT_FOR_SERVER = flags.DEFINE_float(
    "wait_for_server", 0.0, "Seconds to keep retrying while the server is "
    "unreachable (e.g. still starting); 0: fail at once. At most --timeout.",
    lower_bound=0.0)
_FORMAT = flags.DEFINE_enum(
    "format", "text", ["text", "json"], "Report format.")
_MAX_VALUES = flags.DEFINE_integer(
    "max_values", 6, "How many leading values of each output to print.",
    lower_bound=0)
_PROGRESS = flags.DEFINE_boolean(
    "progress", True, "Load mode: draw a progress bar on stderr.")
_TLS = flags.DEFINE_boolean("tls", False, "Connect with TLS.")
_ROOT_CERT = flags.DEFINE_string(
    "root_cert", None, "PEM file of CA certificates to trust (with --tls; "
    "default: the system's).")
_CLIENT_CERT = flags.DEFINE_string(
    "client_cert", None, "PEM certificate chain for mutual TLS (with "
    "--client_key).")
_CLIENT_KEY = flags.DEFINE_string(
    "client_key", None, "PEM private key for mutual TLS (with --client_cert).")
_MODEL_BASE_PATH = flags.DEFINE_string(
    "model_base_path", None, "The model's base path (or a version "
    "directory), if this machine can read it: the tf.Example features of "
    "classify/regress signatures are read from its warmup records, else from "
    "its graph's parse ops. Without it they are learned from the server's "
    "INVALID_ARGUMENT answers.")
_MAX_FEATURE_RETRIES = flags.DEFINE_integer(
    "max_feature_retries", 10, "How many times a classify/regress request "
    "may be resent with the features the server's error named.",
    lower_bound=0)
_MAX_MESSAGE_MB = flags.DEFINE_integer(
    "max_message_mb", 64, "Largest request or response message, in MiB.",
    lower_bound=1)

flags.mark_flag_as_required("model_name")
flags.mark_flags_as_mutual_exclusive(["model_version", "version_label"])
flags.register_validator(
    "timeout", lambda value: value > 0, message="--timeout must be > 0 seconds")
flags.register_multi_flags_validator(
    ["client_cert", "client_key"],
    lambda f: bool(f["client_cert"]) == bool(f["client_key"]),
    message="--client_cert and --client_key go together (mutual TLS)")
flags.register_multi_flags_validator(
    ["protocol", "tls"], lambda f: f["protocol"] == "grpc" or not f["tls"],
    message="--tls needs --protocol=grpc (TF Serving's REST API has no TLS)")
flags.register_multi_flags_validator(
    ["tls", "root_cert", "client_cert"],
    lambda f: f["tls"] or not (f["root_cert"] or f["client_cert"]),
    message="--root_cert/--client_cert/--client_key need --tls")


def _read_pem(flag: flags.FlagHolder) -> bytes | None:
  if not flag.value:
    return None
  path = cli.user_path(flag.value)
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise cli.usage_error(f"--{flag.name}={flag.value}: {e.strerror}") from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(
        f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
  config = run_lib.RunConfig(
      signature_names=_SIGNATURE_NAME.value,
      inputs=_INPUT.value,
      batch_size=_BATCH_SIZE.value,
      requests=_REQUESTS.value,
      concurrency=_CONCURRENCY.value,
      output_format=_FORMAT.value,
      max_values=_MAX_VALUES.value,
      progress=_PROGRESS.value,
      model_base_path=cli.user_path(_MODEL_BASE_PATH.value or ""),
      max_feature_retries=_MAX_FEATURE_RETRIES.value)
  with client_lib.ServingClient(
      _SERVER.value, _MODEL_NAME.value,
      model_version=_MODEL_VERSION.value,
      version_label=_VERSION_LABEL.value,
      timeout_s=_TIMEOUT.value,
      wait_for_server_s=_WAIT_FOR_SERVER.value,
      tls=_TLS.value,
      root_cert=_read_pem(_ROOT_CERT),
      client_cert=_read_pem(_CLIENT_CERT),
      client_key=_read_pem(_CLIENT_KEY),
      max_message_mb=_MAX_MESSAGE_MB.value,
      protocol=_PROTOCOL.value) as client:
    try:
      return run_lib.run(client, config)
    except input_files.InputFileError as e:
      raise app.UsageError(str(e), exitcode=2) from e


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
