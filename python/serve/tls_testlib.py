"""Test-time TLS certificates made with the `openssl` command-line tool.

  certs = tls_testlib.make_certificates(tmp_dir)  # skips if no openssl
  ssl_config_text = tls_testlib.ssl_config_text(certs, client_verify=True)

Creates a throwaway CA, a server certificate for 127.0.0.1 / localhost and a
client certificate, all signed by that CA and valid for two days.
"""

import dataclasses
import os
import shutil
import subprocess
import unittest


@dataclasses.dataclass(frozen=True)
class Certificates:
  """PEM files made by `make_certificates`."""
  ca_cert: str
  server_cert: str
  server_key: str
  client_cert: str
  client_key: str
  # Signed by a different CA: a client the server must refuse.
  rogue_client_cert: str
  rogue_client_key: str


def _openssl(*args: str, cwd: str) -> None:
  done = subprocess.run(['openssl', *args], cwd=cwd, capture_output=True,
                        text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f'openssl {" ".join(args)} failed '
                       f'({done.returncode}): {done.stderr}')


_NEW_KEY = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
            '-nodes')


def _make_ca(directory: str, name: str) -> None:
  _openssl('req', '-x509', *_NEW_KEY, '-keyout', f'{name}.key', '-out',
           f'{name}.pem', '-days', '2', '-subj', f'/CN={name}',
           '-addext', 'basicConstraints=critical,CA:TRUE',
           '-addext', 'keyUsage=critical,keyCertSign,cRLSign', cwd=directory)


def _make_leaf(directory: str, name: str, ca: str, serial: int,
               extensions: str) -> None:
  extfile = os.path.join(directory, f'{name}.ext')
  with open(extfile, 'w', encoding='utf-8') as f:
    f.write(extensions)
  _openssl('req', *_NEW_KEY, '-keyout', f'{name}.key', '-out', f'{name}.csr',
           '-subj', f'/CN={name}', cwd=directory)
  _openssl('x509', '-req', '-in', f'{name}.csr', '-CA', f'{ca}.pem', '-CAkey',
           f'{ca}.key', '-set_serial', str(serial), '-days', '2', '-out',
           f'{name}.pem', '-extfile', extfile, cwd=directory)


def make_certificates(directory: str) -> Certificates:
  """Writes a CA, server and client certificates under `directory`.

  Args:
    directory: An existing directory.

  Returns:
    The file paths.

  Raises:
    unittest.SkipTest: no `openssl` on PATH.
    RuntimeError: an openssl command failed.
  """
  if shutil.which('openssl') is None:
    raise unittest.SkipTest('needs the openssl command-line tool on PATH')
  _make_ca(directory, 'ca')
  _make_ca(directory, 'rogue_ca')
  _make_leaf(directory, 'server', 'ca', 1,
             'subjectAltName=IP:127.0.0.1,DNS:localhost\n'
             'extendedKeyUsage=serverAuth\n')
  _make_leaf(directory, 'client', 'ca', 2, 'extendedKeyUsage=clientAuth\n')
  _make_leaf(directory, 'rogue_client', 'rogue_ca', 3,
             'extendedKeyUsage=clientAuth\n')
  path = lambda name: os.path.join(directory, name)
  return Certificates(
      ca_cert=path('ca.pem'), server_cert=path('server.pem'),
      server_key=path('server.key'), client_cert=path('client.pem'),
      client_key=path('client.key'),
      rogue_client_cert=path('rogue_client.pem'),
      rogue_client_key=path('rogue_client.key'))


def read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def ssl_config_text(certs: Certificates, client_verify: bool) -> str:
  """A text-format SSLConfig for tensorflow_model_server --ssl_config_file."""

  def quoted(path: str) -> str:
    text = read(path).decode('ascii')
    return '"' + text.replace('\\', '\\\\').replace('\n', '\\n') + '"'

  lines = [f'server_key: {quoted(certs.server_key)}',
           f'server_cert: {quoted(certs.server_cert)}']
  if client_verify:
    lines += [f'custom_ca: {quoted(certs.ca_cert)}', 'client_verify: true']
  return '\n'.join(lines) + '\n'
