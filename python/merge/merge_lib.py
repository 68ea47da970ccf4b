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
Every failure raises a `MergeError` subclass whose message names the file,
model and key involved; nothing is published then.

The command line is `bazel run //python/merge -- --spec=... --output_base=...`.
"""

import dataclasses
import json
import os
import time
from typing import Any, Optional, Union

from python.merge import bundle_check
from python.merge import bundle_writer
from python.merge import errors
from python.merge import numerics as numerics_lib
from python.merge import publish
from python.merge import spec as spec_lib

# Re-exported so users import merge_lib only.
MergeError = errors.MergeError
SpecError = errors.SpecError
GraphError = errors.GraphError
PublishError = errors.PublishError
VerifyError = errors.VerifyError
ModelSpec = spec_lib.ModelSpec
MergeSpec = spec_lib.MergeSpec
load_spec = spec_lib.load_spec
validate_spec = spec_lib.validate_spec
BundleInfo = bundle_writer.BundleInfo

DEFAULT_EXTERNALIZE_THRESHOLD_BYTES = 1 << 20
# Server env var for bit-identical answers with externalized MatMul/Conv
# weights on oneDNN CPU builds (see python/merge/externalize.py).
ONEDNN_FROZEN_WEIGHTS_ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"


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
    deleted_versions: versions removed because of keep_versions.
    serving_default: the signature also served as `serving_default`, if any.
    bundle: the writer's BundleInfo (signature dtypes and shapes, files...).
    numerics: signature -> `numerics.SignatureNumerics`: the check's
      comparison of the merged answers with each frozen graph's own answers
      on the same synthesized inputs (empty without verify).
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

  def to_json_dict(self) -> dict[str, Any]:
    """Returns the machine-readable summary printed by --format=json."""
    summary = {
        "version": self.version,
        "path": self.path,
        "signatures": list(self.signatures),
        "new_signatures": list(self.new_signatures),
        "bytes": self.bytes,
        "seconds": round(self.seconds, 3),
        "dry_run": self.dry_run,
        "deleted_versions": list(self.deleted_versions),
        "serving_default": self.serving_default,
    }
    if self.bundle is not None:
      summary["signature_defs"] = {
          name: _signature_json(info)
          for name, info in self.bundle.signatures.items()
      }
      summary["files"] = dict(self.bundle.files)
      summary["externalized_weights"] = len(
          self.bundle.externalized_weights)
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
    if self.serving_default:
      lines.append(f"  serving_default: {self.serving_default}")
    if self.deleted_versions:
      lines.append("  deleted old versions: " +
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
      if self.dry_run:
        lines.append("  nothing was written (--dry_run)")
    # numerics: largest difference per signature vs its graph alone.
    for name, value in self.numerics.items():
      lines.append(f"  numerics {name}: {value.to_text()}")
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
    dry_run: bool = False) -> MergeResult:
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
      writing nothing.

  Returns:
    A MergeResult.

  Raises:
    SpecError: the spec is invalid.
    GraphError: a frozen graph is missing, corrupt or lacks a tensor.
    PublishError: the output base is not writable or the version exists.
    VerifyError: the merged bundle does not load or a signature fails.
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
  signatures = tuple(m.signature_name for m in spec.models)
  expected = signatures + ((spec_lib.SERVING_DEFAULT,)
                           if spec.serving_default else ())

  if dry_run:
    info = bundle_writer.plan(
        spec, warmup=warmup,
        externalize_threshold_bytes=externalize_threshold_bytes)
    return _dry_run(spec, info, output_base, version, signatures, start)

  def write(export_dir: str):
    return bundle_writer.write_saved_model(
        spec, export_dir, warmup=warmup,
        externalize_threshold_bytes=externalize_threshold_bytes)

  numerics = {}

  def check(export_dir: str) -> None:
    reference = numerics_lib.Reference.from_spec(spec)
    try:
      checks = bundle_check.check_bundle(
          export_dir, expected_signatures=expected, reference=reference)
    finally:
      reference.close()
    numerics.update((name, checks[name].numerics) for name in expected
                    if checks[name].numerics is not None)

  publication = publish.publish(
      output_base, write, signatures=signatures, version=version,
      message=message, check=check if verify else None,
      keep_versions=keep_versions)
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
      numerics=numerics)


def _resolve_spec(spec: Union[MergeSpec, str, os.PathLike]) -> MergeSpec:
  if isinstance(spec, (str, os.PathLike)):
    return spec_lib.load_spec(os.fspath(spec))
  spec_lib.validate_spec(spec)
  return spec


def _dry_run(spec: MergeSpec, info: BundleInfo, output_base: str,
             version: Optional[int], signatures: tuple[str, ...],
             start: float) -> MergeResult:
  existing = publish.list_versions(output_base)
  if version is None:
    version = existing[-1] + 1 if existing else 1
  elif version in existing:
    raise publish.version_exists_error(output_base, version, existing)
  _, exported = publish.read_history(output_base)
  new = tuple(s for s in signatures if s not in set(exported))
  base = output_base.rstrip("/")
  path = (f"{base}/{version}" if "://" in base else
          os.path.join(os.path.abspath(base), str(version)))
  return MergeResult(
      version=version,
      path=path,
      signatures=signatures,
      new_signatures=new,
      bytes=info.total_bytes,
      seconds=time.monotonic() - start,
      dry_run=True,
      serving_default=spec.serving_default,
      bundle=info)


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
