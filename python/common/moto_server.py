"""Test helper: moto's S3 server (a real HTTP S3 API) on loopback.

  with moto_server.MotoServer() as s3:
    s3.create_bucket("models")
    env = s3.env()   # AWS_ENDPOINT_URL, fake credentials, region

The server is `python -m moto.server` on 127.0.0.1 and a free port, started
by the test and stopped when the block ends; it fails loudly when it dies or
does not answer within the deadline.
"""

import http.client
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Dict, Optional

_READY_TIMEOUT_S = 60.0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class MotoServer:
  """Runs moto's server mode on 127.0.0.1 for the duration of a test."""

  def __init__(self):
    self.port = _free_port()
    self.endpoint = f"http://127.0.0.1:{self.port}"
    self._proc: Optional[subprocess.Popen] = None
    self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log",
                                            delete=False)

  def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment a client of this server needs."""
    env = dict(os.environ if base is None else base)
    env.update({
        "AWS_ENDPOINT_URL": self.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
      env.pop(name, None)
    return env

  def install_env(self) -> None:
    """Points this process's boto3 clients at the server."""
    os.environ.update(self.env({}))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
      os.environ.pop(name, None)

  def start(self) -> "MotoServer":
    self._proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
         str(self.port)],
        stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
      if self._proc.poll() is not None:
        raise RuntimeError(
            f"moto server exited with {self._proc.returncode}: "
            f"{self.log_tail()}")
      try:
        with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2):
          return self
      except OSError:
        pass
      if time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(
            f"moto server on {self.endpoint} not ready after "
            f"{_READY_TIMEOUT_S}s: {self.log_tail()}")
      time.sleep(0.1)

  def log_tail(self, max_chars: int = 4000) -> str:
    self._log.flush()
    with open(self._log.name, encoding="utf-8", errors="replace") as f:
      return f.read()[-max_chars:]

  def client(self):
    import boto3  # pylint: disable=g-import-not-at-top
    return boto3.client(
        "s3", endpoint_url=self.endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing")

  def create_bucket(self, bucket: str) -> None:
    self.client().create_bucket(Bucket=bucket)

  def keys(self, bucket: str, prefix: str = "") -> list:
    """Every key under `prefix`, sorted."""
    paginator = self.client().get_paginator("list_objects_v2")
    return sorted(item["Key"]
                  for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                  for item in page.get("Contents", ()))

  def stop(self) -> None:
    if self._proc is not None and self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(10)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._proc = None

  def __enter__(self) -> "MotoServer":
    return self.start()

  def __exit__(self, *unused) -> None:
    self.stop()
    os.unlink(self._log.name)


class FaultProxy:
  """An HTTP proxy to moto on loopback that injects faults.

  It answers 500 (InternalError) to the first `failures` requests whose path
  contains `match` (e.g. "partNumber=2": one part of a multipart upload),
  and holds every request for which `delay(method, path, headers)` is true
  for `delay_s` seconds before forwarding it (to widen a window in which a
  test kills a client).
  """

  def __init__(self, target_port: int, match: str = "", failures: int = 0,
               delay=None, delay_s: float = 0.0):
    self.failed = 0
    self.forwarded = 0
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *unused):
        pass

      def _handle(self):
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else b""
        if delay is not None and delay(self.command, self.path,
                                       self.headers):
          time.sleep(delay_s)
        if match and match in self.path and proxy.failed < failures:
          proxy.failed += 1
          payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                     b"InternalError</Code><Message>injected</Message>"
                     b"</Error>")
          self.send_response(500)
          self.send_header("Content-Length", str(len(payload)))
          self.end_headers()
          self.wfile.write(payload)
          return
        proxy.forwarded += 1
        conn = http.client.HTTPConnection("127.0.0.1", target_port,
                                          timeout=60)
        headers = {k: v for k, v in self.headers.items()}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        head = self.command == "HEAD"
        for k, v in response.getheaders():
          if k.lower() in ("transfer-encoding", "connection"):
            continue
          if k.lower() == "content-length" and not head:
            continue
          self.send_header(k, v)
        if not head:
          self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
          self.wfile.write(data)
        conn.close()

      do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
    threading.Thread(target=self._server.serve_forever, daemon=True).start()

  def close(self):
    self._server.shutdown()
    self._server.server_close()
