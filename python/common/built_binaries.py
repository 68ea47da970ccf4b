"""Where tests find the project's built binaries (//cc/verify, //python/merge).

Under `bazel test` a binary listed in the test's `data` is in the runfiles
tree ($TEST_SRCDIR/$TEST_WORKSPACE/<package>/<name>); run by hand from a
checkout, it is the one `bazel build` left in bazel-bin/. An environment
variable may name it too (e.g. $VERIFY_BINARY).
"""

import os
from typing import Optional

WORKSPACE = "tf_serving_merge"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def built_binary(*parts: str, env_var: Optional[str] = None) -> str:
  """The executable `//<parts[:-1]>:<parts[-1]>`, e.g. ("cc", "verify", "verify").

  Raises:
    FileNotFoundError: it is in none of the places, which the message lists.
  """
  candidates = []
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir:
    candidates.append(os.path.join(
        srcdir, os.environ.get("TEST_WORKSPACE", WORKSPACE), *parts))
  if env_var and os.environ.get(env_var):
    candidates.append(os.environ[env_var])
  candidates.append(os.path.join(_REPO_ROOT, "bazel-bin", *parts))
  for path in candidates:
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  raise FileNotFoundError(
      f"{'/'.join(parts)} is not at any of {candidates}; run the test with "
      "`bazel test` (the binary in its data), or build it first.")
