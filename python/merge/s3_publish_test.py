"""Tests of publishing into s3:// bases (publish.py's S3 branch) against
moto's S3 server on loopback: copy order, version claims under concurrency,
history, keep_versions, failures and what killed merges leave."""

import json
import os
import threading
import time

from absl.testing import absltest

from python.common import moto_server
from python.common import object_store
from python.merge import errors
from python.merge import publish
from python.merge import s3_publish

_BUCKET = "fleet"
_FILES = {
    "saved_model.pb": b"graph",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"data" * 100,
    "assets.extra/tf_serving_warmup_requests": b"warmup",
}


def _write(files=None):
  def write(export_dir):
    for rel, data in (files or _FILES).items():
      path = os.path.join(export_dir, *rel.split("/"))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)
    return "written"
  return write


class _RecordingStore(object_store.S3Store):
  """Records copies; can fail one of them."""

  def __init__(self, fail_on=None):
    super().__init__()
    self.copies = []
    self.fail_on = fail_on
    self.lock = threading.Lock()

  def copy(self, bucket, src_key, dst_key):
    if self.fail_on and dst_key.endswith(self.fail_on):
      raise object_store.ObjectStoreError(
          f"cannot copy {src_key} to s3://{bucket}/{dst_key}: injected")
    super().copy(bucket, src_key, dst_key)
    with self.lock:
      self.copies.append(dst_key)


class S3PublishTest(absltest.TestCase):

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

  def base(self):
    return f"s3://{_BUCKET}/{self.id().rsplit('.', 1)[-1]}"

  def prefix(self):
    return self.id().rsplit(".", 1)[-1]

  def numeric_keys(self):
    return [k for k in self.moto.keys(_BUCKET, self.prefix() + "/")
            if k.split("/")[1].isdigit()]

  def test_publish_layout_and_history(self):
    base = self.base()
    first = publish.publish(base, _write(), signatures=["a", "b"],
                            message="first")
    second = publish.publish(base, _write(), signatures=["a", "c"],
                             message='tab\tquote"')
    self.assertEqual((first.version, second.version), (1, 2))
    self.assertEqual(second.path, f"{base}/2")
    self.assertEqual(second.new_signatures, ("c",))
    self.assertEqual(first.written, "written")
    keys = self.moto.keys(_BUCKET, self.prefix() + "/")
    for version in (1, 2):
      for rel in _FILES:
        self.assertIn(f"{self.prefix()}/{version}/{rel}", keys)
    self.assertEmpty([k for k in keys if ".staging-" in k])
    current, exported = publish.read_history(base)
    self.assertEqual(current, ['2\tc\t"tab\\tquote\\""', '1\ta,b\t"first"'])
    self.assertEqual(exported, ["a", "c"])
    self.assertEqual(publish.list_versions(base), [1, 2])
    self.assertEqual(publish.next_version(base), 3)
    marker = json.loads(self.moto.client().get_object(
        Bucket=_BUCKET, Key=f"{self.prefix()}/.versions/2")["Body"].read())
    self.assertEqual(marker["state"], "published")

  def test_saved_model_pb_is_copied_last(self):
    store = _RecordingStore()
    s3_publish.publish(self.base(), _write(), signatures=["a"], version=None,
                       message=None, check=None, keep_versions=None,
                       store=store)
    self.assertLen(store.copies, len(_FILES))
    self.assertEqual(store.copies[-1], f"{self.prefix()}/1/saved_model.pb")

  def test_check_runs_on_the_local_copy_before_any_upload(self):
    seen = []

    def check(export_dir):
      seen.append(sorted(os.listdir(export_dir)))
      self.assertEmpty(self.moto.keys(_BUCKET, self.prefix() + "/"))
      raise errors.VerifyError("signature a failed")

    with self.assertRaisesRegex(errors.VerifyError, "signature a failed"):
      publish.publish(self.base(), _write(), signatures=["a"], check=check)
    self.assertEqual(seen, [["assets.extra", "saved_model.pb", "variables"]])
    self.assertEmpty(self.moto.keys(_BUCKET, self.prefix() + "/"))

  def test_failed_copy_names_the_object_and_leaves_no_numeric_prefix(self):
    store = _RecordingStore(fail_on="variables/variables.index")
    with self.assertRaisesRegex(
        errors.PublishError,
        rf"s3://{_BUCKET}/{self.prefix()}/1/variables/variables.index: "
        "injected"):
      s3_publish.publish(self.base(), _write(), signatures=["a"],
                         version=None, message=None, check=None,
                         keep_versions=None, store=store)
    self.assertEqual(self.moto.keys(_BUCKET, self.prefix() + "/"),
                     [f"{self.prefix()}/.versions/1"])
    # The number stays burned; the next merge takes 2.
    self.assertEqual(publish.publish(self.base(), _write(),
                                     signatures=["a"]).version, 2)

  def test_concurrent_merges_take_distinct_versions(self):
    base = self.base()
    results, failures = [], []

    def run(i):
      try:
        results.append(publish.publish(base, _write(), signatures=[f"s{i}"],
                                       message=f"m{i}").version)
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEmpty(failures)
    self.assertEqual(sorted(results), [1, 2, 3, 4, 5])
    current, exported = publish.read_history(base)
    self.assertEqual([int(l.split("\t")[0]) for l in current],
                     [5, 4, 3, 2, 1])
    self.assertLen(exported, 1)
    self.assertEqual(publish.list_versions(base), [1, 2, 3, 4, 5])

  def test_same_explicit_version_twice_is_refused(self):
    base = self.base()
    outcomes = []

    def run():
      try:
        outcomes.append(publish.publish(base, _write(), signatures=["a"],
                                        version=7).version)
      except errors.PublishError as e:
        outcomes.append(str(e))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(outcomes.count(7), 1, outcomes)
    for text in outcomes:
      if text != 7:
        self.assertRegex(text, "version 7 .*(already exists|is claimed)")
    with self.assertRaisesRegex(errors.PublishError,
                                "version 7 already exists"):
      publish.publish(base, _write(), signatures=["a"], version=7)

  def test_keep_versions(self):
    base = self.base()
    for _ in range(4):
      result = publish.publish(base, _write(), signatures=["a"],
                               keep_versions=2)
    self.assertEqual(result.version, 4)
    self.assertEqual(result.deleted_versions, (2,))
    self.assertEqual(publish.list_versions(base), [3, 4])
    self.assertEqual({k.split("/")[1] for k in self.numeric_keys()},
                     {"3", "4"})
    # Numbers of deleted versions stay claimed.
    with self.assertRaisesRegex(errors.PublishError, "version 2 .*claimed"):
      publish.publish(base, _write(), signatures=["a"], version=2)
    # A new version below the highest is never the one deleted.
    high = publish.publish(base, _write(), signatures=["a"], version=10,
                           keep_versions=1)
    self.assertEqual(high.deleted_versions, (3, 4))
    low = publish.publish(base, _write(), signatures=["a"], version=5,
                          keep_versions=1)
    self.assertEqual(low.deleted_versions, ())
    self.assertEqual(publish.list_versions(base), [5, 10])

  def test_leftovers_of_a_killed_merge(self):
    base, prefix = self.base(), self.prefix()
    client = self.moto.client()
    # A merge killed while copying version 1: a marker whose heartbeat
    # stopped, a numeric prefix without saved_model.pb, its staging objects.
    client.put_object(Bucket=_BUCKET, Key=f"{prefix}/.versions/1",
                      Body=b'{"state": "publishing"}')
    client.put_object(Bucket=_BUCKET, Key=f"{prefix}/1/variables/x", Body=b"x")
    client.put_object(Bucket=_BUCKET, Key=f"{prefix}/.staging-1-9-9-ab/x",
                      Body=b"x")
    self.assertEqual(publish.list_versions(base), [])  # Pollers ignore it.
    # Alive (fresh heartbeat): left alone.
    result = publish.publish(base, _write(), signatures=["a"])
    self.assertEqual(result.version, 2)
    self.assertIn(f"{prefix}/1/variables/x", self.moto.keys(_BUCKET, prefix))
    os.environ["TFSM_S3_STALE_SECONDS"] = "1"
    self.addCleanup(os.environ.pop, "TFSM_S3_STALE_SECONDS")
    time.sleep(2.1)
    result = publish.publish(base, _write(), signatures=["a"])
    self.assertEqual(result.version, 3)
    keys = self.moto.keys(_BUCKET, prefix)
    self.assertNotIn(f"{prefix}/1/variables/x", keys)
    self.assertEmpty([k for k in keys if ".staging-" in k])

  def test_errors(self):
    with self.assertRaisesRegex(errors.PublishError,
                                "NoSuchBucket.*Create the bucket"):
      publish.publish("s3://no-such-bucket/m", _write(), signatures=["a"])
    with self.assertRaisesRegex(errors.PublishError, "names no bucket"):
      publish.publish("s3:///m", _write(), signatures=["a"])


if __name__ == "__main__":
  absltest.main()
