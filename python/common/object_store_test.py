"""Tests of object_store against moto's S3 server on loopback: multipart
transfers, retries of failed parts (through a fault-injecting proxy),
conditional writes, and errors that name the object."""

import os

from absl.testing import absltest

from python.common import moto_server
from python.common import object_store

_BUCKET = "models"


class ObjectStoreTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.moto = moto_server.MotoServer().start()
    cls.moto.install_env()
    cls.moto.create_bucket(_BUCKET)

  @classmethod
  def tearDownClass(cls):
    cls.moto.stop()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    os.environ["AWS_ENDPOINT_URL"] = self.moto.endpoint
    os.environ["TFSM_S3_MULTIPART_MB"] = "5"
    self.store = object_store.S3Store()

  def test_split(self):
    self.assertEqual(object_store.split("s3://b/a/b/"), ("b", "a/b"))
    self.assertEqual(object_store.split("s3://b"), ("b", ""))
    with self.assertRaisesRegex(object_store.ObjectStoreError,
                                "names no bucket"):
      object_store.split("s3:///x")

  def test_multipart_round_trip(self):
    data = os.urandom(12 << 20)  # 3 parts of 5 MiB.
    src = self.create_tempfile(content=data, mode="wb").full_path
    self.store.upload_file(src, _BUCKET, "big/shard")
    uploads = self.moto.client().list_multipart_uploads(Bucket=_BUCKET)
    self.assertEmpty(uploads.get("Uploads", []))
    head = self.moto.client().head_object(Bucket=_BUCKET, Key="big/shard")
    self.assertEqual(head["ContentLength"], len(data))
    self.assertIn("-3", head["ETag"])  # A multipart ETag: "<md5>-<parts>".
    self.store.copy(_BUCKET, "big/shard", "big/copy")
    out = os.path.join(self.create_tempdir().full_path, "sub", "copy")
    self.store.download_file(_BUCKET, "big/copy", out)
    with open(out, "rb") as f:
      self.assertEqual(f.read(), data)

  def test_failed_part_is_retried(self):
    proxy = moto_server.FaultProxy(self.moto.port, "partNumber=2", failures=2)
    self.addCleanup(proxy.close)
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
    store = object_store.S3Store()
    data = os.urandom(11 << 20)
    src = self.create_tempfile(content=data, mode="wb").full_path
    store.upload_file(src, _BUCKET, "retried/shard")
    self.assertEqual(proxy.failed, 2)
    body = self.moto.client().get_object(Bucket=_BUCKET,
                                         Key="retried/shard")["Body"].read()
    self.assertEqual(body, data)

  def test_persistent_failure_names_the_object(self):
    proxy = moto_server.FaultProxy(self.moto.port, "partNumber=2", failures=1000)
    self.addCleanup(proxy.close)
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
    os.environ["TFSM_S3_MAX_ATTEMPTS"] = "2"
    self.addCleanup(os.environ.pop, "TFSM_S3_MAX_ATTEMPTS")
    store = object_store.S3Store()
    src = self.create_tempfile(content=os.urandom(11 << 20),
                               mode="wb").full_path
    with self.assertRaisesRegex(
        object_store.ObjectStoreError,
        r"cannot upload .* to s3://models/failing/shard: .*InternalError"):
      store.upload_file(src, _BUCKET, "failing/shard")
    self.assertGreater(proxy.failed, 2)  # Retried before giving up.

  def test_conditional_writes(self):
    etag = self.store.put(_BUCKET, "cond/marker", b"1", if_none_match=True)
    with self.assertRaisesRegex(object_store.PreconditionFailedError,
                                "s3://models/cond/marker"):
      self.store.put(_BUCKET, "cond/marker", b"2", if_none_match=True)
    with self.assertRaises(object_store.PreconditionFailedError):
      self.store.put(_BUCKET, "cond/marker", b"3", if_match='"0000"')
    self.store.put(_BUCKET, "cond/marker", b"4", if_match=etag)
    self.assertEqual(self.store.read(_BUCKET, "cond/marker")[0], b"4")

  def test_listing_and_delete_prefix(self):
    for key in ("t/1/saved_model.pb", "t/1/variables/v", "t/.staging-2/x",
                "t/current_version"):
      self.store.put(_BUCKET, key, b"x")
    self.assertEqual(self.store.list_children(_BUCKET, "t"),
                     [".staging-2", "1", "current_version"])
    self.assertEqual(self.store.delete_prefix(_BUCKET, "t/1",
                                              first=["saved_model.pb"]), 2)
    self.assertEqual(self.moto.keys(_BUCKET, "t/"),
                     ["t/.staging-2/x", "t/current_version"])
    self.assertIsNone(self.store.read(_BUCKET, "t/1/saved_model.pb"))
    self.assertIsNone(self.store.head(_BUCKET, "t/nope"))

  def test_missing_bucket_and_endpoint_errors(self):
    with self.assertRaisesRegex(
        object_store.ObjectStoreError,
        r"cannot read s3://no-such-bucket/k: NoSuchBucket.*Create the "
        r"bucket 'no-such-bucket'"):
      self.store.read("no-such-bucket", "k")
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    os.environ["TFSM_S3_MAX_ATTEMPTS"] = "1"
    self.addCleanup(os.environ.pop, "TFSM_S3_MAX_ATTEMPTS")
    with self.assertRaisesRegex(object_store.ObjectStoreError,
                                r"s3://models/k: .*Check AWS_ENDPOINT_URL"):
      object_store.S3Store().read(_BUCKET, "k")


if __name__ == "__main__":
  absltest.main()
