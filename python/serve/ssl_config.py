"""--ssl_config_file: TLS for the gRPC port, as in tensorflow_model_server.

The file is a text-format `tensorflow.serving.SSLConfig`
(tensorflow_serving/config/ssl_config.proto), whose fields hold PEM text, not
file names:

  server_key: "-----BEGIN PRIVATE KEY-----\\n..."
  server_cert: "-----BEGIN CERTIFICATE-----\\n..."
  custom_ca: "-----BEGIN CERTIFICATE-----\\n..."   # optional
  client_verify: true                              # optional: mutual TLS

As in TF Serving's server.cc, `client_verify: true` requests and requires a
client certificate signed by `custom_ca`; otherwise no client certificate is
requested. The tensorflow-serving-api wheel does not ship ssl_config_pb2, so
the message is declared here from the same field numbers.
"""

from typing import Type

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message
from google.protobuf import message_factory
from google.protobuf import text_format

_FIELDS = (
    ('server_key', 1, descriptor_pb2.FieldDescriptorProto.TYPE_STRING),
    ('server_cert', 2, descriptor_pb2.FieldDescriptorProto.TYPE_STRING),
    ('custom_ca', 3, descriptor_pb2.FieldDescriptorProto.TYPE_STRING),
    ('client_verify', 4, descriptor_pb2.FieldDescriptorProto.TYPE_BOOL),
)


class SSLConfigError(ValueError):
  """The --ssl_config_file is unreadable, does not parse, or is incomplete."""


def _build_message_class() -> Type[message.Message]:
  file_proto = descriptor_pb2.FileDescriptorProto(
      name='tensorflow_serving/config/ssl_config.proto',
      package='tensorflow.serving', syntax='proto3')
  message_proto = file_proto.message_type.add(name='SSLConfig')
  for name, number, field_type in _FIELDS:
    message_proto.field.add(
        name=name, number=number, type=field_type,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
  # A private pool: never clashes with an ssl_config_pb2 imported elsewhere.
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file_proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName('tensorflow.serving.SSLConfig'))


SSLConfig = _build_message_class()


def parse_ssl_config(text: str, source: str) -> message.Message:
  """Parses and checks a text-format SSLConfig.

  Args:
    text: The text proto.
    source: Where it came from, for messages.

  Returns:
    The `SSLConfig` message.

  Raises:
    SSLConfigError: it does not parse, lacks server_key or server_cert, or
      sets client_verify without custom_ca.
  """
  config = SSLConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    reason = str(e).rstrip('.')
    raise SSLConfigError(
        f"Invalid protobuf file: '{source}': {reason}. Expected a text-format "
        'tensorflow.serving.SSLConfig (server_key, server_cert, custom_ca, '
        'client_verify).') from e
  for field in ('server_key', 'server_cert'):
    if not getattr(config, field).strip():
      raise SSLConfigError(
          f'{source}: {field} is empty; set it to the PEM text itself '
          f'(e.g. {field}: "-----BEGIN ...-----\\n...\\n"), not a file name.')
    if '-----BEGIN' not in getattr(config, field):
      raise SSLConfigError(
          f'{source}: {field} is not PEM text (no "-----BEGIN" line); the '
          'SSLConfig fields hold the PEM contents, not file names.')
  if config.client_verify and not config.custom_ca.strip():
    raise SSLConfigError(
        f'{source}: client_verify is true but custom_ca is empty; set '
        'custom_ca to the PEM of the CA that signs client certificates.')
  return config


def read_ssl_config_file(path: str) -> message.Message:
  """Reads and checks --ssl_config_file.

  Args:
    path: The text-format SSLConfig file.

  Returns:
    The `SSLConfig` message.

  Raises:
    SSLConfigError: the file is unreadable or invalid.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise SSLConfigError(f'Cannot read --ssl_config_file={path}: {e}') from e
  return parse_ssl_config(text, path)


def server_credentials(config: message.Message) -> grpc.ServerCredentials:
  """gRPC server credentials with TF Serving's semantics for `config`."""
  return grpc.ssl_server_credentials(
      [(config.server_key.encode('utf-8'),
        config.server_cert.encode('utf-8'))],
      root_certificates=config.custom_ca.encode('utf-8') or None,
      require_client_auth=config.client_verify)
