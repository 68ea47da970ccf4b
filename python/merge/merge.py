r"""Merges frozen graphs into one SavedModel version for TensorFlow Serving.

  bazel run //python/merge -- --spec=merge.toml --output_base=/models/merged

Writes `<output_base>/<N>/` (one signature per model of the spec) atomically:
staged under a non-numeric name, flushed, checked (every signature runs), then
renamed; updates `current_version` and `exported_models`. Exit codes: 0 ok,
1 the merge failed (message on stderr, nothing published), 2 bad flags.

  --dry_run         validate spec and graphs, print what would be written
                    (for a spec with `base`: added, replaced, removed, kept)
  --format=json     machine-readable summary on stdout

Inputs are untrusted: only regular files up to --max_input_bytes are read,
graphs with ops of python/common/denied_ops.txt are refused unless
--allow_ops names them, each run of the check has a deadline
(--check_timeout_seconds), and vocabulary files come only from the spec's
directory or its `allowed_asset_dirs`. A version that drops signatures of the
newest one needs --allow_removed_signatures; one with the newest version's
content needs --allow_same_content. Once a version is published the exit
status is 0; what could not be tidied afterwards is printed as warnings.

Vocabulary files of lookup tables are copied into `<N>/assets/`. Constants
inside function bodies stay in saved_model.pb (never externalized), and the
outputs of v1 while loops and function calls may be declared with unknown
rank (TensorFlow's shape inference cannot see through them).
"""

# First, before anything imports TensorFlow: its INFO chatter stays off
# unless --verbose (see python/common/quiet.py).
from python.common import quiet  # pylint: disable=unused-import,g-bad-import-order

from typing import Sequence

from absl import app
from absl import flags

from python.common import op_policy
from python.merge import cli
from python.merge import merge_lib

_SPEC = flags.DEFINE_string(
    "spec", None, "Merge spec (TOML): one [[model]] table per signature.")
_OUTPUT_BASE = flags.DEFINE_string(
    "output_base", None,
    "Model base path TensorFlow Serving watches: a local directory or any "
    "tf.io.gfile URI. Versions are published as numbered subdirectories.")
_VERSION = flags.DEFINE_integer(
    "version", None,
    "Version to publish (default: highest numeric subdirectory + 1, or 1). "
    "An existing version is refused, never overwritten.", lower_bound=0)
_MESSAGE = flags.DEFINE_string(
    "message", None,
    "Recorded in current_version (default: the spec's `message`).")
_KEEP_VERSIONS = flags.DEFINE_integer(
    "keep_versions", None,
    "After publishing, delete the oldest versions beyond this many (never "
    "the new one). Default: keep every version.", lower_bound=1)
_EXTERNALIZE_THRESHOLD_BYTES = flags.DEFINE_integer(
    "externalize_threshold_bytes",
    merge_lib.DEFAULT_EXTERNALIZE_THRESHOLD_BYTES,
    "Constants larger than this many bytes are stored as variables under "
    "variables/ so saved_model.pb stays small (and bundles beyond 2 GiB "
    "work); values are stored exactly. On oneDNN CPU builds of TensorFlow "
    "(Serving), a MatMul/Conv whose weights became a variable runs another "
    "kernel than with constant weights, so its answers can differ from the "
    "frozen graph's in the last bits (e.g. 1e-7) unless the server runs "
    "with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 (or TF_ENABLE_ONEDNN_OPTS=0); "
    "the merge warns when this applies. 0 externalizes every constant.",
    lower_bound=0)
_WARMUP = flags.DEFINE_boolean(
    "warmup", True,
    "Write assets.extra/tf_serving_warmup_requests (one request per "
    "signature) for TensorFlow Serving to replay at load.")
_VERIFY = flags.DEFINE_boolean(
    "verify", True,
    "Load the staged bundle and run every signature before publishing.")
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run", False,
    "Validate the spec and the graphs and print what would be written; "
    "write nothing.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json"],
                            "Summary format on stdout.")
_ALLOW_OPS = flags.DEFINE_string(
    "allow_ops", "",
    "Comma-separated ops of python/common/denied_ops.txt (file-system, "
    "printing, process ops) to accept in the input graphs, e.g. "
    "--allow_ops=PrintV2. By default graphs holding them are refused.")
_MAX_INPUT_BYTES = flags.DEFINE_integer(
    "max_input_bytes", merge_lib.DEFAULT_MAX_INPUT_BYTES,
    "Frozen graphs and vocabulary files larger than this are refused "
    "(default 2 GiB, protobuf's limit for a GraphDef).", lower_bound=1)
_CHECK_TIMEOUT_SECONDS = flags.DEFINE_float(
    "check_timeout_seconds", merge_lib.DEFAULT_CHECK_TIMEOUT_SECONDS,
    "Deadline of each run of the pre-publish check (variable restore, init "
    "op, each signature); a run past it fails the merge.", lower_bound=0.001)
_ALLOW_REMOVED_SIGNATURES = flags.DEFINE_boolean(
    "allow_removed_signatures", False,
    "Publish even if the new version lacks signatures the newest version "
    "serves (their clients break once it loads).")
_ALLOW_SAME_CONTENT = flags.DEFINE_boolean(
    "allow_same_content", False,
    "Publish even if the new version's content fingerprint equals the "
    "newest version's (servers reload it for nothing).")
_LOCK_TIMEOUT_SECONDS = flags.DEFINE_float(
    "lock_timeout_seconds", merge_lib.DEFAULT_LOCK_TIMEOUT_SECONDS,
    "How long to wait for another merge into the same --output_base.",
    lower_bound=0)

flags.mark_flags_as_required(["spec", "output_base"])
flags.register_validator("spec", lambda v: v is None or bool(v.strip()),
                         message="--spec must not be empty.")
flags.register_validator("output_base",
                         lambda v: v is None or bool(v.strip()),
                         message="--output_base must not be empty.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.usage_error(
        f"unexpected arguments {list(argv[1:])}; pass everything as flags, "
        "e.g. --spec=merge.toml --output_base=/models/merged.")
  allow_ops = op_policy.parse_allow_ops(_ALLOW_OPS.value)
  unknown = op_policy.unknown_allowed(allow_ops)
  if unknown:
    raise cli.usage_error(
        f"--allow_ops names {', '.join(unknown)}, which python/common/"
        "denied_ops.txt does not list (op names are case-sensitive, e.g. "
        "ReadFile, PrintV2); pass only ops a refusal named.")
  result = cli.run_job(lambda: merge_lib.merge_and_publish(
      cli.user_path(_SPEC.value),
      cli.user_path(_OUTPUT_BASE.value),
      version=_VERSION.value,
      message=_MESSAGE.value,
      verify=_VERIFY.value,
      warmup=_WARMUP.value,
      keep_versions=_KEEP_VERSIONS.value,
      externalize_threshold_bytes=_EXTERNALIZE_THRESHOLD_BYTES.value,
      dry_run=_DRY_RUN.value,
      allow_ops=allow_ops,
      max_input_bytes=_MAX_INPUT_BYTES.value,
      check_timeout_seconds=_CHECK_TIMEOUT_SECONDS.value,
      allow_removed_signatures=_ALLOW_REMOVED_SIGNATURES.value,
      allow_same_content=_ALLOW_SAME_CONTENT.value,
      lock_timeout_seconds=_LOCK_TIMEOUT_SECONDS.value))
  if _FORMAT.value == "json":
    print(merge_lib.to_json(result))
  else:
    print(result.to_text())


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
