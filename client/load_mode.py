"""Load mode: `requests` requests per signature, `concurrency` in flight.

`load()` counts every request once, as a success (with its latency and the
version that answered) or as a failure (by error); `LoadReport` holds the
counts and gives the nearest-rank latency percentiles of python/common/stats,
the one percentile the client shares with the benchmarks.
"""

import collections
import dataclasses
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO

from client import calls
from client import client_lib
from client import input_files
from python.common import stats


@dataclasses.dataclass
class LoadReport:
  """The outcome of a load run against one signature."""
  signature: str
  method: str
  requests: int
  latencies_s: List[float]
  elapsed_s: float
  errors: Dict[str, int]
  versions: Dict[str, int]
  input_error: Optional[str] = None

  @property
  def failed(self) -> int:
    return sum(self.errors.values())

  @property
  def succeeded(self) -> int:
    return len(self.latencies_s)

  @property
  def ok(self) -> bool:
    return self.failed == 0 and self.input_error is None

  @property
  def throughput_rps(self) -> float:
    total = self.succeeded + self.failed
    return total / self.elapsed_s if self.elapsed_s > 0 else 0.0

  def latency_percentile_s(self, p: float) -> float:
    """The p-th percentile of the successful requests' latencies, in s."""
    return stats.percentile(self.latencies_s, p)


class ProgressBar:
  """A thread-safe progress bar on a stream (stderr).

  On a terminal it redraws one line; elsewhere (logs, CI) it prints a line
  at every quarter so the log stays short.
  """

  def __init__(self, label: str, total: int, stream: TextIO = sys.stderr,
               width: int = 30):
    self._label = label
    self._total = max(total, 1)
    self._stream = stream
    self._width = width
    self._done = 0
    self._lock = threading.Lock()
    self._tty = hasattr(stream, "isatty") and stream.isatty()
    self._last_draw = 0.0
    self._last_quarter = -1

  def _line(self) -> str:
    filled = int(self._width * self._done / self._total)
    bar = "#" * filled + "-" * (self._width - filled)
    return f"{self._label} [{bar}] {self._done}/{self._total}"

  def advance(self, n: int = 1) -> None:
    with self._lock:
      self._done += n
      if self._tty:
        now = time.monotonic()
        if now - self._last_draw >= 0.1 or self._done >= self._total:
          self._last_draw = now
          self._stream.write("\r" + self._line())
          self._stream.flush()
      else:
        quarter = 4 * self._done // self._total
        if quarter > self._last_quarter:
          self._last_quarter = quarter
          self._stream.write(self._line() + "\n")
          self._stream.flush()

  def close(self) -> None:
    with self._lock:
      if self._tty:
        self._stream.write("\r" + self._line() + "\n")
        self._stream.flush()


def load(client: client_lib.ServingClient,
         signatures: Sequence[client_lib.Signature],
         loaded: Sequence[input_files.NamedArray],
         batch_size: int,
         requests: int,
         concurrency: int,
         progress_stream: Optional[TextIO] = sys.stderr,
         bundle: calls.Bundle = calls.Bundle()) -> List[LoadReport]:
  """Sends `requests` requests to each signature, `concurrency` at a time.

  Signatures run one after the other over the client's single channel.
  Every request is counted exactly once, as a success or as a failure.

  Args:
    client: the client.
    signatures: the signatures to load.
    loaded: --input arrays.
    batch_size: the size of unknown dimensions of sampled inputs.
    requests: requests per signature (>= 1).
    concurrency: worker threads, each with one request in flight (>= 1).
    progress_stream: where to draw the progress bar (None: no bar).
    bundle: where to learn tf.Example features. The request that got an
      answer with them counts as the first of `requests`; the ones the
      server refused while learning are not counted.

  Returns:
    One LoadReport per signature.

  Raises:
    ValueError: if requests or concurrency is < 1.
  """
  if requests < 1 or concurrency < 1:
    raise ValueError(
        f"requests and concurrency must be >= 1; got {requests}, {concurrency}")
  reports = []
  claimed = calls.predict_input_names(signatures)
  for signature in signatures:
    first = None
    try:
      inputs, info = calls.build_inputs(client, signature, loaded, batch_size,
                                  claimed)
      if signature.takes_examples and not inputs:
        first, inputs = calls.call_signature(client, signature, inputs,
                                            batch_size, bundle, info)
    except client_lib.ClientError as e:
      reports.append(LoadReport(signature.name, signature.method, requests,
                                [], 0.0, {}, {}, input_error=str(e)))
      continue
    lock = threading.Lock()
    next_index = [0]
    latencies: List[float] = []
    errors: Dict[str, int] = collections.Counter()
    versions: Dict[str, int] = collections.Counter()
    if first is not None:
      next_index[0] = 1
      latencies.append(first.latency_s)
      versions[str(first.model_version)] += 1
    bar = (ProgressBar(signature.name, requests, progress_stream)
           if progress_stream is not None else None)
    if bar and first is not None:
      bar.advance()

    def worker():
      while True:
        with lock:
          if next_index[0] >= requests:
            return
          next_index[0] += 1
        start = time.perf_counter()
        try:
          result = client.run(signature.name, inputs, batch_size)
        except client_lib.RpcError as e:
          with lock:
            errors[f"{e.code.name}: {e.details}"] += 1
        except client_lib.ClientError as e:
          with lock:
            errors[f"CLIENT: {e}"] += 1
        else:
          with lock:
            latencies.append(time.perf_counter() - start)
            versions[str(result.model_version)] += 1
        if bar:
          bar.advance()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(concurrency, requests))]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    elapsed = time.perf_counter() - start
    if bar:
      bar.close()
    reports.append(LoadReport(signature.name, signature.method, requests,
                              latencies, elapsed, dict(errors),
                              dict(versions)))
  return reports
