"""Python API: merge frozen graphs into one SavedModel and publish it.

Users driving merges from their own pipelines need only this module:

  from python.merge import merge_lib

  spec = merge_lib.MergeSpec(models=(
      merge_lib.ModelSpec(
          signature_name="hyaudio_1", frozen="/data/hyaudio.pb",
          inputs={"inputs": "hyaudio/vggish_input:0"},
          outputs={"probs": "hyaudio/predict_probs:0"}),
  ), message="add hyaudio")
  result = merge_lib.merge_and_publish(spec, "/models/merged")
  print(result.version, result.path)

or with a TOML spec file: `merge_lib.merge_and_publish("merge.toml", ...)`.

Incremental deploys start from a published version and change only some
models (the others' frozen graphs are not needed; see incremental.py):

  spec = merge_lib.MergeSpec(models=(new_audio_model,), base="latest",
                             remove=("old_model",))
  result = merge_lib.merge_and_publish(spec, "/models/merged")
  print(result.incremental.kept)
Every failure raises a `MergeError` subclass whose message names the file,
model and key involved; nothing is published then. Once a version is
published the call returns, and what could not be tidied afterwards (history,
old versions) is listed in `result.warnings`.

By default a merge refuses: graphs holding ops of
python/common/denied_ops.txt (`allow_ops`), a version that drops signatures
the newest version serves (`allow_removed_signatures`), and a version whose
content fingerprint equals the newest version's (`allow_same_content`).

The command line is `bazel run //python/merge -- --spec=... --output_base=...`.
"""

import dataclasses
import json
import os
import time
from typing import Any, Optional, Sequence, Union

from python.common import tf_env
from python.merge import bundle_check
from python.merge import bundle_writer
from python.merge import errors
from python.merge import numerics as numerics_lib
from python.merge import incremental
from python.merge import publish
from python.merge import spec as spec_lib

# Re-exported so users import merge_lib only.
MergeError = errors.MergeError
SpecError = errors.SpecError
GraphError = errors.GraphError
PublishError = errors.PublishError
VerifyError = errors.VerifyError
BaseError = incremental.BaseError
CheckTimeoutError = errors.CheckTimeoutError
ModelSpec = spec_lib.ModelSpec
MergeSpec = spec_lib.MergeSpec
load_spec = spec_lib.load_spec
validate_spec = spec_lib.validate_spec
BundleInfo = bundle_writer.BundleInfo

DEFAULT_EXTERNALIZE_THRESHOLD_BYTES = 1 << 20
DEFAULT_MAX_INPUT_BYTES = bundle_writer.DEFAULT_MAX_INPUT_BYTES
DEFAULT_CHECK_TIMEOUT_SECONDS = bundle_check.DEFAULT_TIMEOUT_SECONDS
DEFAULT_LOCK_TIMEOUT_SECONDS = publish.DEFAULT_LOCK_TIMEOUT_SECONDS
# Server env var for bit-identical answers with externalized MatMul/Conv
# weights on oneDNN CPU builds (see python/merge/externalize.py).
ONEDNN_FROZEN_WEIGHTS_ENV = tf_env.ONEDNN_ASSUME_FROZEN_WEIGHTS


@dataclasses.dataclass(frozen=True)
class MergeResult:
  """What a merge published (or, with dry_run, would publish).

  Attributes:
    version: the version number.
    path: the version directory `<output_base>/<version>`.
    signatures: the model signatures of the bundle, in spec order (without
      the `serving_default` alias).
    new_signatures: those absent from the previous `exported_models`.
    bytes: total size of the bundle's files (estimated for a dry run).
    seconds: wall-clock time of the whole merge.
    dry_run: True when nothing was written.
    deleted_versions: versions removed (dry run: to remove) because of
      keep_versions.
    serving_default: the signature also served as `serving_default`, if any.
    bundle: the writer's BundleInfo (signature dtypes and shapes, files...).
    numerics: signature -> `numerics.SignatureNumerics`: the check's
      comparison of the merged answers with each frozen graph's own answers
      on the same synthesized inputs (empty without verify).
    removed_signatures: signatures of the previous `exported_models` this
      version does not serve.
    warnings: what the run could not do after publishing (or, for a dry
      run, what publishing would refuse), one sentence each.
    fingerprint: the content fingerprint (see bundle_writer).
  """
  version: int
  path: str
  signatures: tuple[str, ...]
  new_signatures: tuple[str, ...]
  bytes: int
  seconds: float
  dry_run: bool
  deleted_versions: tuple[int, ...] = ()
  serving_default: Optional[str] = None
  bundle: Optional[Any] = dataclasses.field(default=None, repr=False)
  numerics: dict = dataclasses.field(default_factory=dict, repr=False)
  # Incremental deploys (spec `base`): what was added, replaced, removed and
  # kept, and from which base version.
  incremental: Optional[Any] = None
  removed_signatures: tuple[str, ...] = ()
  warnings: tuple[str, ...] = ()
  fingerprint: str = ""

  def to_json_dict(self) -> dict[str, Any]:
    """Returns the machine-readable summary printed by --format=json."""
    summary = {
        "version": self.version,
        "path": self.path,
        "signatures": list(self.signatures),
        "new_signatures": list(self.new_signatures),
        "removed_signatures": list(self.removed_signatures),
        "warnings": list(self.warnings),
        "fingerprint": self.fingerprint,
        "bytes": self.bytes,
        "seconds": round(self.seconds, 3),
        "dry_run": self.dry_run,
        "deleted_versions": list(self.deleted_versions),
        "serving_default": self.serving_default,
    }
    if self.incremental is not None:
      summary["incremental"] = self.incremental.to_json_dict()
    if self.bundle is not None:
      summary["signature_defs"] = {
          name: _signature_json(info)
          for name, info in self.bundle.signatures.items()
      }
      summary["files"] = dict(self.bundle.files)
      summary["externalized_weights"] = len(
          self.bundle.externalized_weights)
      # Function-body constants above the threshold left in saved_model.pb.
      summary["function_constants_inline"] = list(
          self.bundle.function_inline)
    # numerics: largest difference per signature vs its graph alone.
    if self.numerics:
      summary["numerics"] = {name: value.to_json_dict()
                             for name, value in self.numerics.items()}
    return summary

  def to_text(self) -> str:
    """Returns the short human summary printed by --format=text."""
    verb = "Would publish" if self.dry_run else "Published"
    lines = [
        f"{verb} version {self.version} at {self.path} "
        f"({_human_bytes(self.bytes)}{', estimated' if self.dry_run else ''}"
        f", {self.seconds:.1f} s)",
        f"  signatures: {', '.join(self.signatures)}",
        "  new in this version: " +
        (", ".join(self.new_signatures) or "(none)"),
    ]
    if self.removed_signatures:
      lines.append("  removed in this version: " +
                   ", ".join(self.removed_signatures))
    if self.serving_default:
      lines.append(f"  serving_default: {self.serving_default}")
    if self.incremental is not None:
      lines += self.incremental.text_lines()
    if self.deleted_versions:
      lines.append(("  would delete old versions: " if self.dry_run else
                    "  deleted old versions: ") +
                   ", ".join(map(str, self.deleted_versions)))
    if self.bundle is not None:
      for name, info in self.bundle.signatures.items():
        lines.append(f"  {name} [{info.method}]: " + _io_text(info))
      if self.bundle.externalized_weights:
        lines.append(
            f"  note: {len(self.bundle.externalized_weights)} MatMul/Conv "
            "weight(s) moved to variables/; for answers bit-identical to "
            "the frozen graphs on oneDNN CPU builds, run the server with "
            f"{ONEDNN_FROZEN_WEIGHTS_ENV}=1")
      if self.bundle.function_inline:
        lines.append(
            f"  note: {len(self.bundle.function_inline)} constant(s) above "
            "--externalize_threshold_bytes stay inside function bodies "
            "(a call of their function cannot be rewritten): " +
            "; ".join(self.bundle.function_inline[:3]) +
            ("; ..." if len(self.bundle.function_inline) > 3 else ""))
      if self.dry_run:
        lines.append("  nothing was written (--dry_run)")
    # numerics: largest difference per signature vs its graph alone.
    for name, value in self.numerics.items():
      lines.append(f"  numerics {name}: {value.to_text()}")
    lines.extend(f"  warning: {w}" for w in self.warnings)
    return "\n".join(lines)


def merge_and_publish(
    spec: Union[MergeSpec, str, os.PathLike],
    output_base: str,
    *,
    version: Optional[int] = None,
    message: Optional[str] = None,
    verify: bool = True,
    warmup: bool = True,
    keep_versions: Optional[int] = None,
    externalize_threshold_bytes: int = DEFAULT_EXTERNALIZE_THRESHOLD_BYTES,
    dry_run: bool = False,
    allow_ops: Sequence[str] = (),
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
    allow_removed_signatures: bool = False,
    allow_same_content: bool = False,
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
) -> MergeResult:
  """Merges the spec's frozen graphs and publishes `<output_base>/<N>`.

  Args:
    spec: a MergeSpec, or the path of a TOML spec file.
    output_base: the model base path TF Serving watches (local path or
      `tf.io.gfile` URI); created if missing.
    version: the version to publish; default highest numeric version + 1
      (1 for an empty or missing base). An existing version is refused.
    message: recorded in `current_version`; default the spec's `message`.
    verify: load the staged bundle and run every signature before
      publishing.
    warmup: write `assets.extra/tf_serving_warmup_requests`.
    keep_versions: keep only this many newest versions (never deleting the
      new one).
    externalize_threshold_bytes: constants larger than this become variables
      stored under `variables/`. Values are stored exactly, but on oneDNN
      CPU builds a MatMul/Conv whose weights became a variable runs another
      kernel, whose results can differ from the frozen graph's in the last
      bits unless the server runs with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1;
      `result.bundle.externalized_weights` lists such weights.
    dry_run: validate the spec and graphs and report what would be written,
      writing nothing (what publishing would refuse is in `warnings`).
    allow_ops: ops of python/common/denied_ops.txt to accept anyway.
    max_input_bytes: frozen graphs and vocabulary files larger than this are
      refused.
    check_timeout_seconds: deadline of each run of the bundle check.
    allow_removed_signatures: publish a version that lacks signatures of
      the previous one.
    allow_same_content: publish a version whose content fingerprint equals
      the newest version's.
    lock_timeout_seconds: how long to wait for another merge into the base.

  Returns:
    A MergeResult.

  Raises:
    SpecError: the spec is invalid.
    GraphError: a frozen graph is missing, not a regular file, too large,
      corrupt, holds denied ops or lacks a tensor.
    PublishError: the output base is not writable, the version exists, it
      would remove signatures or republish the same content.
    VerifyError: the merged bundle does not load or a signature fails
      (CheckTimeoutError: a run passed its deadline).
  """
  start = time.monotonic()
  spec = _resolve_spec(spec)
  publish.validate_version(version)
  publish.validate_keep_versions(keep_versions)
  if (isinstance(externalize_threshold_bytes, bool) or
      not isinstance(externalize_threshold_bytes, int) or
      externalize_threshold_bytes < 0):
    raise errors.MergeError(
        f"externalize_threshold_bytes={externalize_threshold_bytes!r} must be "
        "a non-negative integer (bytes); the default is "
        f"{DEFAULT_EXTERNALIZE_THRESHOLD_BYTES}.")
  if message is None:
    message = spec.message
  allow_ops = tuple(allow_ops)
  if spec.base is not None:  # Incremental deploy (python/merge/incremental).
    return _merge_incremental(
        spec, output_base, start, version=version, message=message,
        verify=verify, warmup=warmup, keep_versions=keep_versions,
        externalize_threshold_bytes=externalize_threshold_bytes,
        dry_run=dry_run, allow_ops=allow_ops, max_input_bytes=max_input_bytes,
        check_timeout_seconds=check_timeout_seconds,
        allow_removed_signatures=allow_removed_signatures,
        allow_same_content=allow_same_content,
        lock_timeout_seconds=lock_timeout_seconds)
  signatures = tuple(m.signature_name for m in spec.models)
  expected = signatures + ((spec_lib.SERVING_DEFAULT,)
                           if spec.serving_default else ())
  options = dict(warmup=warmup,
                 externalize_threshold_bytes=externalize_threshold_bytes,
                 max_input_bytes=max_input_bytes, allow_ops=allow_ops)

  if dry_run:
    info = bundle_writer.plan(spec, **options)
    return _dry_run(spec, info, start, publish.plan(
        output_base, signatures, version, keep_versions=keep_versions,
        allow_removed_signatures=allow_removed_signatures),
                    allow_same_content)

  previous, previous_version = incremental.newest_manifest(output_base)

  def write(export_dir: str):
    info = bundle_writer.write_saved_model(spec, export_dir, **options)
    incremental.add_manifest(export_dir, info, incremental.build_manifest(
        spec, info, previous=previous, previous_version=previous_version,
        version=_staged_version(export_dir),
        new_manifest=incremental.new_info_manifest(info)))
    return info

  def check_written(info: BundleInfo, newest: Optional[str]) -> None:
    if not allow_same_content:
      _refuse_same_content(info, newest)

  numerics = {}

  def check(export_dir: str) -> None:
    _check(export_dir, spec, spec, expected, check_timeout_seconds, allow_ops,
           numerics)

  publication = publish.publish(
      output_base, write, signatures=signatures, version=version,
      message=message, check=check if verify else None,
      keep_versions=keep_versions,
      allow_removed_signatures=allow_removed_signatures,
      check_written=check_written, lock_timeout_seconds=lock_timeout_seconds)
  info = publication.written
  return MergeResult(
      version=publication.version,
      path=publication.path,
      signatures=signatures,
      new_signatures=publication.new_signatures,
      bytes=info.total_bytes,
      seconds=time.monotonic() - start,
      dry_run=False,
      deleted_versions=publication.deleted_versions,
      serving_default=spec.serving_default,
      bundle=info,
      removed_signatures=publication.removed_signatures,
      warnings=publication.warnings,
      fingerprint=info.fingerprint,
      numerics=numerics)


def _check(export_dir: str, spec: MergeSpec, graphs: Optional[MergeSpec],
           expected: tuple[str, ...], timeout_seconds: float,
           allow_ops: tuple[str, ...], numerics: dict) -> None:
  """The merge's check of a staged bundle, with the numerics of `graphs`.

  `graphs` holds the models whose frozen graphs are compared with the
  merged answers (None: no comparison); the report goes into `numerics`.
  """
  reference = (numerics_lib.Reference.from_spec(graphs)
               if graphs is not None else None)
  try:
    checks = bundle_check.check_bundle(
        export_dir, expected_signatures=expected, reference=reference,
        timeout_seconds=timeout_seconds, allow_ops=allow_ops,
        name=f"the merged bundle of {_spec_name(spec)} (staged, not "
        "published)")
  finally:
    if reference is not None:
      reference.close()
  numerics.update((name, checks[name].numerics) for name in expected
                  if checks[name].numerics is not None)


def _spec_name(spec: MergeSpec) -> str:
  return f"spec {spec.source}" if spec.source else "the spec"


def _same_content_version(info: BundleInfo,
                          newest: Optional[str]) -> Optional[str]:
  """The newest version's name if its fingerprint equals `info`'s."""
  if newest is None:
    return None
  manifest = bundle_writer.read_manifest(newest)
  if manifest and manifest.get("fingerprint") == info.fingerprint:
    return newest.rstrip("/").rsplit("/", 1)[-1]
  return None


def same_content_error(version: str, fingerprint: str) -> PublishError:
  """The error for republishing the newest version's content."""
  return PublishError(
      f"the new version would have the same content as the newest version "
      f"{version} (content fingerprint {fingerprint[:16]}: the same graphs, "
      "signatures, vocabularies and options), so every server would reload "
      "it for nothing; nothing was published. Change the spec, or pass "
      "--allow_same_content to publish it anyway.")


def _refuse_same_content(info: BundleInfo, newest: Optional[str]) -> None:
  same = _same_content_version(info, newest)
  if same is not None:
    raise same_content_error(same, info.fingerprint)


def _staged_version(export_dir: str) -> Optional[int]:
  """The version a staging directory (`.staging-<N>-...`) is written for."""
  name = export_dir.rstrip("/").rsplit("/", 1)[-1]
  number = name[len(".staging-"):].split("-", 1)[0]
  return int(number) if number.isdigit() else None


def _merge_incremental(spec: MergeSpec, output_base: str, start: float, *,
                       version, message, verify, warmup, keep_versions,
                       externalize_threshold_bytes, dry_run, allow_ops,
                       max_input_bytes, check_timeout_seconds,
                       allow_removed_signatures, allow_same_content,
                       lock_timeout_seconds) -> MergeResult:
  """merge_and_publish for a spec with `base` (see incremental.py).

  The hardening of a full merge applies to the new models (`allow_ops`,
  `max_input_bytes`), to the check (`check_timeout_seconds`) and to the
  publish. Signatures the spec's `remove` names may disappear; any other
  signature the newest version serves and this one would not is refused
  unless `allow_removed_signatures` (e.g. a base older than the newest).
  """
  plan = incremental.prepare(spec, output_base)  # Refuses a bad base first.
  signatures = plan.signatures
  expected = signatures + ((spec_lib.SERVING_DEFAULT,)
                           if plan.serving_default else ())
  options = dict(warmup=warmup,
                 externalize_threshold_bytes=externalize_threshold_bytes,
                 max_input_bytes=max_input_bytes, allow_ops=allow_ops)
  if dry_run:
    info = incremental.plan_bundle(plan, **options)
    result = _dry_run(spec, info, start, publish.plan(
        output_base, signatures, version, keep_versions=keep_versions,
        allow_removed_signatures=allow_removed_signatures,
        removable=spec.remove),
                      # Its fingerprint comes from the manifest written with
                      # the bundle: the same-content refusal cannot be
                      # foreseen.
                      allow_same_content=True)
    return dataclasses.replace(result, serving_default=plan.serving_default,
                               incremental=plan)

  def write(export_dir: str):
    return incremental.write_bundle(plan, export_dir,
                                    version=_staged_version(export_dir),
                                    **options)

  def check_written(info: BundleInfo, newest: Optional[str]) -> None:
    if not allow_same_content:
      _refuse_same_content(info, newest)

  numerics = {}

  def check(export_dir: str) -> None:
    # Kept signatures have no frozen graph here: only new ones are compared.
    _check(export_dir, spec, plan.new_spec, expected, check_timeout_seconds,
           allow_ops, numerics)

  publication = publish.publish(
      output_base, write, signatures=signatures, version=version,
      message=message, check=check if verify else None,
      keep_versions=keep_versions,
      allow_removed_signatures=allow_removed_signatures,
      removable=spec.remove, check_written=check_written,
      lock_timeout_seconds=lock_timeout_seconds)
  info = publication.written
  return MergeResult(
      version=publication.version, path=publication.path,
      signatures=signatures, new_signatures=publication.new_signatures,
      bytes=info.total_bytes, seconds=time.monotonic() - start,
      dry_run=False, deleted_versions=publication.deleted_versions,
      serving_default=plan.serving_default, bundle=info, incremental=plan,
      removed_signatures=publication.removed_signatures,
      warnings=publication.warnings, fingerprint=info.fingerprint,
      numerics=numerics)


def _resolve_spec(spec: Union[MergeSpec, str, os.PathLike]) -> MergeSpec:
  if isinstance(spec, (str, os.PathLike)):
    return spec_lib.load_spec(os.fspath(spec))
  spec_lib.validate_spec(spec)
  return spec


def _dry_run(spec: MergeSpec, info: BundleInfo, start: float,
             plan: publish.Plan,
             allow_same_content: bool) -> MergeResult:
  """The result a run would return, from publish's plan of it.

  What publishing would refuse becomes a warning: the plan's refusals, and
  the same-content refusal the run's `check_written` makes (against the
  same `plan.newest`).
  """
  warnings = [str(refusal) for refusal in plan.refusals]
  if not allow_same_content:
    same = _same_content_version(info, plan.newest)
    if same is not None:
      warnings.append(str(same_content_error(same, info.fingerprint)))
  return MergeResult(
      version=plan.version,
      path=plan.path,
      signatures=plan.signatures,
      new_signatures=plan.new_signatures,
      bytes=info.total_bytes,
      seconds=time.monotonic() - start,
      dry_run=True,
      deleted_versions=plan.retired_versions,
      serving_default=spec.serving_default,
      bundle=info,
      removed_signatures=plan.removed_signatures,
      warnings=tuple(warnings),
      fingerprint=info.fingerprint)


def _signature_json(info) -> dict[str, Any]:
  return {
      "method": info.method,
      "inputs": {
          alias: {"dtype": dtype, "shape": _shape(shape)}
          for alias, (dtype, shape) in info.inputs.items()
      },
      "outputs": {
          alias: {"dtype": dtype, "shape": _shape(shape)}
          for alias, (dtype, shape) in info.outputs.items()
      },
  }


def _shape(shape) -> Optional[list[int]]:
  return None if shape is None else list(shape)


def _io_text(info) -> str:
  def fmt(tensors):
    return ", ".join(
        f"{alias} {dtype}"
        f"{'<unknown rank>' if shape is None else list(shape)}"
        for alias, (dtype, shape) in tensors.items())
  return f"({fmt(info.inputs)}) -> ({fmt(info.outputs)})"


def _human_bytes(n: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} GiB"


def to_json(result: MergeResult) -> str:
  """Serializes a result's summary as one JSON document."""
  return json.dumps(result.to_json_dict(), indent=2, sort_keys=True)
