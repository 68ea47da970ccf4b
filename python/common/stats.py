"""The one percentile of the toolkit: nearest rank, as latency SLOs count.

`//client --requests`, the benchmarks and the server's reports all quote
p50/p99 through this function, so their figures compare: the p-th
percentile is the smallest observed value with at least p% of the values at
or below it (no interpolation: every reported latency was observed).
"""

import math
from typing import Sequence


def percentile(values: Sequence[float], p: float) -> float:
  """The nearest-rank p-th percentile (0 < p <= 100) of `values`.

  Raises:
    ValueError: if `values` is empty or p is out of range.
  """
  if not values:
    raise ValueError("percentile of no values")
  if not 0 < p <= 100:
    raise ValueError(f"percentile p must be in (0, 100]; got {p}")
  ordered = sorted(values)
  rank = math.ceil(p / 100 * len(ordered))
  return ordered[max(rank, 1) - 1]
