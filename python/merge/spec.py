"""Merge spec: typed objects and TOML loading with validation.

A spec names, for each model, its signature name (which also becomes the
model's name scope in the merged graph), its frozen graph, its input and
output tensor aliases and its method. Format (see DESIGN.md):

  message = "add hyaudio"            # optional
  serving_default = "hyaudio_1"      # optional
  allowed_asset_dirs = ["/data/vocab"]  # optional, relative to the spec file

  [[model]]
  signature_name = "hyaudio_1"
  frozen = "audio/hyaudio.pb"        # relative to the spec file, or absolute / URI
  inputs = { inputs = "hyaudio/vggish_input:0" }
  outputs = { probs = "hyaudio/predict_probs:0" }
  method = "predict"                 # predict | classify | regress

Incremental deploys (see `incremental.py`) start from a published version:

  base = "latest"                    # or a version number, or a version dir
  remove = ["old_model"]             # signatures of the base to drop

and then need no `[[model]]` at all; a `[[model]]` whose name is in the base
replaces that signature, any other adds one.

A spec is data: `load_spec` parses it with `tomllib` and never executes it.
"""

import dataclasses
import difflib
import os
import re
import tomllib
from typing import Any, Mapping, Optional, Union

from python.common import bounded_read
from python.merge import errors

PREDICT = "predict"
CLASSIFY = "classify"
REGRESS = "regress"
METHODS = (PREDICT, CLASSIFY, REGRESS)

# Method name strings stored in the SignatureDef, as TF Serving expects them.
METHOD_NAMES = {
    PREDICT: "tensorflow/serving/predict",
    CLASSIFY: "tensorflow/serving/classify",
    REGRESS: "tensorflow/serving/regress",
}

# Structure TF Serving's classifier / regressor require (classifier.cc,
# regressor.cc): required input aliases and allowed output aliases.
CLASSIFY_INPUT = "inputs"
CLASSIFY_OUTPUTS = ("classes", "scores")
REGRESS_INPUT = "inputs"
REGRESS_OUTPUT = "outputs"

SERVING_DEFAULT = "serving_default"
# Name scope the merger uses for its own nodes (restore ops, init op).
RESERVED_SCOPE = "merge_internal"

_TOP_KEYS = ("message", "serving_default", "base", "remove",
             "allowed_asset_dirs", "model")
# --- incremental deploys (issue 14): `base` and `remove` -------------------
# `base = "latest"` is the newest version of the output base; an int (or a
# string of digits) a version number there; any other string a version
# directory (relative paths are resolved against the spec file).
BASE_LATEST = "latest"
# A spec is a small text file; anything larger is not one.
MAX_SPEC_BYTES = 16 << 20
_MODEL_KEYS = ("signature_name", "frozen", "inputs", "outputs", "method")
_REQUIRED_MODEL_KEYS = ("signature_name", "frozen", "inputs", "outputs")
# A signature name becomes a name scope: it must be one valid node-name
# component (no "/"), as TensorFlow's node-name regex allows.
_SIGNATURE_RE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-]*$")
# "node" or "node:index" with TensorFlow's node-name characters.
_TENSOR_RE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/>]*(:\d+)?$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model of a merge: becomes one signature of the merged SavedModel.

  Attributes:
    signature_name: Signature key and name scope of the model's nodes.
    frozen: Absolute path (str or os.PathLike, stored as str) or
      tf.io.gfile URI of the frozen GraphDef (.pb binary or .pbtxt text).
    inputs: Signature input alias -> tensor name in the frozen graph.
    outputs: Signature output alias -> tensor name in the frozen graph.
    method: "predict", "classify" or "regress".
  """
  signature_name: str
  frozen: str
  inputs: Mapping[str, str]
  outputs: Mapping[str, str]
  method: str = PREDICT

  def __post_init__(self):
    if isinstance(self.frozen, os.PathLike):
      object.__setattr__(self, "frozen", os.fspath(self.frozen))


@dataclasses.dataclass(frozen=True)
class MergeSpec:
  """A whole merge: the models plus optional history message and default.

  Attributes:
    models: The models, in signature order (a list is stored as a tuple).
    message: Recorded in `current_version` for this export.
    serving_default: Signature name also exported as "serving_default".
    source: Path of the spec file it was loaded from (for messages), if any.
    base: Incremental deploy: the version to start from ("latest", a version
      number, or the absolute path / URI of a version directory); its
      signatures are kept unless removed or replaced. None: a full merge.
    remove: Signatures of the base to drop (a list is stored as a tuple).
    allowed_asset_dirs: Directories (absolute paths or URIs) besides the
      spec file's own from which vocabulary files of lookup tables may be
      copied into the bundle. A spec built in Python without `source` may
      read them from the directories of its frozen graphs and these.
  """
  models: tuple[ModelSpec, ...]
  message: Optional[str] = None
  serving_default: Optional[str] = None
  source: Optional[str] = None
  base: Optional[Union[str, int]] = None
  remove: tuple[str, ...] = ()
  allowed_asset_dirs: tuple[str, ...] = ()

  def __post_init__(self):
    if isinstance(self.models, list):
      object.__setattr__(self, "models", tuple(self.models))
    if isinstance(self.remove, list):
      object.__setattr__(self, "remove", tuple(self.remove))
    if isinstance(self.base, os.PathLike):
      object.__setattr__(self, "base", os.fspath(self.base))
    if isinstance(self.allowed_asset_dirs, (list, str)):
      dirs = self.allowed_asset_dirs
      object.__setattr__(self, "allowed_asset_dirs",
                         (dirs,) if isinstance(dirs, str) else tuple(dirs))


def asset_dirs(spec: MergeSpec) -> list[str]:
  """Directories vocabulary files may be read from (see MergeSpec)."""
  if spec.source:
    if is_uri(spec.source):
      own = [spec.source.rsplit("/", 1)[0]]
    else:
      own = [os.path.dirname(os.path.abspath(spec.source))]
  else:
    own = [m.frozen.rsplit("/", 1)[0] if is_uri(m.frozen) else
           os.path.dirname(os.path.abspath(m.frozen)) for m in spec.models]
  return list(dict.fromkeys(own + list(spec.allowed_asset_dirs)))


def is_uri(path: str) -> bool:
  """Returns whether `path` is a URI such as gs://b/x or ram://x."""
  return re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", path) is not None


def closest(name: str, choices, n: int = 5) -> list[str]:
  """Returns up to `n` entries of `choices` that look most like `name`."""
  choices = list(choices)
  found = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
  if not found:
    # Fall back to substring matches on the last name component.
    tail = name.split(":")[0].rsplit("/", 1)[-1].lower()
    found = [c for c in choices if tail and tail in c.lower()][:n]
  return found


def _where(spec_source: Optional[str], index: Optional[int],
           signature: Optional[str] = None, key: Optional[str] = None) -> str:
  """Formats 'spec x.toml, model #2 "name", key "k"' for messages."""
  parts = [f"spec {spec_source}" if spec_source else "spec"]
  if index is not None:
    model = f"model #{index + 1}"
    if signature:
      model += f' "{signature}"'
    parts.append(model)
  if key:
    parts.append(f'key "{key}"')
  return ", ".join(parts)


def _check_alias_map(value: Any, where: str, key: str) -> None:
  if not isinstance(value, Mapping):
    raise errors.SpecError(
        f"{where}: must be a table of alias = \"tensor:0\" entries, e.g. "
        f'{key} = {{ x = "input:0" }}; got {type(value).__name__} {value!r}.')
  if not value:
    raise errors.SpecError(
        f"{where}: is empty; a signature needs at least one {key[:-1]}, e.g. "
        f'{key} = {{ x = "input:0" }}.')
  for alias, tensor in value.items():
    if not isinstance(alias, str) or not alias.strip():
      raise errors.SpecError(f"{where}: alias {alias!r} must be a non-empty "
                             "string.")
    if not isinstance(tensor, str):
      raise errors.SpecError(
          f'{where}: alias "{alias}" must map to a tensor name string such '
          f'as "node:0"; got {type(tensor).__name__} {tensor!r}.')
    if not _TENSOR_RE.match(tensor):
      raise errors.SpecError(
          f'{where}: alias "{alias}" maps to "{tensor}", which is not a '
          'tensor name; expected "node_name:output_index", e.g. '
          '"hyaudio/vggish_input:0".')


def _validate_model(model: ModelSpec, index: int, source: Optional[str],
                    require_absolute: bool) -> None:
  """Checks one model's fields; raises SpecError naming model and key."""
  name = model.signature_name
  if not isinstance(name, str) or not _SIGNATURE_RE.match(name):
    raise errors.SpecError(
        f"{_where(source, index, None, 'signature_name')}: {name!r} is not a "
        "valid signature name; use letters, digits, '_', '-' and '.', "
        "starting with a letter or digit and without '/', e.g. \"hyaudio_1\" "
        "(it becomes the model's name scope).")
  if name == RESERVED_SCOPE:
    raise errors.SpecError(
        f"{_where(source, index, name, 'signature_name')}: \"{name}\" is "
        "reserved for the merger's own nodes; choose another name.")
  if not isinstance(model.frozen, str) or not model.frozen:
    raise errors.SpecError(
        f"{_where(source, index, name, 'frozen')}: must be the path of a "
        f"frozen graph (.pb or .pbtxt); got {model.frozen!r}.")
  if (require_absolute and not os.path.isabs(model.frozen) and
      not is_uri(model.frozen)):
    raise errors.SpecError(
        f"{_where(source, index, name, 'frozen')}: \"{model.frozen}\" must be "
        "an absolute path or a URI; pass os.path.abspath(path).")
  if model.method not in METHODS:
    raise errors.SpecError(
        f"{_where(source, index, name, 'method')}: unknown method "
        f"{model.method!r}; valid methods: {', '.join(METHODS)}.")
  _check_alias_map(model.inputs, _where(source, index, name, "inputs"),
                   "inputs")
  _check_alias_map(model.outputs, _where(source, index, name, "outputs"),
                   "outputs")
  both = sorted(set(model.inputs) & set(model.outputs))
  if both:
    raise errors.SpecError(
        f"{_where(source, index, name, 'outputs')}: alias collision: "
        f"{', '.join(repr(a) for a in both)} used both as input and output "
        "alias; rename one of them.")
  fed = {}
  for alias, tensor in model.inputs.items():
    canonical = tensor if ":" in tensor else tensor + ":0"
    if canonical in fed:
      raise errors.SpecError(
          f"{_where(source, index, name, 'inputs')}: alias collision: "
          f'"{fed[canonical]}" and "{alias}" both feed tensor "{tensor}"; a '
          "tensor can be fed through one alias only.")
    fed[canonical] = alias
  _validate_method_structure(model, _where(source, index, name))


def _validate_method_structure(model: ModelSpec, where: str) -> None:
  """Checks the alias structure TF Serving's Classify/Regress APIs require."""
  if model.method == CLASSIFY:
    if list(model.inputs) != [CLASSIFY_INPUT]:
      raise errors.SpecError(
          f'{where}, key "inputs": method "classify" takes exactly one input '
          f'aliased "{CLASSIFY_INPUT}" (serialized tf.Example strings); got '
          f"{sorted(model.inputs)}. Use method = \"predict\" for other "
          "inputs.")
    extra = sorted(set(model.outputs) - set(CLASSIFY_OUTPUTS))
    if extra:
      raise errors.SpecError(
          f'{where}, key "outputs": method "classify" allows only the '
          f"output aliases {list(CLASSIFY_OUTPUTS)} (at least one); got "
          f"unexpected {extra}.")
  elif model.method == REGRESS:
    if list(model.inputs) != [REGRESS_INPUT]:
      raise errors.SpecError(
          f'{where}, key "inputs": method "regress" takes exactly one input '
          f'aliased "{REGRESS_INPUT}" (serialized tf.Example strings); got '
          f"{sorted(model.inputs)}.")
    if list(model.outputs) != [REGRESS_OUTPUT]:
      raise errors.SpecError(
          f'{where}, key "outputs": method "regress" takes exactly one '
          f'output aliased "{REGRESS_OUTPUT}" (DT_FLOAT); got '
          f"{sorted(model.outputs)}.")


# --- incremental deploys (issue 14) ----------------------------------------
def _validate_incremental(spec: MergeSpec, require_absolute: bool) -> None:
  """Checks `base` and `remove`; their meaning is `incremental.prepare`'s."""
  source = spec.source
  base = spec.base
  if base is not None:
    where = _where(source, None, None, "base")
    if isinstance(base, bool) or not isinstance(base, (str, int)):
      raise errors.SpecError(
          f'{where}: must be "{BASE_LATEST}", a version number or the path '
          f"of a version directory; got {type(base).__name__} {base!r}.")
    if isinstance(base, int) and base < 0:
      raise errors.SpecError(
          f"{where}: version {base} is negative; versions are numbers >= 0.")
    if isinstance(base, str):
      if not base.strip():
        raise errors.SpecError(
            f'{where}: is empty; use base = "{BASE_LATEST}", a version '
            "number or the path of a version directory.")
      if (require_absolute and base != BASE_LATEST and not base.isdigit()
          and not os.path.isabs(base) and not is_uri(base)):
        raise errors.SpecError(
            f'{where}: "{base}" must be "{BASE_LATEST}", a version number, '
            "an absolute path or a URI; pass os.path.abspath(path).")
  remove = spec.remove
  where = _where(source, None, None, "remove")
  if not isinstance(remove, (tuple, list)):
    raise errors.SpecError(
        f'{where}: must be a list of signature names, e.g. remove = '
        f'["old_model"]; got {type(remove).__name__} {remove!r}.')
  seen = set()
  for name in remove:
    if not isinstance(name, str) or not _SIGNATURE_RE.match(name):
      raise errors.SpecError(
          f"{where}: {name!r} is not a signature name.")
    if name in seen:
      raise errors.SpecError(f'{where}: "{name}" is listed twice.')
    seen.add(name)
  models = {m.signature_name for m in spec.models
            if isinstance(m, ModelSpec)}
  both = sorted(seen & models)
  if both:
    raise errors.SpecError(
        f"{where}: {both} also have a [[model]] entry; a [[model]] replaces "
        "a signature of the same name, so drop them from `remove` to "
        "replace them, or drop their [[model]] to remove them.")
  if spec.serving_default is not None and spec.serving_default in seen:
    raise errors.SpecError(
        f'{_where(source, None, None, "serving_default")}: '
        f'"{spec.serving_default}" is also in `remove`; name a signature the '
        "new version keeps.")


def _parse_base(value: Any, source: str, base_dir: Optional[str]) -> Any:
  """The `base` value of a TOML spec, relative paths resolved."""
  if isinstance(value, str) and value.isdigit():
    return int(value)
  if (isinstance(value, str) and value and value != BASE_LATEST and
      base_dir is not None and not os.path.isabs(value) and
      not is_uri(value)):
    return (base_dir.rstrip("/") + "/" + value if is_uri(base_dir) else
            os.path.normpath(os.path.join(base_dir, value)))
  del source
  return value
# --- end incremental deploys -------------------------------------------------


def _validate(spec: MergeSpec, require_absolute: bool) -> None:
  source = spec.source
  _validate_incremental(spec, require_absolute)
  if not isinstance(spec.models, (tuple, list)) or (
      not spec.models and spec.base is None):
    raise errors.SpecError(
        f"{_where(source, None)}: no models; add at least one [[model]] table "
        "with signature_name, frozen, inputs and outputs.")
  seen = {}
  for index, model in enumerate(spec.models):
    if not isinstance(model, ModelSpec):
      raise errors.SpecError(
          f"{_where(source, index)}: expected a ModelSpec, got "
          f"{type(model).__name__}.")
    _validate_model(model, index, source, require_absolute)
    if model.signature_name in seen:
      raise errors.SpecError(
          f"{_where(source, index, model.signature_name, 'signature_name')}: "
          f"duplicate signature name \"{model.signature_name}\" (also model "
          f"#{seen[model.signature_name] + 1}); signature names must be "
          "unique.")
    seen[model.signature_name] = index
  for directory in spec.allowed_asset_dirs:
    if (not isinstance(directory, str) or not directory or
        not (os.path.isabs(directory) or is_uri(directory))):
      raise errors.SpecError(
          f'{_where(source, None, None, "allowed_asset_dirs")}: '
          f"{directory!r} must be a directory path (relative to the spec "
          "file) or URI, e.g. allowed_asset_dirs = [\"vocab\"].")
  if spec.message is not None and not isinstance(spec.message, str):
    raise errors.SpecError(
        f'{_where(source, None, None, "message")}: must be a string; got '
        f"{spec.message!r}.")
  if spec.serving_default is not None:
    if spec.base is not None:
      # Checked against the base's signatures by `incremental.prepare`.
      if not isinstance(spec.serving_default, str):
        raise errors.SpecError(
            f'{_where(source, None, None, "serving_default")}: must be a '
            f"signature name string; got {spec.serving_default!r}.")
    elif spec.serving_default not in seen:
      hint = closest(str(spec.serving_default), seen)
      raise errors.SpecError(
          f'{_where(source, None, None, "serving_default")}: '
          f'"{spec.serving_default}" is not a signature_name of any model; '
          f"valid choices: {sorted(seen)}" +
          (f"; did you mean {hint[0]!r}?" if hint else "."))
    if SERVING_DEFAULT in seen and spec.serving_default != SERVING_DEFAULT:
      raise errors.SpecError(
          f'{_where(source, None, None, "serving_default")}: a model is '
          f'already named "{SERVING_DEFAULT}"; drop serving_default or '
          "rename that model.")


def validate_spec(spec: MergeSpec) -> None:
  """Validates a spec built in Python (frozen paths must be absolute or URIs).

  Args:
    spec: The spec to check.

  Raises:
    SpecError: naming the model and key that is wrong and how to fix it.
  """
  if not isinstance(spec, MergeSpec):
    raise errors.SpecError(
        f"expected a MergeSpec or a spec file path, got {type(spec).__name__}.")
  _validate(spec, require_absolute=True)


def _reject_unknown(table: Mapping[str, Any], allowed, where: str) -> None:
  for key in table:
    if key not in allowed:
      hint = closest(key, allowed, n=1)
      raise errors.SpecError(
          f'{where}: unknown key "{key}"' +
          (f'; did you mean "{hint[0]}"?' if hint else "") +
          f" Valid keys: {', '.join(allowed)}.")


def _read_text(path: str) -> str:
  try:
    data = bounded_read.read_regular_file(path, MAX_SPEC_BYTES)
  except bounded_read.InputFileError as e:
    raise errors.SpecError(
        f"cannot read spec file: {e}; pass --spec=<path to merge.toml>."
    ) from e
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise errors.SpecError(
        f"spec file {path} is not UTF-8 text (byte {e.start}); a spec is a "
        "TOML file, did you pass a .pb?") from e


def parse_spec(text: str, source: str, base_dir: Optional[str]) -> MergeSpec:
  """Parses and validates TOML spec text.

  Args:
    text: The TOML document.
    source: Name of the spec (file path) used in error messages.
    base_dir: Directory relative `frozen` paths are resolved against; None
      leaves relative paths as they are.

  Returns:
    The validated MergeSpec.

  Raises:
    SpecError: on TOML syntax errors, unknown or missing keys, bad values.
  """
  try:
    doc = tomllib.loads(text)
  except tomllib.TOMLDecodeError as e:
    raise errors.SpecError(
        f"spec {source}: invalid TOML: "
        f"{bounded_read.shorten_message(str(e), 300)}") from e
  except RecursionError as e:
    raise errors.SpecError(
        f"spec {source}: invalid TOML: nested too deeply to parse.") from e
  _reject_unknown(doc, _TOP_KEYS, f"spec {source}")
  raw_models = doc.get("model")
  if raw_models is None and "base" in doc:
    raw_models = []  # Incremental deploy: removing only.
  if raw_models is None:
    raise errors.SpecError(
        f'spec {source}: missing key "model"; add at least one [[model]] '
        "table with signature_name, frozen, inputs and outputs.")
  if not isinstance(raw_models, list) or not all(
      isinstance(m, dict) for m in raw_models):
    raise errors.SpecError(
        f'spec {source}: key "model" must be an array of tables written as '
        "[[model]] sections.")
  models = []
  for index, raw in enumerate(raw_models):
    signature = raw.get("signature_name")
    signature = signature if isinstance(signature, str) else None
    _reject_unknown(raw, _MODEL_KEYS, _where(source, index, signature))
    for key in _REQUIRED_MODEL_KEYS:
      if key not in raw:
        raise errors.SpecError(
            f'{_where(source, index, signature)}: missing key "{key}"; every '
            f"[[model]] needs {', '.join(_REQUIRED_MODEL_KEYS)}.")
    for key in ("signature_name", "frozen", "method"):
      if key in raw and not isinstance(raw[key], str):
        raise errors.SpecError(
            f'{_where(source, index, signature, key)}: must be a string; got '
            f"{type(raw[key]).__name__} {raw[key]!r}.")
    frozen = raw["frozen"]
    if (base_dir is not None and frozen and not os.path.isabs(frozen) and
        not is_uri(frozen)):
      frozen = (base_dir.rstrip("/") + "/" + frozen if is_uri(base_dir) else
                os.path.normpath(os.path.join(base_dir, frozen)))
    models.append(
        ModelSpec(
            signature_name=raw["signature_name"],
            frozen=frozen,
            inputs=dict(raw["inputs"]) if isinstance(raw["inputs"], dict) else
            raw["inputs"],
            outputs=dict(raw["outputs"]) if isinstance(raw["outputs"], dict)
            else raw["outputs"],
            method=raw.get("method", PREDICT)))
  raw_dirs = doc.get("allowed_asset_dirs", [])
  if not isinstance(raw_dirs, list) or not all(
      isinstance(d, str) and d for d in raw_dirs):
    raise errors.SpecError(
        f'spec {source}, key "allowed_asset_dirs": must be a list of '
        'directory paths, e.g. allowed_asset_dirs = ["vocab"]; got '
        f"{bounded_read.excerpt(repr(raw_dirs))}.")
  dirs = []
  for directory in raw_dirs:
    if base_dir is not None and not os.path.isabs(directory) and not is_uri(
        directory):
      directory = (base_dir.rstrip("/") + "/" + directory if is_uri(base_dir)
                   else os.path.normpath(os.path.join(base_dir, directory)))
    dirs.append(directory)
  spec = MergeSpec(
      models=tuple(models),
      message=doc.get("message"),
      serving_default=doc.get("serving_default"),
      source=source,
      base=_parse_base(doc.get("base"), source, base_dir),
      remove=(tuple(doc["remove"]) if isinstance(doc.get("remove"), list)
              else doc.get("remove", ())),
      allowed_asset_dirs=tuple(dirs))
  _validate(spec, require_absolute=False)
  return spec


def load_spec(path: str) -> MergeSpec:
  """Loads and validates a TOML spec file.

  Relative `frozen` paths are resolved against the spec file's directory.

  Args:
    path: Local path or tf.io.gfile URI of the spec.

  Returns:
    The validated MergeSpec (with `source` set to `path`).

  Raises:
    SpecError: naming the file, model and key that is wrong.
  """
  if not is_uri(path):
    if not os.path.exists(path):
      raise errors.SpecError(
          f"spec file {path} does not exist (resolved to "
          f"{os.path.abspath(path)}); pass --spec=<path to merge.toml>.")
    if os.path.isdir(path):
      raise errors.SpecError(
          f"spec file {path} is a directory; pass the path of the TOML file.")
    base_dir = os.path.dirname(os.path.abspath(path))
  else:
    base_dir = path.rsplit("/", 1)[0]
  return parse_spec(_read_text(path), path, base_dir)
