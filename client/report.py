"""The report of a run: text for people, or one JSON document for scripts.

Both are made from the same CallReports (check mode) and LoadReports (load
mode), so the text and --format=json always say the same thing.
"""

import io
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from client import calls
from client import client_lib
from client import load_mode


def _jsonable(value: Any) -> Any:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", errors="replace")
  if isinstance(value, np.generic):
    return value.item()
  return value


def leading_values(array: np.ndarray, n: int) -> List[Any]:
  """The first `n` values of `array` (flattened), as JSON-able scalars."""
  flat = np.asarray(array).reshape(-1)[:n]
  return [_jsonable(v) for v in flat.tolist()] if flat.dtype != object else [
      _jsonable(v) for v in flat]


def _format_values(array: np.ndarray, n: int) -> str:
  values = leading_values(array, n)
  parts = [f"{v:.4g}" if isinstance(v, float) else repr(v) if isinstance(
      v, str) else str(v) for v in values]
  more = ", ..." if np.asarray(array).size > n else ""
  return "[" + ", ".join(parts) + more + "]"


def _describe(array: np.ndarray) -> str:
  array = np.asarray(array)
  if array.dtype == object or array.dtype.kind in "SU":
    dtype = "string"
  else:
    dtype = str(array.dtype)
  return f"{dtype}[{','.join(str(d) for d in array.shape)}]"


def _version_text(version: Optional[int]) -> str:
  # REST answers do not say which version answered.
  return "?" if version is None else str(version)


def _ms(seconds: float) -> float:
  return round(seconds * 1000, 3)


def to_json(client: client_lib.ServingClient,
            metadata: Optional[client_lib.ModelMetadata],
            reports: Sequence[calls.CallReport],
            load_reports: Sequence[load_mode.LoadReport],
            error: Optional[client_lib.ClientError],
            max_values: int) -> Dict[str, Any]:
  """The JSON document //client --format=json prints."""
  document: Dict[str, Any] = {
      "server": client.server,
      "protocol": client.protocol,
      "model_name": client.model_name,
      "model_version": metadata.version if metadata else None,
      "ok": error is None and all(r.ok for r in reports) and all(
          r.ok for r in load_reports),
      "error": None,
      "signatures": {},
  }
  if error is not None:
    code = (error.code.name if isinstance(error, client_lib.RpcError)
            else "CLIENT")
    document["error"] = {"code": code, "message": str(error)}
  for r in reports:
    entry = {
        "ok": r.ok,
        "method": r.method,
        "model_version": r.result.model_version if r.result else None,
        "latency_ms": _ms(r.result.latency_s) if r.result else None,
        "rpc": r.rpc,
        "inputs": {k: v.to_json() for k, v in r.inputs.items()},
        "outputs": {},
        "error": None if r.ok else {"code": r.error_code, "message": r.error},
    }
    if r.result:
      for alias, array in r.result.outputs.items():
        entry["outputs"][alias] = {
            "dtype": _describe(array).split("[")[0],
            "shape": list(np.asarray(array).shape),
            "values": leading_values(array, max_values),
        }
    document["signatures"][r.signature] = entry
  if load_reports:
    document["load"] = {}
  for r in load_reports:
    latency = {}
    if r.latencies_s:
      latency = {f"p{p}": _ms(r.latency_percentile_s(p))
                 for p in (50, 90, 99)}
      latency["mean"] = _ms(sum(r.latencies_s) / len(r.latencies_s))
      latency["max"] = _ms(max(r.latencies_s))
    document["load"][r.signature] = {
        "ok": r.ok,
        "method": r.method,
        "requests": r.requests,
        "succeeded": r.succeeded,
        "failed": r.failed,
        "errors": r.errors,
        "input_error": r.input_error,
        "model_versions": r.versions,
        "elapsed_s": round(r.elapsed_s, 4),
        "throughput_rps": round(r.throughput_rps, 2),
        "latency_ms": latency,
    }
  return document


def to_text(client: client_lib.ServingClient,
            metadata: Optional[client_lib.ModelMetadata],
            reports: Sequence[calls.CallReport],
            load_reports: Sequence[load_mode.LoadReport],
            error: Optional[client_lib.ClientError],
            max_values: int) -> str:
  """The report //client prints for people."""
  out = io.StringIO()
  if error is not None:
    where = f"model {client.model_name!r} at {client.server}"
    message = str(error)
    if not message.startswith(where):
      message = f"{where}: {message}"
    out.write(f"error: {message}\n")
    return out.getvalue()
  version = metadata.version if metadata.version is not None else "?"
  over = " over REST" if client.protocol == "rest" else ""
  out.write(f"model {metadata.model_name!r} at {client.server}{over}: "
            f"version {version}, {len(metadata.signatures)} signature(s)\n")
  for r in reports:
    method = r.method
    if r.rpc == "Predict" and r.method in ("classify", "regress"):
      method += ", sent as Predict: its input is not tf.Examples"
    if r.ok:
      out.write(f"OK    {r.signature}  ({method})  "
                f"{r.result.latency_s * 1000:.1f} ms  version "
                f"{_version_text(r.result.model_version)}\n")
    else:
      out.write(f"FAIL  {r.signature}  ({method})  {r.error}\n")
    for alias, info in r.inputs.items():
      shape = ",".join(str(d) for d in info.shape)
      described = f"{info.dtype}[{shape}]"
      out.write(f"        in   {alias:<16} {described:<16} {info.source}\n")
    if r.result:
      for alias, array in r.result.outputs.items():
        out.write(f"        out  {alias:<16} {_describe(array):<16} "
                  f"{_format_values(array, max_values)}\n")
  if reports:
    answered = sum(r.ok for r in reports)
    out.write(f"{answered} of {len(reports)} signature(s) answered.\n")
  if load_reports:
    header = (f"{'signature':<20} {'requests':>8} {'failed':>6} "
              f"{'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  "
              "versions\n")
    out.write(header)
    for r in load_reports:
      if r.input_error:
        out.write(f"{r.signature:<20} not run: {r.input_error}\n")
        continue
      if r.latencies_s:
        p = [f"{r.latency_percentile_s(q) * 1000:8.2f}"
             for q in (50, 90, 99)]
      else:
        p = [f"{'-':>8}"] * 3
      versions = ",".join(f"{_version_text(v)}:{n}" for v, n in sorted(
          r.versions.items(), key=lambda item: (item[0] is None, item[0])))
      out.write(f"{r.signature:<20} {r.requests:>8} {r.failed:>6} "
                f"{r.throughput_rps:>9.1f} {' '.join(p)}  {versions}\n")
      for message, count in sorted(r.errors.items()):
        out.write(f"    {count} x {message}\n")
    failed = sum(r.failed for r in load_reports)
    total = sum(r.requests for r in load_reports)
    out.write(f"{total - failed} of {total} request(s) succeeded.\n")
  return out.getvalue()
