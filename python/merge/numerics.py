"""Merged answers vs each input graph's own answers, bit for bit.

The merge's check (`bundle_check.check_bundle(..., reference=...)`) runs
every signature of the staged bundle on synthesized inputs; with a
`Reference` it also runs the signature's frozen graph alone on the same
inputs and compares the two answers:

  reference = numerics.Reference.from_spec(spec)
  checks = bundle_check.check_bundle(export_dir, reference=reference)
  checks["resnet"].numerics.max_abs_diff     # 0.0 when bit-identical

Both sides run as a server runs them: Grappler with default options (a
Session's, TF Serving's), and with `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`
unless the environment sets it (the setting the README prescribes for
servers of merged bundles; see `externalize`). The frozen graph alone is
imported as it is, its table initializers run, and it is fed through a
session callable (no Python-side shape check, like TF Serving's C++).
Only one frozen graph is held at a time.
"""

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from python.merge import errors
from python.merge import externalize
from python.merge import graph_io
from python.merge import signatures as signatures_lib
from python.merge import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class OutputDiff:
  """How one output of the merged bundle differs from the graph alone.

  Attributes:
    identical: same dtype, shape and bytes.
    max_abs_diff: largest |merged - alone| over the elements (numeric
      outputs of equal shape; NaN where both are NaN counts as equal); inf
      when shapes or dtypes differ or a NaN meets a number; for string and
      bool outputs 0.0 or inf.
    mismatched: number of elements whose bytes differ (every element when
      the shapes differ).
  """
  identical: bool
  max_abs_diff: float
  mismatched: int

  def to_json_dict(self) -> dict[str, Any]:
    return {"identical": self.identical,
            "max_abs_diff": _json_float(self.max_abs_diff),
            "mismatched": self.mismatched}


@dataclasses.dataclass(frozen=True)
class SignatureNumerics:
  """The comparison of one signature's outputs.

  Attributes:
    outputs: alias -> OutputDiff.
  """
  outputs: dict

  @property
  def identical(self) -> bool:
    return all(d.identical for d in self.outputs.values())

  @property
  def max_abs_diff(self) -> float:
    return max((d.max_abs_diff for d in self.outputs.values()), default=0.0)

  def to_json_dict(self) -> dict[str, Any]:
    return {"identical": self.identical,
            "max_abs_diff": _json_float(self.max_abs_diff),
            "outputs": {alias: diff.to_json_dict()
                        for alias, diff in sorted(self.outputs.items())}}

  def to_text(self) -> str:
    if self.identical:
      return "bit-identical to its frozen graph alone"
    worst = max(self.outputs, key=lambda a: self.outputs[a].max_abs_diff)
    return (f"differs from its frozen graph alone: max |diff| "
            f"{self.max_abs_diff:.3g} (output {worst}, "
            f"{self.outputs[worst].mismatched} element(s))")


def _json_float(value: float) -> Optional[float]:
  """JSON has no inf: an unbounded difference is null."""
  return None if math.isinf(value) or math.isnan(value) else float(value)


def compare_output(merged: Any, alone: Any) -> OutputDiff:
  """Compares one output's values (arrays or scalars)."""
  merged, alone = np.asarray(merged), np.asarray(alone)
  if merged.shape != alone.shape or merged.dtype != alone.dtype:
    return OutputDiff(identical=False, max_abs_diff=math.inf,
                      mismatched=max(merged.size, alone.size))
  if merged.dtype == object:
    equal = np.array([a == b for a, b in zip(merged.reshape(-1).tolist(),
                                             alone.reshape(-1).tolist())],
                     dtype=bool)
    mismatched = int(equal.size - np.count_nonzero(equal))
    return OutputDiff(identical=mismatched == 0,
                      max_abs_diff=0.0 if mismatched == 0 else math.inf,
                      mismatched=mismatched)
  flat_m = merged.reshape(-1).view(np.uint8).reshape(merged.size, -1)
  flat_a = alone.reshape(-1).view(np.uint8).reshape(alone.size, -1)
  differs = np.any(flat_m != flat_a, axis=1) if merged.size else (
      np.zeros(0, dtype=bool))
  mismatched = int(np.count_nonzero(differs))
  if mismatched == 0:
    return OutputDiff(identical=True, max_abs_diff=0.0, mismatched=0)
  if merged.dtype == bool or not np.issubdtype(merged.dtype, np.number):
    return OutputDiff(identical=False, max_abs_diff=math.inf,
                      mismatched=mismatched)
  m = merged.astype(np.complex128 if np.iscomplexobj(merged)
                    else np.float64)
  a = alone.astype(m.dtype)
  both_nan = np.isnan(m) & np.isnan(a)
  with np.errstate(invalid="ignore"):
    diff = np.where(both_nan, 0.0, np.abs(m - a))
  diff = np.where(np.isnan(diff), math.inf, diff)
  return OutputDiff(identical=False, max_abs_diff=float(np.max(diff)),
                    mismatched=mismatched)


def compare(merged: dict, alone: dict) -> SignatureNumerics:
  """Compares a signature's outputs (alias -> value) with the graph's."""
  return SignatureNumerics(outputs={
      alias: compare_output(merged[alias], alone[alias])
      for alias in sorted(merged)})


def server_config() -> config_pb2.ConfigProto:
  """Session options as a server's: Grappler on, default options."""
  return config_pb2.ConfigProto()


def assume_frozen_weights() -> None:
  """Sets TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 unless the environment has it.

  oneDNN kernels read it when they are created, so this must run before
  the sessions being compared run for the first time.
  """
  os.environ.setdefault(externalize.ONEDNN_FROZEN_WEIGHTS_ENV, "1")


@dataclasses.dataclass(frozen=True)
class _Model:
  frozen: str
  inputs: dict   # alias -> tensor name in the frozen graph
  outputs: dict  # alias -> tensor name in the frozen graph


class _Loaded:
  """One frozen graph imported into a session, tables initialized."""

  def __init__(self, path: str):
    graph_def = graph_io.parse_graph_def(
        graph_io.read_bytes(path, f"frozen graph {path}"), path,
        f"frozen graph {path}")
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name="")
    init_ops = [n.name for n in graph_def.node
                if n.op in signatures_lib.TABLE_INIT_OPS]
    del graph_def
    self.session = tf.compat.v1.Session(graph=self.graph,
                                        config=server_config())
    if init_ops:
      self.session.run([self.graph.get_operation_by_name(n)
                        for n in init_ops])
    self._callables = {}

  def run(self, feeds: dict, fetches: Sequence[str]) -> list:
    """Runs fetches (tensor names) with feeds (tensor name -> value)."""
    key = (tuple(sorted(feeds)), tuple(fetches))
    if key not in self._callables:
      options = config_pb2.CallableOptions(feed=list(key[0]),
                                           fetch=list(fetches))
      self._callables[key] = self.session._make_callable_from_options(  # pylint: disable=protected-access
          options)
    return self._callables[key](*[feeds[name] for name in key[0]])

  def close(self) -> None:
    self.session.close()


class Reference:
  """Each input graph alone, answering the inputs its signature got.

  Args:
    models: signature name -> (frozen path, input alias -> tensor, output
      alias -> tensor) in the frozen graph's own names.
  """

  def __init__(self, models: dict):
    self._models = {name: _Model(*value) for name, value in models.items()}
    self._loaded: Optional[tuple[str, _Loaded]] = None
    assume_frozen_weights()

  @classmethod
  def from_spec(cls, spec: spec_lib.MergeSpec) -> "Reference":
    """The reference for every model of a spec (serving_default included)."""
    models = {m.signature_name: (m.frozen, dict(m.inputs), dict(m.outputs))
              for m in spec.models}
    if spec.serving_default and spec.serving_default in models:
      models.setdefault(spec_lib.SERVING_DEFAULT,
                        models[spec.serving_default])
    return cls(models)

  def __contains__(self, signature: str) -> bool:
    return signature in self._models

  def answers(self, signature: str, feeds: dict) -> dict:
    """The frozen graph's outputs (alias -> value) for input alias -> value.

    Raises:
      errors.VerifyError: the graph alone does not run on these inputs.
    """
    model = self._models[signature]
    if self._loaded is None or self._loaded[0] != model.frozen:
      self.close()
      self._loaded = (model.frozen, _Loaded(model.frozen))
    aliases = sorted(model.outputs)
    try:
      values = self._loaded[1].run(
          {model.inputs[a]: v for a, v in feeds.items()},
          [model.outputs[a] for a in aliases])
    except tf.errors.OpError as e:
      raise errors.VerifyError(
          f'signature "{signature}": its frozen graph {model.frozen} alone '
          f"does not run on the check's inputs: {e.message.splitlines()[0]}"
      ) from e
    return dict(zip(aliases, values))

  def compare(self, signature: str, feeds: dict,
              merged: dict) -> SignatureNumerics:
    """Compares merged outputs with the graph alone on the same feeds."""
    return compare(merged, self.answers(signature, feeds))

  def close(self) -> None:
    if self._loaded is not None:
      self._loaded[1].close()
      self._loaded = None
