"""Starts a TF-Serving-compatible model server for demos and tests.

Picks the real `tensorflow_model_server` when the environment variable
TENSORFLOW_MODEL_SERVER names one (a path or a command on PATH) or when one is
on PATH; otherwise this project's server, the `//python/serve:serve` binary.
Both get the same flags.

The project server is found as a built binary (python/common/built_binaries):
in the runfiles of the program using the launcher, which carries `:serve` in
its `data`, so any `py_binary` or `py_test` depending on
`//python/serve:launcher` run by `bazel run` / `bazel test` has it; run from a
plain checkout, the one `bazel build //python/serve:serve` left in bazel-bin/.
There is no `python -m python.serve.serve` fallback: every user of the
launcher (tests, the demo, benchmarks) runs under Bazel, and a clear
LauncherError says how to get the binary when it is missing.

  from python.serve import launcher

  with launcher.ServerProcess(model_name='m', model_base_path='/abs/m') as srv:
    channel = grpc.insecure_channel(srv.address)  # "127.0.0.1:PORT"

The context manager picks a free port, waits until the server answers
GetModelStatus for every model with an AVAILABLE version, and fails loudly
(with the server's log tail) when the process dies or the deadline passes.
On exit it sends SIGTERM and waits for a clean shutdown.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from python.common import built_binaries
from python.common import tf_env

ENV_VAR = 'TENSORFLOW_MODEL_SERVER'
REAL_SERVER = 'tensorflow_model_server'
# Set (unless already set) for whichever server is started: merged bundles keep
# large weights in variables/, and without it oneDNN runs their MatMul/Conv
# through a kernel whose answers can differ from the frozen graph's in the last
# bits (see python/merge/externalize.py).
ONEDNN_FROZEN_WEIGHTS_ENV = tf_env.ONEDNN_ASSUME_FROZEN_WEIGHTS
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
# The project server: //python/serve:serve.
_SERVE_BINARY = ('python', 'serve', 'serve')


class LauncherError(RuntimeError):
  """The server could not be started, died, or did not become ready."""


def free_port(host: str = '127.0.0.1') -> int:
  """Returns a TCP port that is free on `host` right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def find_real_server() -> Optional[str]:
  """Returns the real tensorflow_model_server to use, or None.

  Raises:
    LauncherError: $TENSORFLOW_MODEL_SERVER is set but names nothing
      executable.
  """
  named = os.environ.get(ENV_VAR)
  if named:
    found = shutil.which(named)
    if not found:
      raise LauncherError(
          f'${ENV_VAR}={named!r} is not an executable file or a command on '
          'PATH. Unset it to use the project server, or point it at '
          f'{REAL_SERVER}.')
    return found
  return shutil.which(REAL_SERVER)


def project_server_binary() -> str:
  """The path of the project server, the `//python/serve:serve` binary.

  Raises:
    LauncherError: it is neither in this program's runfiles nor in bazel-bin/.
  """
  try:
    return built_binaries.built_binary(*_SERVE_BINARY)
  except FileNotFoundError as e:
    raise LauncherError(
        f'Cannot start the project server: {e} The launcher runs '
        '//python/serve:serve, which //python/serve:launcher has in its data: '
        'depend on the launcher from a py_binary or py_test and run it with '
        '`bazel run` or `bazel test`, or run `bazel build '
        '//python/serve:serve` before using the launcher from a checkout.'
    ) from e


def server_command(flags: Sequence[str],
                   real_server: Optional[str] = None) -> List[str]:
  """The command line that starts a server with `flags`.

  Args:
    flags: tensorflow_model_server flags, e.g. ["--port=8500", ...].
    real_server: Path of a real tensorflow_model_server, or None for the
      project's server (`project_server_binary()`).

  Returns:
    The command as a list.

  Raises:
    LauncherError: the project server's binary is not found.
  """
  if real_server:
    return [real_server] + list(flags)
  # The binary is Bazel's Python stub, which re-executes itself with the
  # toolchain's interpreter; starting it with this interpreter spares the
  # stub's `#!/usr/bin/env python` line, which needs `python` on PATH.
  return [sys.executable, project_server_binary()] + list(flags)


def project_server_env(base_env: Optional[Dict[str, str]] = None
                      ) -> Dict[str, str]:
  """The environment to start the project server in.

  The binary sets up its own import path from its runfiles, so this is a copy
  of `base_env`; it stays so callers that start `server_command()`
  themselves name the project server's environment in one place.

  Args:
    base_env: Environment to copy (default: os.environ).

  Returns:
    A new environment dict.
  """
  return dict(os.environ if base_env is None else base_env)


def _model_names(model_name: Optional[str],
                 model_config_file: Optional[str]) -> List[str]:
  if model_config_file:
    config = model_server_config_pb2.ModelServerConfig()
    with open(model_config_file, encoding='utf-8') as f:
      text_format.Parse(f.read(), config)
    return [c.name for c in config.model_config_list.config]
  return [model_name or 'default']


class ServerProcess:
  """A model server subprocess on a free port, as a context manager.

  Named for what it is, a process: it runs tensorflow_model_server or the
  project's `serve` binary (whose in-process server is
  `server_lib.ModelServer`) and talks to it only over the network, so tests
  and demos exercise either server the same way.

  Attributes:
    port: The gRPC port.
    address: "host:port" to dial.
    process: The `subprocess.Popen`, once started.
    log_path: File receiving the server's stdout and stderr.
    command: The command line used.
    is_real_server: Whether the real tensorflow_model_server runs.
  """

  def __init__(self, model_name: Optional[str] = None,
               model_base_path: Optional[str] = None, *,
               model_config_file: Optional[str] = None,
               extra_flags: Sequence[str] = (),
               port: Optional[int] = None,
               host: str = '127.0.0.1',
               startup_timeout_s: float = 180.0,
               shutdown_timeout_s: float = 60.0,
               env: Optional[Dict[str, str]] = None,
               log_dir: Optional[str] = None,
               use_real_server: Optional[bool] = None,
               channel_credentials: Optional[grpc.ChannelCredentials] = None):
    """Configures (does not start) the server.

    Args:
      model_name: --model_name (with model_base_path).
      model_base_path: --model_base_path, absolute path or URI.
      model_config_file: --model_config_file instead of the two above.
      extra_flags: More tensorflow_model_server flags.
      port: Port to use; a free one by default.
      host: Interface for the project server (--host) and for dialing.
      startup_timeout_s: Deadline for the models to become available.
      shutdown_timeout_s: How long `stop` waits after SIGTERM before SIGKILL.
      env: Extra environment variables for the server.
      log_dir: Where to write the server log (a temp dir by default).
      use_real_server: None picks tensorflow_model_server when available;
        False always runs the project server.
      channel_credentials: Credentials for the readiness check when the
        server uses TLS (extra_flags has --ssl_config_file); e.g.
        grpc.ssl_channel_credentials(root_certificates=ca_pem), with the
        client certificate too when the config sets client_verify.

    Raises:
      LauncherError: neither model_base_path nor model_config_file given.
    """
    if not model_base_path and not model_config_file:
      raise LauncherError(
          'ServerProcess needs model_base_path (with model_name) or '
          'model_config_file.')
    self._model_name = model_name
    self._model_base_path = model_base_path
    self._model_config_file = model_config_file
    self._extra_flags = list(extra_flags)
    self._requested_port = port
    self._host = host
    self._startup_timeout_s = startup_timeout_s
    self._shutdown_timeout_s = shutdown_timeout_s
    self._env = dict(env or {})
    self._log_dir = log_dir
    self._use_real_server = use_real_server
    self._channel_credentials = channel_credentials
    self._log_file = None
    self.port: Optional[int] = None
    self.address: Optional[str] = None
    self.process: Optional[subprocess.Popen] = None
    self.log_path: Optional[str] = None
    self.command: List[str] = []
    self.is_real_server = False

  def _flags(self) -> List[str]:
    flags = [f'--port={self.port}']
    if self._model_config_file:
      flags.append(f'--model_config_file={self._model_config_file}')
    else:
      if self._model_name:
        flags.append(f'--model_name={self._model_name}')
      flags.append(f'--model_base_path={self._model_base_path}')
    if not self.is_real_server:
      flags.append(f'--host={self._host}')
    return flags + self._extra_flags

  def log_tail(self, max_chars: int = 6000) -> str:
    """The end of the server log, for failure messages."""
    if not self.log_path or not os.path.exists(self.log_path):
      return ''
    with open(self.log_path, encoding='utf-8', errors='replace') as f:
      text = f.read()
    return text[-max_chars:]

  def start(self) -> 'ServerProcess':
    """Starts the process and waits until it serves every model.

    Returns:
      self.

    Raises:
      LauncherError: the process exited or was not ready before the deadline.
    """
    real = find_real_server() if self._use_real_server is not False else None
    self.is_real_server = bool(real)
    self.port = self._requested_port or free_port(self._host)
    self.address = f'{self._host}:{self.port}'
    self.command = server_command(self._flags(), real)
    log_dir = self._log_dir or tempfile.mkdtemp(prefix='model_server_')
    self.log_path = os.path.join(log_dir, f'model_server_{self.port}.log')
    # Closed in stop(); the server writes to it for its whole life.
    self._log_file = open(self.log_path, 'wb')  # pylint: disable=R1732
    env = dict(os.environ) if real else project_server_env()
    env.setdefault(ONEDNN_FROZEN_WEIGHTS_ENV, '1')
    env.update(self._env)
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with
        self.command, stdout=self._log_file, stderr=subprocess.STDOUT,
        env=env)
    try:
      self._wait_ready()
    except BaseException:
      self.stop()
      raise
    return self

  def _wait_ready(self) -> None:
    names = _model_names(self._model_name, self._model_config_file)
    deadline = time.monotonic() + self._startup_timeout_s
    if self._channel_credentials is None:
      channel = grpc.insecure_channel(self.address)
    else:
      channel = grpc.secure_channel(self.address, self._channel_credentials)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    pending = list(names)
    last_error = 'no answer yet'
    try:
      while pending:
        code = self.process.poll()
        if code is not None:
          raise LauncherError(
              f'Model server exited with status {code} before it was ready.\n'
              f'Command: {self.command}\nLog ({self.log_path}):\n'
              f'{self.log_tail()}')
        if time.monotonic() > deadline:
          raise LauncherError(
              f'Model server not ready within {self._startup_timeout_s}s '
              f'(waiting for models {pending}: {last_error}).\nCommand: '
              f'{self.command}\nLog ({self.log_path}):\n{self.log_tail()}')
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = pending[0]
        try:
          response = stub.GetModelStatus(request, timeout=2)
          if any(s.state == _AVAILABLE for s in response.model_version_status):
            pending.pop(0)
            continue
          last_error = str(response)
        except grpc.RpcError as e:
          last_error = f'{e.code()}: {e.details()}'
        time.sleep(0.2)
    finally:
      channel.close()

  def stop(self) -> Optional[int]:
    """SIGTERMs the server and waits; SIGKILLs it after the timeout.

    Returns:
      The exit status, or None if it never started.
    """
    if self.process is None:
      return None
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
      try:
        self.process.wait(self._shutdown_timeout_s)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if self._log_file is not None:
      self._log_file.close()
      self._log_file = None
    return self.process.returncode

  def __enter__(self) -> 'ServerProcess':
    return self.start()

  def __exit__(self, *unused_exc) -> None:
    self.stop()
