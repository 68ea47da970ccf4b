"""Version directory names, as TensorFlow Serving reads them.

The merge (python/merge/publish.py, which numbers new versions) and the
server (python/serve/model_manager.py, which discovers them) share these
rules, so a directory the merge publishes is the version the server loads.
"""

import re
from typing import Iterable, Optional

# What TF Serving's ParseVersionNumber (strings::safe_strto64 in
# file_system_storage_path_source.cc) accepts: optional surrounding
# whitespace, an optional minus sign, decimal digits, within int64.
_VERSION_RE = re.compile(r"^[ \t\n\v\f\r]*(-?[0-9]+)[ \t\n\v\f\r]*$")
MAX_VERSION = (1 << 63) - 1
MIN_VERSION = -(1 << 63)


def parse_version_name(name: str) -> Optional[int]:
  """The version a directory name stands for in TF Serving, or None.

  `12`, `010` (10), ` 7 ` and `-3` are versions; `v1`, `+1`, `1.0` and
  numbers outside int64 are not.
  """
  match = _VERSION_RE.match(name)
  if not match:
    return None
  value = int(match.group(1))
  return value if MIN_VERSION <= value <= MAX_VERSION else None


def next_version(existing: Iterable[int]) -> int:
  """The number a new version takes: the highest existing + 1, or 1."""
  highest = max(existing, default=None)
  return 1 if highest is None else highest + 1
