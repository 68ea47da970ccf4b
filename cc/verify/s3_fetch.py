"""Downloads an s3:// SavedModel version for //cc/verify.

  s3_fetch --uri=s3://bucket/prefix/3 --dest=/tmp/dir

Run by `verify --export_dir=s3://...` (verify_main.cc), which then verifies
the local copy. Configuration is boto3's (AWS_ENDPOINT_URL, the credential
chain, AWS_REGION). Exit 0 when the version was downloaded, 1 otherwise with
one line on stderr naming the object and the reason.
"""

import os
import sys
from typing import Sequence

from python.common import object_store


def fetch(uri: str, dest: str) -> int:
  """Downloads every object under `uri/` into `dest`; returns the bytes."""
  bucket, key = object_store.split(uri)
  size = object_store.S3Store().download_tree(bucket, key, dest)
  if not any(os.path.isfile(os.path.join(dest, name))
             for name in ("saved_model.pb", "saved_model.pbtxt")):
    raise object_store.ObjectStoreError(
        f"no SavedModel at {uri}: {uri.rstrip('/')}/saved_model.pb does not "
        "exist. Pass a version prefix, e.g. s3://bucket/models/merged/3.")
  return size


def main(argv: Sequence[str]) -> int:
  args = dict(a[2:].split("=", 1) for a in argv[1:]
              if a.startswith("--") and "=" in a)
  if set(args) != {"uri", "dest"} or len(argv) != 3:
    print("s3_fetch: usage: s3_fetch --uri=s3://bucket/prefix/N --dest=DIR",
          file=sys.stderr)
    return 2
  try:
    fetch(args["uri"], args["dest"])
  except object_store.ObjectStoreError as e:
    print(f"verify: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
