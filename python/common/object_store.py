"""`s3://bucket/prefix` URIs through boto3, for the merge, the server and the
verifier.

TensorFlow 2.21's `tf.io.gfile` has no `s3` scheme, so every `s3://` path of
the toolkit goes through this module. Configuration is boto3's own:

* endpoint: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`, or the profile's
  `endpoint_url`), e.g. `http://127.0.0.1:9000` for MinIO;
* credentials: the standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
  `AWS_PROFILE` and `~/.aws/credentials`, web identity, instance roles, ...);
* region: `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's `region`.

Every request is retried by botocore (standard mode, `TFSM_S3_MAX_ATTEMPTS`
attempts, default 8); files larger than `TFSM_S3_MULTIPART_MB` (default 64)
go up and down in parts of that size, each part retried on its own, and a
whole transfer that still fails is retried from the start up to 3 times.
Failures raise `ObjectStoreError` naming the object (`s3://bucket/key`) and
the reason.
"""

import dataclasses
import datetime
import email.utils
import os
import threading
import time
from typing import Iterable, Iterator, List, Optional, Tuple

SCHEME = "s3://"
_TRANSFER_ATTEMPTS = 3
_DELETE_BATCH = 1000


class ObjectStoreError(Exception):
  """An object store request failed; the message names the object."""


class PreconditionFailedError(ObjectStoreError):
  """A conditional write lost: the object exists (If-None-Match) or changed
  (If-Match)."""


def is_s3(path: str) -> bool:
  """Returns whether `path` is an `s3://` URI."""
  return isinstance(path, str) and path.startswith(SCHEME)


def split(uri: str) -> Tuple[str, str]:
  """Splits `s3://bucket/a/b/` into ("bucket", "a/b") (no trailing slash).

  Raises:
    ObjectStoreError: not an s3:// URI or no bucket.
  """
  if not is_s3(uri):
    raise ObjectStoreError(f"{uri!r} is not an s3:// URI (s3://bucket/prefix).")
  rest = uri[len(SCHEME):]
  bucket, _, key = rest.partition("/")
  if not bucket:
    raise ObjectStoreError(
        f"{uri!r} names no bucket; write it as s3://bucket/prefix.")
  return bucket, key.strip("/")


def join(*parts: str) -> str:
  """Joins key parts with single slashes."""
  return "/".join(p.strip("/") for p in parts if p.strip("/"))


def uri(bucket: str, key: str) -> str:
  return f"{SCHEME}{bucket}/{key}"


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
  """One listed object."""
  key: str
  size: int
  last_modified: datetime.datetime
  etag: str


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "")
  try:
    return int(value) if value.strip() else default
  except ValueError:
    return default


class S3Store:
  """A thin boto3 S3 client wrapper with the toolkit's error messages."""

  def __init__(self, client=None):
    self._client = client
    self._lock = threading.Lock()

  # --- set-up --------------------------------------------------------------

  @property
  def client(self):
    with self._lock:
      if self._client is None:
        self._client = self._make_client()
      return self._client

  @staticmethod
  def _make_client():
    try:
      import boto3  # pylint: disable=g-import-not-at-top
      from botocore import config as botocore_config  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ObjectStoreError(
          f"s3:// paths need boto3, which is not installed ({e}); run in the "
          "project's environment (./bazelw run ...).") from e
    config = botocore_config.Config(
        retries={"max_attempts": _env_int("TFSM_S3_MAX_ATTEMPTS", 8),
                 "mode": "standard"},
        connect_timeout=10, read_timeout=120,
        max_pool_connections=32)
    try:
      return boto3.session.Session().client("s3", config=config)
    except Exception as e:  # pylint: disable=broad-except
      raise ObjectStoreError(
          f"cannot create an S3 client: {e}. Check AWS_ENDPOINT_URL, "
          "AWS_REGION and the AWS profile.") from e

  def transfer_config(self):
    from boto3.s3 import transfer  # pylint: disable=g-import-not-at-top
    part = max(5, _env_int("TFSM_S3_MULTIPART_MB", 64)) << 20
    return transfer.TransferConfig(multipart_threshold=part,
                                   multipart_chunksize=part,
                                   max_concurrency=4, use_threads=True)

  # --- errors --------------------------------------------------------------

  def _error(self, what: str, bucket: str, key: str,
             e: Exception) -> ObjectStoreError:
    code = _error_code(e)
    reason = _reason(e)
    hint = ""
    if code in ("NoSuchBucket",):
      hint = f" Create the bucket {bucket!r} or fix the URI."
    elif code in ("AccessDenied", "InvalidAccessKeyId",
                  "SignatureDoesNotMatch", "NoCredentials"):
      hint = (" Check the credentials (AWS_ACCESS_KEY_ID/"
              "AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and their permissions.")
    elif code == "EndpointConnectionError":
      hint = " Check AWS_ENDPOINT_URL and that the object store is reachable."
    cls = PreconditionFailedError if code in (
        "PreconditionFailed", "412", "ConditionalRequestConflict",
        "409") else ObjectStoreError
    return cls(f"cannot {what} {uri(bucket, key)}: {reason}.{hint}")

  # --- reading -------------------------------------------------------------

  def list_objects(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Yields every object whose key starts with `prefix`."""
    try:
      paginator = self.client.get_paginator("list_objects_v2")
      for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
          yield ObjectInfo(key=item["Key"], size=int(item["Size"]),
                           last_modified=item["LastModified"],
                           etag=item.get("ETag", ""))
    except ObjectStoreError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise self._error("list", bucket, prefix, e) from e

  def list_children(self, bucket: str, prefix: str) -> List[str]:
    """Returns the names one level below `prefix/` ("dirs" and objects)."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    names = set()
    try:
      paginator = self.client.get_paginator("list_objects_v2")
      for page in paginator.paginate(Bucket=bucket, Prefix=base,
                                     Delimiter="/"):
        for item in page.get("CommonPrefixes", ()):
          names.add(item["Prefix"][len(base):].rstrip("/"))
        for item in page.get("Contents", ()):
          names.add(item["Key"][len(base):])
    except Exception as e:  # pylint: disable=broad-except
      raise self._error("list", bucket, base, e) from e
    names.discard("")
    return sorted(names)

  def server_time(self, bucket: str) -> datetime.datetime:
    """The object store's clock (from a response's Date header)."""
    try:
      response = self.client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except Exception as e:  # pylint: disable=broad-except
      raise self._error("list", bucket, "", e) from e
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(
        "date")
    if date:
      return email.utils.parsedate_to_datetime(date)
    return datetime.datetime.now(datetime.timezone.utc)

  def head(self, bucket: str, key: str) -> Optional[ObjectInfo]:
    """Returns the object's info, or None when it does not exist."""
    try:
      response = self.client.head_object(Bucket=bucket, Key=key)
    except Exception as e:  # pylint: disable=broad-except
      if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
        return None
      raise self._error("read", bucket, key, e) from e
    return ObjectInfo(key=key, size=int(response.get("ContentLength", 0)),
                      last_modified=response.get("LastModified"),
                      etag=response.get("ETag", ""))

  def read(self, bucket: str, key: str) -> Optional[Tuple[bytes, str]]:
    """Returns (content, ETag), or None when the object does not exist."""
    try:
      response = self.client.get_object(Bucket=bucket, Key=key)
      return response["Body"].read(), response.get("ETag", "")
    except Exception as e:  # pylint: disable=broad-except
      if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
        return None
      raise self._error("read", bucket, key, e) from e

  def download_file(self, bucket: str, key: str, path: str) -> None:
    """Downloads one object to `path` (in parts when large, with retries)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._retry_transfer(
        "download", bucket, key,
        lambda: self.client.download_file(bucket, key, path,
                                          Config=self.transfer_config()))

  def download_tree(self, bucket: str, prefix: str, local_dir: str) -> int:
    """Downloads every object under `prefix/` into `local_dir`.

    Returns:
      The number of bytes downloaded.
    """
    base = prefix.strip("/") + "/"
    total = 0
    for info in self.list_objects(bucket, base):
      rel = info.key[len(base):]
      if not rel or rel.endswith("/"):
        continue
      target = os.path.join(local_dir, *rel.split("/"))
      self.download_file(bucket, info.key, target)
      total += info.size
    return total

  # --- writing -------------------------------------------------------------

  def put(self, bucket: str, key: str, data: bytes, *,
          if_none_match: bool = False,
          if_match: Optional[str] = None) -> str:
    """Writes one small object; returns its ETag.

    Args:
      bucket: the bucket.
      key: the object key.
      data: the content.
      if_none_match: only create the object (S3 conditional write
        `If-None-Match: *`); PreconditionFailedError when it exists.
      if_match: only replace the object whose ETag is this (`If-Match`).

    Raises:
      PreconditionFailedError: the condition did not hold.
      ObjectStoreError: the write failed.
    """
    kwargs = {}
    if if_none_match:
      kwargs["IfNoneMatch"] = "*"
    if if_match:
      kwargs["IfMatch"] = if_match
    try:
      response = self.client.put_object(Bucket=bucket, Key=key, Body=data,
                                        **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      raise self._error("write", bucket, key, e) from e
    return response.get("ETag", "")

  def upload_file(self, path: str, bucket: str, key: str) -> None:
    """Uploads one file (multipart above the threshold, with retries)."""
    self._retry_transfer(
        "upload " + path + " to", bucket, key,
        lambda: self.client.upload_file(path, bucket, key,
                                        Config=self.transfer_config()))

  def copy(self, bucket: str, src_key: str, dst_key: str) -> None:
    """Copies an object server-side (multipart copy for large objects)."""
    self._retry_transfer(
        f"copy {uri(bucket, src_key)} to", bucket, dst_key,
        lambda: self.client.copy({"Bucket": bucket, "Key": src_key}, bucket,
                                 dst_key, Config=self.transfer_config()))

  def delete(self, bucket: str, keys: Iterable[str]) -> None:
    """Deletes objects (missing ones are fine), in the order given."""
    keys = list(keys)
    for start in range(0, len(keys), _DELETE_BATCH):
      batch = keys[start:start + _DELETE_BATCH]
      try:
        response = self.client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
      except Exception as e:  # pylint: disable=broad-except
        raise self._error("delete", bucket, batch[0], e) from e
      for error in response.get("Errors", ()):
        raise ObjectStoreError(
            f"cannot delete {uri(bucket, error.get('Key', '?'))}: "
            f"{error.get('Code')}: {error.get('Message')}.")

  def delete_prefix(self, bucket: str, prefix: str,
                    first: Iterable[str] = ()) -> int:
    """Deletes every object under `prefix/`; keys named in `first` (relative
    to the prefix) go first. Returns the number of objects deleted."""
    base = prefix.strip("/") + "/"
    keys = [info.key for info in self.list_objects(bucket, base)]
    first_keys = [base + rel for rel in first if base + rel in keys]
    if first_keys:
      self.delete(bucket, first_keys)
    rest = [k for k in keys if k not in first_keys]
    self.delete(bucket, rest)
    return len(keys)

  def abort_multipart_uploads(self, bucket: str, prefix: str,
                              older_than: datetime.datetime) -> int:
    """Aborts unfinished multipart uploads under `prefix` started before
    `older_than` (a killed upload leaves its parts billed otherwise)."""
    aborted = 0
    try:
      paginator = self.client.get_paginator("list_multipart_uploads")
      for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", ()):
          if upload["Initiated"] < older_than:
            self.client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
    except Exception as e:  # pylint: disable=broad-except
      raise self._error("abort the multipart uploads under", bucket, prefix,
                        e) from e
    return aborted

  def _retry_transfer(self, what: str, bucket: str, key: str, call) -> None:
    for attempt in range(_TRANSFER_ATTEMPTS):
      try:
        call()
        return
      except Exception as e:  # pylint: disable=broad-except
        if attempt + 1 < _TRANSFER_ATTEMPTS and _retryable(e):
          time.sleep(0.5 * (attempt + 1))
          continue
        raise self._error(what, bucket, key, e) from e


def error_code(e: Exception) -> str:
  """The S3 error code (or HTTP status, or exception name) of `e`."""
  return _error_code(e)


def _error_code(e: Exception) -> str:
  response = getattr(e, "response", None)
  if isinstance(response, dict):
    code = response.get("Error", {}).get("Code")
    if code:
      return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status:
      return str(status)
  name = type(e).__name__
  if name == "NoCredentialsError":
    return "NoCredentials"
  if name in ("EndpointConnectionError", "ConnectionClosedError",
              "ConnectTimeoutError", "ReadTimeoutError"):
    return "EndpointConnectionError"
  # s3transfer wraps the client error of a failed part or download.
  cause = e.__cause__ or e.__context__
  if cause is not None and cause is not e:
    return _error_code(cause)
  return name


def _retryable(e: Exception) -> bool:
  code = _error_code(e)
  if code in ("EndpointConnectionError", "SlowDown", "RequestTimeout",
              "InternalError", "ServiceUnavailable", "Throttling"):
    return True
  return code.isdigit() and int(code) >= 500


def _reason(e: Exception) -> str:
  response = getattr(e, "response", None)
  if isinstance(response, dict) and response.get("Error"):
    error = response["Error"]
    return f"{error.get('Code', '?')}: {error.get('Message', '') or e}"
  if type(e).__name__ == "NoCredentialsError":
    return ("no AWS credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
  return f"{type(e).__name__}: {e}"
