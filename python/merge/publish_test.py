"""Tests for publish: versions, staging, lock, history, keep_versions, URIs.

These drive `publish.publish` with a small directory-writing callable; the
real merge is exercised through it in merge_lib_test and merge_test.
"""

import fcntl
import json
import os
import subprocess
import threading
import time
import uuid

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from python.merge import errors
from python.merge import publish


def _writer(payload: str = "bundle", files=("saved_model.pb",
                                            "variables/variables.index")):
  """Returns a write callable that creates a small fake bundle."""

  def write(path: str) -> str:
    for rel in files:
      full = path.rstrip("/") + "/" + rel
      tf.io.gfile.makedirs(full.rsplit("/", 1)[0])
      with tf.io.gfile.GFile(full, "w") as f:
        f.write(f"{payload}:{rel}")
    return payload

  return write


def _read(path: str) -> str:
  with tf.io.gfile.GFile(path, "r") as f:
    return f.read()


class PublishTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.base = os.path.join(self.create_tempdir().full_path, "models")

  def _entries(self):
    return sorted(os.listdir(self.base))

  def test_first_publish_creates_base_version_1_and_history(self):
    pub = publish.publish(self.base, _writer("one"), signatures=["a", "b"],
                          message="first")
    self.assertEqual(pub.version, 1)
    self.assertEqual(pub.path, os.path.join(self.base, "1"))
    self.assertEqual(pub.written, "one")
    self.assertEqual(pub.new_signatures, ("a", "b"))
    self.assertEqual(_read(os.path.join(self.base, "1", "saved_model.pb")),
                     "one:saved_model.pb")
    self.assertEqual(
        _read(os.path.join(self.base, "1", "variables/variables.index")),
        "one:variables/variables.index")
    self.assertEqual(_read(os.path.join(self.base, "current_version")),
                     '1\ta,b\t"first"\n')
    self.assertEqual(_read(os.path.join(self.base, "exported_models")),
                     "a\nb\n")
    # Only the version, the history and the lock file: no staging leftovers.
    self.assertEqual(self._entries(), [
        ".merge.lock", "1", "current_version", "exported_models"])

  def test_next_version_and_new_signatures_newest_first(self):
    publish.publish(self.base, _writer(), signatures=["a", "b"], message="m1")
    with self.assertRaisesRegex(
        errors.PublishError,
        r"version 2 would remove signature\(s\) a that the newest version "
        r"in --output_base=.* serves \(exported_models\); .*Add their models "
        r"to the spec to keep them, or pass --allow_removed_signatures"):
      publish.publish(self.base, _writer(), signatures=["b", "c", "d"])
    self.assertEqual(publish.list_versions(self.base), [1])
    self.assertEqual(_read(os.path.join(self.base, "exported_models")),
                     "a\nb\n")
    pub = publish.publish(self.base, _writer(), signatures=["b", "c", "d"],
                          allow_removed_signatures=True)
    self.assertEqual(pub.version, 2)
    self.assertEqual(pub.new_signatures, ("c", "d"))
    self.assertEqual(pub.removed_signatures, ("a",))
    self.assertEqual(
        _read(os.path.join(self.base, "current_version")).splitlines(),
        ['2\tc,d\t""\ta', '1\ta,b\t"m1"'])
    self.assertEqual(_read(os.path.join(self.base, "exported_models")),
                     "b\nc\nd\n")
    self.assertEqual(publish.read_history(self.base),
                     (['2\tc,d\t""\ta', '1\ta,b\t"m1"'], ["b", "c", "d"]))

  def test_version_follows_highest_numeric_directory_ignoring_others(self):
    for name in ("3", "12", "7", "backup", "13.old", ".hidden"):
      os.makedirs(os.path.join(self.base, name))
    with open(os.path.join(self.base, "99"), "w"):  # A file, not a version.
      pass
    self.assertEqual(publish.list_versions(self.base), [3, 7, 12])
    self.assertEqual(publish.next_version(self.base), 13)
    pub = publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(pub.version, 13)

  def test_missing_base_means_version_1_without_creating_it(self):
    self.assertEqual(publish.next_version(self.base), 1)
    self.assertFalse(os.path.exists(self.base))

  def test_explicit_version(self):
    pub = publish.publish(self.base, _writer(), signatures=["a"], version=42)
    self.assertEqual(pub.version, 42)
    self.assertTrue(os.path.isfile(os.path.join(self.base, "42",
                                                "saved_model.pb")))
    self.assertEqual(publish.next_version(self.base), 43)

  def test_existing_version_is_refused_and_untouched(self):
    publish.publish(self.base, _writer("old"), signatures=["a"], message="m")
    history = _read(os.path.join(self.base, "current_version"))
    with self.assertRaisesRegex(
        errors.PublishError,
        r"version 1 already exists in --output_base=.*existing versions: 1\).*"
        r"never overwritten.*Omit --version to publish 2"):
      publish.publish(self.base, _writer("new"), signatures=["b"], version=1)
    self.assertEqual(_read(os.path.join(self.base, "1", "saved_model.pb")),
                     "old:saved_model.pb")
    self.assertEqual(_read(os.path.join(self.base, "current_version")),
                     history)
    self.assertEqual(self._entries(), [
        ".merge.lock", "1", "current_version", "exported_models"])

  def test_existing_empty_directory_is_refused(self):
    # rename() would silently replace an empty directory: must be refused.
    os.makedirs(os.path.join(self.base, "5"))
    with self.assertRaisesRegex(errors.PublishError, "version 5 already"):
      publish.publish(self.base, _writer(), signatures=["a"], version=5)
    self.assertEqual(os.listdir(os.path.join(self.base, "5")), [])

  @parameterized.named_parameters(
      ("negative", -1, "version=-1 is not a valid version number"),
      ("too_large", 1 << 63, "integers from 0 to 9223372036854775807"),
      ("bool", True, "version=True is not a valid"),
      ("string", "3", "version='3' is not a valid"),
  )
  def test_bad_version(self, version, regex):
    with self.assertRaisesRegex(errors.PublishError, regex):
      publish.publish(self.base, _writer(), signatures=["a"], version=version)
    self.assertFalse(os.path.exists(self.base))

  @parameterized.named_parameters(("zero", 0), ("negative", -2))
  def test_bad_keep_versions(self, keep):
    with self.assertRaisesRegex(
        errors.PublishError, rf"keep_versions={keep} must be a positive"):
      publish.publish(self.base, _writer(), signatures=["a"],
                      keep_versions=keep)

  def test_writer_failure_publishes_nothing(self):
    def write(path):
      _writer()(path)
      raise errors.GraphError("graph x.pb is corrupt")

    with self.assertRaisesRegex(errors.GraphError, "graph x.pb is corrupt"):
      publish.publish(self.base, write, signatures=["a"])
    self.assertEqual(self._entries(), [".merge.lock"])
    self.assertEqual(publish.next_version(self.base), 1)

  def test_check_failure_publishes_nothing(self):
    publish.publish(self.base, _writer(), signatures=["a"])
    checked = []

    def check(path):
      checked.append(path)
      self.assertTrue(os.path.isfile(os.path.join(path, "saved_model.pb")))
      self.assertNotRegex(os.path.basename(path), r"^\d+$")
      raise errors.VerifyError("signature a does not run")

    with self.assertRaisesRegex(errors.VerifyError, "signature a"):
      publish.publish(self.base, _writer(), signatures=["a", "b"], check=check)
    self.assertLen(checked, 1)
    self.assertEqual(os.path.dirname(checked[0]), self.base)
    self.assertEqual(self._entries(), [
        ".merge.lock", "1", "current_version", "exported_models"])
    self.assertEqual(publish.read_history(self.base)[1], ["a"])

  def test_writer_that_writes_nothing_is_an_error(self):
    with self.assertRaisesRegex(errors.PublishError,
                                "did not create the staging directory"):
      publish.publish(self.base, lambda path: None, signatures=["a"])
    self.assertEqual(publish.list_versions(self.base), [])

  def test_leftovers_of_crashed_runs_are_removed(self):
    publish.publish(self.base, _writer(), signatures=["a"])
    leftovers = [".staging-2-123-1700000000-abcd", ".trash-1-5-ff",
                 ".tmp-current_version-9-aa"]
    for name in leftovers[:2]:
      os.makedirs(os.path.join(self.base, name, "variables"))
    with open(os.path.join(self.base, leftovers[2]), "w") as f:
      f.write("partial")
    pub = publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(pub.version, 2)
    self.assertEqual(self._entries(), [
        ".merge.lock", "1", "2", "current_version", "exported_models"])

  @parameterized.named_parameters(
      ("keep_1", 1, [5], [1, 2, 3, 4]),
      ("keep_2", 2, [4, 5], [1, 2, 3]),
      ("keep_more_than_exist", 10, [1, 2, 3, 4, 5], []),
  )
  def test_keep_versions(self, keep, remaining, deleted):
    for _ in range(4):
      publish.publish(self.base, _writer(), signatures=["a"])
    pub = publish.publish(self.base, _writer(), signatures=["a"],
                          keep_versions=keep)
    self.assertEqual(pub.version, 5)
    self.assertEqual(pub.deleted_versions, tuple(deleted))
    self.assertEqual(publish.list_versions(self.base), remaining)
    self.assertFalse(
        [n for n in os.listdir(self.base) if n.startswith(".trash")])
    # History is a log: every publication stays listed.
    self.assertLen(publish.read_history(self.base)[0], 5)

  def test_keep_versions_never_deletes_the_new_version(self):
    publish.publish(self.base, _writer(), signatures=["a"], version=10)
    publish.publish(self.base, _writer(), signatures=["a"], version=11)
    pub = publish.publish(self.base, _writer(), signatures=["a"], version=3,
                          keep_versions=1)
    self.assertEqual(pub.deleted_versions, (10,))
    self.assertEqual(publish.list_versions(self.base), [3, 11])

  def test_history_message_is_quoted_and_escaped(self):
    publish.publish(self.base, _writer(), signatures=["a"],
                    message='say "hi"\tand\nbye')
    line = _read(os.path.join(self.base, "current_version"))
    self.assertEqual(line, '1\ta\t"say \\"hi\\"\\tand\\nbye"\n')
    self.assertLen(line.split("\t"), 3)

  def test_no_new_signatures_leaves_an_empty_field(self):
    publish.publish(self.base, _writer(), signatures=["a", "b"])
    pub = publish.publish(self.base, _writer(), signatures=["b", "a"],
                          message="retrain")
    self.assertEqual(pub.new_signatures, ())
    self.assertEqual(
        publish.read_history(self.base)[0][0], '2\t\t"retrain"')

  @parameterized.named_parameters(("empty", ""), ("blank", "  "),
                                  ("none", None))
  def test_empty_output_base_is_refused(self, base):
    with self.assertRaisesRegex(errors.PublishError,
                                "must name a directory or URI"):
      publish.publish(base, _writer(), signatures=["a"])

  def test_output_base_under_a_file_is_unwritable(self):
    blocker = self.create_tempfile("not_a_dir").full_path
    with self.assertRaisesRegex(
        errors.PublishError,
        r"cannot create --output_base='.*not_a_dir/models': Not a directory"):
      publish.publish(os.path.join(blocker, "models"), _writer(),
                      signatures=["a"])

  def test_concurrent_publishes_are_serialized(self):
    active = []
    overlaps = []
    results = []
    failures = []

    def write(path):
      active.append(path)
      if len(active) > 1:
        overlaps.append(list(active))
      time.sleep(0.2)  # Give the other thread every chance to overlap.
      _writer()(path)
      active.remove(path)

    def run():
      try:
        results.append(publish.publish(self.base, write, signatures=["a"]))
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(failures, [])
    self.assertEqual(overlaps, [])
    self.assertCountEqual([r.version for r in results], [1, 2, 3])
    self.assertEqual(publish.list_versions(self.base), [1, 2, 3])
    self.assertEqual(
        [l.split("\t")[0] for l in publish.read_history(self.base)[0]],
        ["3", "2", "1"])

  def test_file_uri_is_local(self):
    uri = "file://" + self.base
    pub = publish.publish(uri, _writer(), signatures=["a"])
    self.assertEqual(pub.path, os.path.join(self.base, "1"))
    self.assertIn(".merge.lock", os.listdir(self.base))

  def test_ram_uri(self):
    base = f"ram://publish_test_{uuid.uuid4().hex}/models"
    copied = []
    real_copy = tf.io.gfile.copy

    def recording_copy(src, dst, overwrite=False):
      copied.append(dst[len(base) + 1:])
      return real_copy(src, dst, overwrite=overwrite)

    self.enter_context(absltest.mock.patch.object(tf.io.gfile, "copy",
                                                  recording_copy))
    pub = publish.publish(base, _writer(files=("assets.extra/warm",
                                               "saved_model.pb",
                                               "variables/v.data")),
                          signatures=["a", "b"], message="m")
    self.assertEqual(pub.version, 1)
    self.assertEqual(pub.path, base + "/1")
    # saved_model.pb is copied last: TF Serving ignores the version until then.
    self.assertEqual(copied[-1], "1/saved_model.pb")
    self.assertCountEqual(copied, ["1/assets.extra/warm", "1/saved_model.pb",
                                   "1/variables/v.data"])
    self.assertEqual(_read(base + "/1/variables/v.data"),
                     "bundle:variables/v.data")
    self.assertEqual(_read(base + "/current_version"), '1\ta,b\t"m"\n')
    self.assertEqual(publish.list_versions(base), [1])
    self.assertFalse([
        n for n in tf.io.gfile.listdir(base) if n.startswith(".staging")
    ])
    with self.assertRaisesRegex(errors.PublishError, "version 1 already"):
      publish.publish(base, _writer(), signatures=["a"], version=1)
    pub = publish.publish(base, _writer(), signatures=["a", "c"],
                          keep_versions=1, allow_removed_signatures=True)
    self.assertEqual((pub.version, pub.new_signatures, pub.deleted_versions),
                     (2, ("c",), (1,)))
    self.assertEqual(publish.list_versions(base), [2])


class PlanTest(parameterized.TestCase):
  """plan(): what publish() will do, read from the base without writing."""

  def setUp(self):
    super().setUp()
    self.base = os.path.join(self.create_tempdir().full_path, "models")

  def test_missing_base_plans_version_1_and_creates_nothing(self):
    plan = publish.plan(self.base, ["a", "b"])
    self.assertEqual(
        (plan.version, plan.path, plan.existing, plan.newest),
        (1, os.path.join(self.base, "1"), (), None))
    self.assertEqual((plan.new_signatures, plan.removed_signatures,
                      plan.refusals), (("a", "b"), (), ()))
    self.assertFalse(os.path.exists(self.base))

  def test_plan_against_the_newest_version(self):
    publish.publish(self.base, _writer(), signatures=["a", "b"])
    _writer()(os.path.join(self.base, "010"))
    plan = publish.plan(self.base, ["b", "c"], keep_versions=2)
    self.assertEqual((plan.version, plan.existing), (11, (1, 10)))
    self.assertEqual(plan.newest, os.path.join(self.base, "010"))
    self.assertEqual(plan.previous_signatures, ("a", "b"))
    self.assertEqual(plan.new_signatures, ("c",))
    self.assertEqual(plan.removed_signatures, ("a",))
    self.assertEqual(plan.retired_versions, (1,))
    self.assertLen(plan.refusals, 1)
    self.assertRegex(str(plan.refusals[0]),
                     r"version 11 would remove signature\(s\) a that the "
                     r"newest version .*--allow_removed_signatures")
    self.assertEqual(publish.plan(self.base, ["b"], version=3).version, 3)
    self.assertTrue(publish.plan(self.base, ["b"], version=3).below_newest)
    self.assertFalse(plan.below_newest)

  @parameterized.named_parameters(
      ("allowed", dict(allow_removed_signatures=True), 0),
      ("all_removable", dict(removable=["a", "x"]), 0),
      ("some_unexpected", dict(removable=["x"]), 1))
  def test_removals_refused_unless_allowed_or_meant(self, options, refused):
    publish.publish(self.base, _writer(), signatures=["a", "b"])
    self.assertLen(publish.plan(self.base, ["b"], **options).refusals,
                   refused)

  @parameterized.named_parameters(
      ("listed_version", "2", 2), ("file_of_that_name", "2.file", 2))
  def test_existing_version_is_refused(self, name, version):
    publish.publish(self.base, _writer(), signatures=["a"])
    if name.endswith(".file"):
      with open(os.path.join(self.base, str(version)), "w"):
        pass
    else:
      os.makedirs(os.path.join(self.base, name))
    with self.assertRaisesRegex(errors.PublishError,
                                rf"version {version} already exists"):
      publish.plan(self.base, ["a"], version=version)

  @parameterized.named_parameters(
      ("first", [], dict()),
      ("removal_allowed_and_keep", [["a", "b"], ["b", "c"]],
       dict(allow_removed_signatures=True, keep_versions=1)),
      ("explicit_version", [["c"]], dict(version=9)))
  def test_publish_does_what_was_planned(self, before, options):
    for signatures in before:
      publish.publish(self.base, _writer(), signatures=signatures,
                      allow_removed_signatures=True)
    plan = publish.plan(self.base, ["c", "d"], **options)
    pub = publish.publish(self.base, _writer(), signatures=["c", "d"],
                          **options)
    self.assertEqual(
        (pub.version, pub.path, pub.new_signatures, pub.removed_signatures,
         pub.deleted_versions),
        (plan.version, plan.path, plan.new_signatures,
         plan.removed_signatures, plan.retired_versions))

  def test_publish_refuses_what_the_plan_refuses(self):
    publish.publish(self.base, _writer(), signatures=["a", "b"])
    plan = publish.plan(self.base, ["b"])
    with self.assertRaises(errors.PublishError) as raised:
      publish.publish(self.base, _writer(), signatures=["b"])
    self.assertEqual(str(raised.exception), str(plan.refusals[0]))
    # And with the removal meant, as an incremental deploy's `remove`:
    pub = publish.publish(self.base, _writer(), signatures=["b"],
                          removable=["a"])
    self.assertEqual(pub.removed_signatures, ("a",))

  @parameterized.named_parameters(
      ("none", [1, 2, 3], 4, None, ()), ("keep_one", [1, 2, 3], 4, 1,
                                         (1, 2, 3)),
      ("new_below_newest", [1, 5], 3, 1, (1,)),
      ("new_already_listed", [1, 2], 2, 1, (1,)))
  def test_retired_versions(self, versions, version, keep, retired):
    self.assertEqual(publish.retired_versions(versions, version, keep),
                     retired)


class TransactionTest(parameterized.TestCase):
  """Exit 1 means nothing new is visible; once renamed, the run completes."""

  def setUp(self):
    super().setUp()
    self.base = os.path.join(self.create_tempdir().full_path, "models")

  @parameterized.named_parameters(
      ("plain", "12", 12), ("zero_padded", "010", 10), ("zero", "0", 0),
      ("spaces", " 7 ", 7), ("negative", "-3", -3),
      ("letters", "v1", None), ("plus", "+1", None), ("decimal", "1.0", None),
      ("empty", "", None), ("overflow", "9223372036854775808", None),
      ("staging", ".staging-3-1-2-ab", None))
  def test_version_names_as_tf_serving_parses_them(self, name, version):
    self.assertEqual(publish.parse_version_name(name), version)

  def test_keep_versions_retires_zero_padded_directories(self):
    for name in ("008", "010"):
      _writer()(os.path.join(self.base, name))
    pub = publish.publish(self.base, _writer(), signatures=["a"],
                          keep_versions=1)
    self.assertEqual(pub.version, 11)
    self.assertEqual(pub.deleted_versions, (8, 10))
    self.assertEqual(pub.warnings[-1:], pub.warnings[-1:])
    self.assertEqual(sorted(n for n in os.listdir(self.base)
                            if n[0].isdigit()), ["11"])
    with self.assertRaisesRegex(errors.PublishError, "version 11 already"):
      _writer()(os.path.join(self.base, "0011"))
      publish.publish(self.base, _writer(), signatures=["a"], version=11)

  def test_history_failure_after_the_rename_is_a_warning(self):
    publish.publish(self.base, _writer(), signatures=["a"], message="one")
    real = publish._LocalPublisher.replace_file

    def failing(self_, path, text):
      raise errors.PublishError(f"cannot write the history file {path!r}: "
                                "No space left on device.")

    with absltest.mock.patch.object(publish._LocalPublisher, "replace_file",
                                    failing):
      pub = publish.publish(self.base, _writer(), signatures=["a", "b"],
                            message="two", keep_versions=5)
    del real
    self.assertEqual(pub.version, 2)
    self.assertTrue(os.path.isfile(os.path.join(self.base, "2",
                                                "saved_model.pb")))
    self.assertLen(pub.warnings, 1)
    self.assertRegex(pub.warnings[0],
                     r"version 2 is published, but its history was not "
                     r"recorded: .*No space left on device.*The next merge "
                     r"into this base adds the missing current_version line")
    # The next run repairs the history, then records its own version.
    self.assertEqual(publish.read_history(self.base)[0], ['1\ta\t"one"'])
    pub = publish.publish(self.base, _writer(), signatures=["a", "b"],
                          message="three")
    self.assertRegex(pub.warnings[0], r"repaired the history .*version\(s\) "
                     r"2 were published without their current_version line")
    current, _ = publish.read_history(self.base)
    self.assertEqual([l.split("\t")[0] for l in current], ["3", "2", "1"])
    self.assertEqual(current[1].split("\t")[2],
                     '"' + publish.REPAIRED_MESSAGE + '"')

  def test_repair_uses_the_manifest_signatures(self):
    publish.publish(self.base, _writer(), signatures=["a", "b"])
    # A version published by a merge killed right after its rename.
    killed = os.path.join(self.base, "2")
    _writer()(killed)
    os.makedirs(os.path.join(killed, "assets.extra"))
    with open(os.path.join(killed, publish.MANIFEST_FILE), "w") as f:
      json.dump({"signatures": ["b", "c"]}, f)
    pub = publish.publish(self.base, _writer(), signatures=["b", "c"])
    self.assertEqual((pub.version, pub.new_signatures, pub.removed_signatures),
                     (3, (), ()))
    current, exported = publish.read_history(self.base)
    self.assertEqual(current[1], "2\tc\t" + json.dumps(
        publish.REPAIRED_MESSAGE) + "\ta")
    self.assertEqual(exported, ["b", "c"])

  def test_keep_versions_failure_after_the_rename_is_a_warning(self):
    publish.publish(self.base, _writer(), signatures=["a"])

    def failing(self_, path, version):
      raise errors.PublishError(f"cannot delete old version {path!r} for "
                                "--keep_versions: Permission denied.")

    with absltest.mock.patch.object(publish._LocalPublisher, "retire",
                                    failing):
      pub = publish.publish(self.base, _writer(), signatures=["a"],
                            keep_versions=1)
    self.assertEqual((pub.version, pub.deleted_versions), (2, ()))
    self.assertRegex(pub.warnings[0], r"version 2 is published, but cannot "
                     r"delete old version .*Permission denied")
    self.assertEqual(publish.list_versions(self.base), [1, 2])

  def test_failed_rename_publishes_nothing(self):
    with absltest.mock.patch.object(os, "rename",
                                    side_effect=OSError(28, "No space")):
      with self.assertRaisesRegex(errors.PublishError,
                                  r"cannot rename the staged bundle"):
        publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(publish.list_versions(self.base), [])
    self.assertFalse(os.path.exists(os.path.join(self.base,
                                                 "current_version")))

  def test_check_written_refusal_publishes_nothing(self):
    seen = []

    def refuse(written, newest):
      seen.append((written, newest))
      raise errors.PublishError("same content")

    publish.publish(self.base, _writer("one"), signatures=["a"])
    with self.assertRaisesRegex(errors.PublishError, "same content"):
      publish.publish(self.base, _writer("two"), signatures=["a"],
                      check_written=refuse)
    self.assertEqual(seen, [("two", os.path.join(self.base, "1"))])
    self.assertEqual(publish.list_versions(self.base), [1])
    self.assertFalse([n for n in os.listdir(self.base)
                      if n.startswith(".staging")])

  def test_lock_wait_has_a_deadline_and_names_the_holder(self):
    os.makedirs(self.base)
    fd = os.open(os.path.join(self.base, publish.LOCK_FILE),
                 os.O_RDWR | os.O_CREAT)
    self.addCleanup(os.close, fd)
    os.write(fd, f"pid {os.getpid()}\nstarted {int(time.time())}\n".encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    start = time.monotonic()
    with self.assertRaisesRegex(
        errors.PublishError,
        rf"another merge into .* holds the lock .*\(pid {os.getpid()}, "
        r"running, for \d+ s\); gave up after \d+ s\. .*raise "
        r"--lock_timeout_seconds"):
      publish.publish(self.base, _writer(), signatures=["a"],
                      lock_timeout_seconds=0.5)
    self.assertLess(time.monotonic() - start, 5)
    self.assertEqual(publish.list_versions(self.base), [])

  def test_lock_file_that_is_a_fifo_is_refused(self):
    os.makedirs(self.base)
    os.mkfifo(os.path.join(self.base, publish.LOCK_FILE))
    with self.assertRaisesRegex(errors.PublishError,
                                r"the lock file .* is not a regular file"):
      publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(publish.list_versions(self.base), [])

  def test_lock_left_by_a_dead_merge_is_reported(self):
    os.makedirs(self.base)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(self.base, publish.LOCK_FILE), "w") as f:
      f.write(f"pid {dead.pid}\nstarted {int(time.time()) - 60}\n")
    os.makedirs(os.path.join(self.base, ".staging-1-x"))
    pub = publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(pub.version, 1)
    self.assertRegex(pub.warnings[0],
                     rf"previous merge into .* \(pid {dead.pid}\) died while "
                     "holding the lock")
    self.assertEqual(sorted(os.listdir(self.base)), [
        ".merge.lock", "1", "current_version", "exported_models"])
    # Released cleanly: the next run has nothing to report.
    pub = publish.publish(self.base, _writer(), signatures=["a"])
    self.assertEqual(pub.warnings, ())


if __name__ == "__main__":
  absltest.main()
