"""Reads client inputs from .npy, .npz and .json files (never pickle or eval).

The `--input` flag of //client takes one of:

  alias=FILE.npy            one array for input alias (or feature) `alias`
  alias=FILE.npz            the array named `alias` in the archive (or its
                            only array)
  alias=FILE.json           a JSON (nested) list, or an object holding `alias`
  FILE.npz | FILE.json      every array in the archive / every key of the
                            JSON object, by name
  SIGNATURE:alias=FILE...,  the same, for one signature only
  SIGNATURE:FILE.npz|.json

For predict signatures a name is an input alias; for classify and regress
signatures it is a tf.Example feature name (one Example per row), or
`inputs` with serialized tf.Examples.
"""

import dataclasses
import json
import os
import zipfile
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np

from python.common import cli

SUFFIXES = (".npy", ".npz", ".json")


class InputFileError(Exception):
  """An --input value that cannot be parsed or loaded."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One parsed --input value.

  Attributes:
    text: the flag value as given.
    path: the file.
    name: the input alias / feature name, or None for "every array".
    signature: the signature it is for, or None for every signature that
      takes it.
  """
  text: str
  path: str
  name: Optional[str]
  signature: Optional[str]


@dataclasses.dataclass(frozen=True)
class NamedArray:
  """One loaded input array.

  Attributes:
    name: the input alias / feature name.
    array: the values.
    signature: the signature it is for, or None for any.
    source: where it came from, for messages ("x.npz[images]").
  """
  name: str
  array: np.ndarray
  signature: Optional[str]
  source: str


def _check_suffix(text: str, path: str) -> str:
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in SUFFIXES:
    raise InputFileError(
        f"--input={text}: {path!r} must end in {', '.join(SUFFIXES)} "
        "(pickle files are refused; save arrays with numpy.save/savez or "
        "as JSON)")
  return suffix


def parse_input_flag(text: str) -> InputSpec:
  """Parses one --input value (see the module docstring).

  Raises:
    InputFileError: for a malformed value or an unsupported file type.
  """
  if "=" in text:
    left, path = text.split("=", 1)
    signature, _, name = left.rpartition(":")
    if not name or not path or (":" in left and not signature):
      raise InputFileError(
          f"--input={text}: expected [SIGNATURE:]ALIAS=FILE, e.g. "
          "images=digits.npy or digits:images=digits.npy")
    spec = InputSpec(text=text, path=path, name=name,
                     signature=signature or None)
  else:
    signature, sep, path = text.partition(":")
    if (sep and signature and os.path.splitext(path)[1].lower() in SUFFIXES
        and not os.path.exists(text)):
      spec = InputSpec(text=text, path=path, name=None, signature=signature)
    else:
      spec = InputSpec(text=text, path=text, name=None, signature=None)
  suffix = _check_suffix(text, spec.path)
  if spec.name is None and suffix == ".npy":
    raise InputFileError(
        f"--input={text}: a .npy file holds one unnamed array; name it, "
        f"e.g. --input=ALIAS={text}")
  return spec


def _from_json_value(value, where: str) -> np.ndarray:
  try:
    array = np.array(value)
  except ValueError as e:
    raise InputFileError(f"{where}: not a rectangular array ({e})") from e
  if array.dtype == object:
    raise InputFileError(
        f"{where}: not a rectangular array of numbers, booleans or strings")
  return array


def load_input(spec: InputSpec) -> List[NamedArray]:
  """Loads the arrays an InputSpec names.

  Raises:
    InputFileError: if the file is missing, unreadable, holds pickled
      objects, or lacks the named array (the message lists what it has).
  """
  suffix = _check_suffix(spec.text, spec.path)
  where = f"--input={spec.text}"
  path = cli.user_path(spec.path)
  if not os.path.isfile(path):
    raise InputFileError(f"{where}: no such file {path!r}")
  arrays: Dict[str, np.ndarray]
  try:
    if suffix == ".npy":
      arrays = {spec.name: np.load(path, allow_pickle=False)}
    elif suffix == ".npz":
      with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    else:
      with open(path, encoding="utf-8") as f:
        document = json.load(f)
      if isinstance(document, dict):
        arrays = {key: _from_json_value(value, f"{where}: key {key!r}")
                  for key, value in document.items()}
      elif spec.name is not None:
        arrays = {spec.name: _from_json_value(document, where)}
      else:
        raise InputFileError(
            f"{where}: the JSON document is a list, so it needs a name: "
            f"--input=ALIAS={spec.path} (or make it an object "
            '{"ALIAS": [...]})')
  except InputFileError:
    raise
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise InputFileError(
          f"{where}: {spec.path!r} holds Python objects (pickle), which the "
          "client refuses to load; save numeric or fixed-width string "
          "arrays") from e
    raise InputFileError(f"{where}: cannot read {spec.path!r}: {e}") from e
  except (OSError, zipfile.BadZipFile) as e:
    raise InputFileError(f"{where}: cannot read {spec.path!r}: {e}") from e

  if spec.name is None:
    if not arrays:
      raise InputFileError(f"{where}: {spec.path!r} holds no arrays")
    return [NamedArray(k, v, spec.signature, f"{spec.path}[{k}]")
            for k, v in sorted(arrays.items())]
  if spec.name in arrays:
    array = arrays[spec.name]
  elif len(arrays) == 1 and suffix == ".npz":
    array = next(iter(arrays.values()))
  else:
    raise InputFileError(
        f"{where}: {spec.path!r} has no array {spec.name!r}; it has "
        f"{sorted(arrays)}")
  return [NamedArray(spec.name, array, spec.signature, spec.path)]


def load_inputs(flag_values: Sequence[str]) -> List[NamedArray]:
  """Parses and loads every --input value.

  Raises:
    InputFileError: for the first bad value, or a name given twice for the
      same signature.
  """
  loaded: List[NamedArray] = []
  seen: Dict[tuple, str] = {}
  for text in flag_values:
    for item in load_input(parse_input_flag(text)):
      key = (item.signature, item.name)
      if key in seen:
        raise InputFileError(
            f"--input={text}: {item.name!r} was already given by "
            f"--input={seen[key]}")
      seen[key] = text
      loaded.append(item)
  return loaded


def inputs_for_signature(loaded: Sequence[NamedArray], signature_name: str,
                         accepts: Mapping[str, object],
                         any_name: bool,
                         claimed: Collection[str] = ()
                         ) -> Dict[str, np.ndarray]:
  """Picks the loaded arrays that go to one signature.

  Scoped arrays (SIGNATURE:name) win over unscoped ones of the same name.

  Args:
    loaded: every loaded array.
    signature_name: the signature.
    accepts: the names the signature takes (its input aliases).
    any_name: True when the signature takes any name (tf.Example features).
    claimed: with `any_name`, unscoped names it does not take because a
      predict signature being run has an input of that name.

  Returns:
    name -> array.
  """
  picked: Dict[str, np.ndarray] = {}
  for item in loaded:
    if item.signature is None and (
        item.name in accepts or (any_name and item.name not in claimed)):
      picked.setdefault(item.name, item.array)
  for item in loaded:
    if item.signature == signature_name:
      picked[item.name] = item.array
  return picked
