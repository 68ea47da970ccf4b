"""Tests for ssl_config: parsing --ssl_config_file and TLS / mutual TLS."""

import concurrent.futures
import os

from absl.testing import absltest
from absl.testing import parameterized
import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc

from python.serve import ssl_config
from python.serve import tls_testlib

_PEM = '"-----BEGIN X-----\\nAA==\\n-----END X-----\\n"'


class ParseTest(parameterized.TestCase):

  def test_parses_every_field(self):
    config = ssl_config.parse_ssl_config(
        f'server_key: {_PEM}\nserver_cert: {_PEM}\ncustom_ca: {_PEM}\n'
        'client_verify: true\n', 'ssl.config')
    self.assertTrue(config.client_verify)
    self.assertEqual(config.custom_ca,
                     '-----BEGIN X-----\nAA==\n-----END X-----\n')
    self.assertEqual(config.DESCRIPTOR.full_name,
                     'tensorflow.serving.SSLConfig')

  @parameterized.named_parameters(
      ('syntax', 'server_key {', "Invalid protobuf file: 'ssl.config'"),
      ('unknown_field', 'server_pem: "x"', "Invalid protobuf file"),
      ('no_key', f'server_cert: {_PEM}', 'server_key is empty'),
      ('no_cert', f'server_key: {_PEM}', 'server_cert is empty'),
      ('file_name', f'server_key: "/etc/key.pem"\nserver_cert: {_PEM}',
       'server_key is not PEM text .* not file names'),
      ('verify_without_ca',
       f'server_key: {_PEM}\nserver_cert: {_PEM}\nclient_verify: true',
       'client_verify is true but custom_ca is empty; set custom_ca'))
  def test_rejects(self, text, message):
    with self.assertRaisesRegex(ssl_config.SSLConfigError, message):
      ssl_config.parse_ssl_config(text, 'ssl.config')

  def test_unreadable_file_names_the_flag(self):
    with self.assertRaisesRegex(ssl_config.SSLConfigError,
                                'Cannot read --ssl_config_file=/no/such'):
      ssl_config.read_ssl_config_file('/no/such')


class CredentialsTest(parameterized.TestCase):
  """A gRPC health server with the credentials, dialed by several clients."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    directory = os.path.join(absltest.get_default_test_tmpdir(), 'certs')
    os.makedirs(directory, exist_ok=True)
    cls.certs = tls_testlib.make_certificates(directory)

  def serve(self, client_verify: bool) -> str:
    path = self.create_tempfile(
        content=tls_testlib.ssl_config_text(self.certs, client_verify)
    ).full_path
    credentials = ssl_config.server_credentials(
        ssl_config.read_ssl_config_file(path))
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(),
                                                 server)
    port = server.add_secure_port('127.0.0.1:0', credentials)
    server.start()
    self.addCleanup(lambda: server.stop(None).wait())
    return f'127.0.0.1:{port}'

  def check(self, address: str, credentials=None) -> grpc.StatusCode:
    if credentials is None:
      channel = grpc.insecure_channel(address)
    else:
      channel = grpc.secure_channel(address, credentials)
    with channel:
      try:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10)
        return grpc.StatusCode.OK
      except grpc.RpcError as e:
        return e.code()

  def credentials(self, client: str = ''):
    read = tls_testlib.read
    if not client:
      return grpc.ssl_channel_credentials(read(self.certs.ca_cert))
    return grpc.ssl_channel_credentials(
        read(self.certs.ca_cert),
        private_key=read(getattr(self.certs, f'{client}_key')),
        certificate_chain=read(getattr(self.certs, f'{client}_cert')))

  def test_tls_without_client_verify(self):
    address = self.serve(client_verify=False)
    self.assertEqual(self.check(address, self.credentials()),
                     grpc.StatusCode.OK)
    # A client certificate is not requested, so any one is fine.
    self.assertEqual(self.check(address, self.credentials('rogue_client')),
                     grpc.StatusCode.OK)
    self.assertEqual(self.check(address), grpc.StatusCode.UNAVAILABLE)

  def test_mutual_tls_requires_a_client_certificate_from_custom_ca(self):
    address = self.serve(client_verify=True)
    self.assertEqual(self.check(address, self.credentials('client')),
                     grpc.StatusCode.OK)
    self.assertEqual(self.check(address, self.credentials()),
                     grpc.StatusCode.UNAVAILABLE)
    self.assertEqual(self.check(address, self.credentials('rogue_client')),
                     grpc.StatusCode.UNAVAILABLE)
    self.assertEqual(self.check(address), grpc.StatusCode.UNAVAILABLE)


if __name__ == '__main__':
  absltest.main()
