"""Where programs find the project's built binaries (//cc/verify, //python/serve).

A binary listed in the `data` of a test, of a binary or of a library they
depend on is in the program's runfiles tree: under `bazel test` at
$TEST_SRCDIR/$TEST_WORKSPACE/<package>/<name>, under `bazel run` (or a binary
started by one) at $RUNFILES_DIR/<workspace>/<package>/<name>, or, when
RUNFILES_DIR is not set, next to this file in the runfiles tree it was run
from. Run by hand from a checkout, it is the one `bazel build`
left in bazel-bin/. An environment variable may name it too (e.g.
$VERIFY_BINARY).

Tests use it for the binaries they run (cc_verify_test, s3_e2e_test ...), and
python/serve/launcher for the project server.
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
  runfiles = os.environ.get("RUNFILES_DIR")
  if runfiles and runfiles != srcdir:
    candidates.append(os.path.join(runfiles, WORKSPACE, *parts))
  # This file's own runfiles tree (Bazel 4's Python stub does not always set
  # RUNFILES_DIR under `bazel run`): <runfiles>/<workspace>/python/common.
  if os.path.basename(os.path.dirname(_REPO_ROOT)).endswith(".runfiles"):
    candidates.append(os.path.join(_REPO_ROOT, *parts))
  if env_var and os.environ.get(env_var):
    candidates.append(os.environ[env_var])
  candidates.append(os.path.join(_REPO_ROOT, "bazel-bin", *parts))
  for path in candidates:
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  target = f"//{'/'.join(parts[:-1])}:{parts[-1]}"
  raise FileNotFoundError(
      f"{target} is not at any of {candidates}; run the program with "
      f"`bazel test` or `bazel run` (the binary in its data), or build it "
      f"first (`bazel build {target}`).")
