"""Black-box tests of //python/merge:merge and //python/merge:inspect.

Runs the binaries as subprocesses (from Bazel runfiles, or with
`python -m` outside Bazel) and checks exit codes (0 ok, 1 failed job, 2 bad
usage), messages, what lands in --output_base, crash safety under SIGKILL at
random points, and concurrent merges into one base.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from python.merge import bundle_check
from python.merge import publish
from python.merge.testdata import graphs

_WORKSPACE = "tf_serving_merge"
_MODULES = {"merge": "python.merge.merge",
            "inspect": "python.merge.inspect_main"}
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_TIMEOUT_SECONDS = 240


def _command(binary: str) -> list[str]:
  """The command running a merge binary: Bazel runfiles, else python -m."""
  srcdir = os.environ.get("TEST_SRCDIR")
  if srcdir:
    path = os.path.join(srcdir, _WORKSPACE, "python", "merge", binary)
    if os.path.exists(path):
      return [path]
  return [sys.executable, "-m", _MODULES[binary]]


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _run(binary: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(_command(binary) + list(args), env=_env(),
                        capture_output=True, text=True,
                        timeout=_TIMEOUT_SECONDS, check=False)


def _start(binary: str, *args: str) -> subprocess.Popen:
  return subprocess.Popen(_command(binary) + list(args), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _numeric_dirs(base: str) -> list[str]:
  if not os.path.isdir(base):
    return []
  return sorted((n for n in os.listdir(base) if n.isdigit()), key=int)


def _leftovers(base: str) -> list[str]:
  return [n for n in os.listdir(base)
          if n.startswith((".staging", ".trash", ".tmp"))]


class MergeBinaryTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(absltest.get_default_test_tmpdir(),
                        f"merge_test-{uuid.uuid4().hex}")
    cls.root = root
    cls.hyaudio = graphs.write_hyaudio(os.path.join(root, "hyaudio.pb"))
    cls.classifier = graphs.write_classifier(
        os.path.join(root, "classifier.pb"))
    # Big enough that writing and checking take a while (for SIGKILL).
    cls.large = graphs.write_large_const(os.path.join(root, "large.pb"),
                                         16 << 20)
    cls.spec = graphs.write_spec(
        os.path.join(root, "merge.toml"),
        [graphs.model_entry("hyaudio_1", cls.hyaudio, frozen="hyaudio.pb"),
         graphs.model_entry("hyaudio_2", cls.hyaudio, frozen="hyaudio.pb"),
         graphs.model_entry("classifier", cls.classifier,
                            frozen="classifier.pb")],
        message="add hyaudio_1 and hyaudio_2 model",
        serving_default="hyaudio_1")
    cls.large_spec = graphs.write_spec(
        os.path.join(root, "large.toml"),
        [graphs.model_entry("large", cls.large, frozen="large.pb"),
         graphs.model_entry("hyaudio", cls.hyaudio, frozen="hyaudio.pb")],
        message="large")

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.base = os.path.join(self.tmp, "models")

  def assertJobFailed(self, proc, regex):
    self.assertEqual(proc.returncode, 1, proc.stderr)
    self.assertRegex(proc.stderr, regex)
    self.assertNotIn("Traceback", proc.stderr)

  def assertUsageError(self, proc, regex):
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertRegex(proc.stderr, regex)
    self.assertNotIn("Traceback", proc.stderr)

  def assertCompleteVersion(self, path):
    """The version directory loads and every signature runs."""
    self.assertTrue(os.path.isfile(os.path.join(path, "saved_model.pb")),
                    path)
    bundle_check.check_bundle(path)

  def test_merge_publish_json_text_and_inspect(self):
    proc = _run("merge", f"--spec={self.spec}", f"--output_base={self.base}",
                "--format=json")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    summary = json.loads(proc.stdout)
    self.assertEqual(summary["version"], 1)
    self.assertEqual(summary["path"], os.path.join(self.base, "1"))
    self.assertEqual(summary["signatures"],
                     ["hyaudio_1", "hyaudio_2", "classifier"])
    self.assertEqual(summary["new_signatures"], summary["signatures"])
    self.assertFalse(summary["dry_run"])
    self.assertEqual(summary["bytes"], sum(summary["files"].values()))
    self.assertGreater(summary["bytes"], 0)
    self.assertIn("seconds", summary)
    self.assertCompleteVersion(summary["path"])
    with open(os.path.join(self.base, "current_version")) as f:
      self.assertEqual(
          f.read(), '1\thyaudio_1,hyaudio_2,classifier\t"add hyaudio_1 and '
          'hyaudio_2 model"\n')
    with open(os.path.join(self.base, "exported_models")) as f:
      self.assertEqual(f.read(), "hyaudio_1\nhyaudio_2\nclassifier\n")

    proc = _run("merge", f"--spec={self.spec}", f"--output_base={self.base}",
                "--message=retrain", "--keep_versions=1", "--nowarmup")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertStartsWith(
        proc.stdout, f"Published version 2 at {os.path.join(self.base, '2')}")
    self.assertIn("new in this version: (none)", proc.stdout)
    self.assertIn("deleted old versions: 1", proc.stdout)
    self.assertEqual(_numeric_dirs(self.base), ["2"])
    self.assertFalse(os.path.exists(os.path.join(
        self.base, "2", "assets.extra", "tf_serving_warmup_requests")))
    self.assertEqual(publish.read_history(self.base)[0][0],
                     '2\t\t"retrain"')

    proc = _run("inspect", f"--dir={os.path.join(self.base, '2')}")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertIn("MetaGraphDef with tag-set: 'serve' contains the following "
                  "SignatureDefs:", proc.stdout)
    for name in ("hyaudio_1", "hyaudio_2", "classifier", "serving_default"):
      self.assertIn(f"signature_def['{name}']:", proc.stdout)
    self.assertIn("Method name is: tensorflow/serving/classify", proc.stdout)

    proc = _run("inspect", f"--frozen={self.hyaudio['path']}",
                "--format=json")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    desc = json.loads(proc.stdout)
    self.assertEqual(desc["placeholders"], [{
        "name": "hyaudio/vggish_input:0", "op": "Placeholder",
        "dtype": "float32", "shape": [-1, 640]}])
    self.assertCountEqual([t["name"] for t in desc["outputs"]],
                          ["hyaudio/predict_probs:0",
                           "hyaudio/predict_classes:0"])

  def test_dry_run_writes_nothing(self):
    proc = _run("merge", f"--spec={self.spec}", f"--output_base={self.base}",
                "--dry_run", "--format=json")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    summary = json.loads(proc.stdout)
    self.assertTrue(summary["dry_run"])
    self.assertEqual(summary["version"], 1)
    self.assertEqual(summary["signature_defs"]["hyaudio_2"]["outputs"],
                     {"classes": {"dtype": "int32", "shape": [-1]},
                      "probs": {"dtype": "float32", "shape": [-1, 8]}})
    self.assertFalse(os.path.exists(self.base))

  def _write_spec(self, models, **top):
    return graphs.write_spec(
        os.path.join(self.tmp, "spec.toml"), models, **top)

  def _hyaudio_entry(self, **overrides):
    return graphs.model_entry("audio", self.hyaudio, **overrides)

  @parameterized.named_parameters(
      ("missing_spec", None,
       r"error: spec file .*nonexistent.toml does not exist"),
      ("unknown_key", {"methd": "predict"},
       r'error: spec .*spec.toml, model #1 "audio": unknown key "methd"; did '
       r'you mean "method"\?'),
      ("missing_frozen", {"frozen": "missing.pb"},
       r'error: spec .*spec.toml, model #1 "audio", key "frozen": frozen '
       r"graph .*missing.pb does not exist"),
      ("corrupt_graph", {"frozen": "CORRUPT"},
       r"is not a binary GraphDef \(corrupt or truncated"),
      ("text_named_pb", {"frozen": "TEXT"},
       r"holds a text-format GraphDef but does not end in \.pbtxt"),
      ("tensor_not_in_graph",
       {"outputs": {"probs": "hyaudio/predict_prob:0"}},
       r'key "outputs": alias "probs".*Closest names: '
       r"hyaudio/predict_probs:0"),
      ("duplicate_signature", {"DUPLICATE": True},
       r'error: spec .*spec.toml, model #2 "audio", key "signature_name": '
       r'duplicate signature name "audio" \(also model #1\)'),
      ("alias_collision", {"outputs": {"inputs": "hyaudio/predict_probs:0"}},
       r"alias collision: 'inputs' used both as input and output alias"),
      ("wrong_method_structure", {"method": "classify"},
       r'error: spec .*model #1 "audio", key "outputs": method "classify" '
       r"allows only the output aliases"),
  )
  def test_spec_and_graph_errors_exit_1_and_publish_nothing(self, override,
                                                             regex):
    if override is None:
      spec = os.path.join(self.tmp, "nonexistent.toml")
    else:
      override = dict(override)
      if override.get("frozen") == "CORRUPT":
        path = os.path.join(self.tmp, "corrupt.pb")
        with open(self.hyaudio["path"], "rb") as src, open(path, "wb") as dst:
          dst.write(src.read()[:1000] + b"\xff" * 64)
        override["frozen"] = path
      elif override.get("frozen") == "TEXT":
        path = os.path.join(self.tmp, "text.pb")
        graphs.write_hyaudio(os.path.join(self.tmp, "text.pbtxt"))
        os.rename(os.path.join(self.tmp, "text.pbtxt"), path)
        override["frozen"] = path
      if override.get("method") == "classify":
        override["inputs"] = {"inputs": "hyaudio/vggish_input:0"}
      copies = 2 if override.pop("DUPLICATE", False) else 1
      spec = self._write_spec([self._hyaudio_entry(**override)] * copies)
    proc = _run("merge", f"--spec={spec}", f"--output_base={self.base}")
    self.assertJobFailed(proc, regex)
    self.assertEqual(_numeric_dirs(self.base), [])

  def test_unwritable_output_base_exits_1(self):
    blocker = os.path.join(self.tmp, "a_file")
    with open(blocker, "w") as f:
      f.write("not a directory")
    proc = _run("merge", f"--spec={self.spec}",
                f"--output_base={blocker}/models")
    self.assertJobFailed(
        proc, r"error: cannot create --output_base='.*a_file/models': Not a "
        r"directory\. Pass a directory you can write to\.")

  def test_existing_version_exits_1_and_is_untouched(self):
    os.makedirs(os.path.join(self.base, "3"))
    marker = os.path.join(self.base, "3", "saved_model.pb")
    with open(marker, "w") as f:
      f.write("published earlier")
    proc = _run("merge", f"--spec={self.spec}", f"--output_base={self.base}",
                "--version=3")
    self.assertJobFailed(
        proc, r"error: version 3 already exists in --output_base=.*existing "
        r"versions: 3\); published versions are never overwritten\. Omit "
        r"--version to publish 4")
    with open(marker) as f:
      self.assertEqual(f.read(), "published earlier")
    self.assertEqual(_leftovers(self.base), [])
    # The run gave version 3 (published without history) its line.
    current, _ = publish.read_history(self.base)
    self.assertEqual([l.split("\t")[0] for l in current], ["3"])

  @parameterized.named_parameters(
      ("missing_required", ("merge", "--output_base=/tmp/x"),
       r"(?i)flag --spec must have a value other than None"),
      ("bad_format", ("merge", "--spec=a.toml", "--output_base=/tmp/x",
                      "--format=xml"),
       r"value should be one of <text\|json>"),
      ("negative_version", ("merge", "--spec=a.toml", "--output_base=/tmp/x",
                            "--version=-1"),
       r"flag --version=-1: -1 is not a non-negative integer"),
      ("zero_keep_versions", ("merge", "--spec=a.toml",
                              "--output_base=/tmp/x", "--keep_versions=0"),
       r"flag --keep_versions=0: 0 is not a positive integer"),
      ("empty_output_base", ("merge", "--spec=a.toml", "--output_base="),
       r"--output_base must not be empty"),
      ("positional", ("merge", "--spec=a.toml", "--output_base=/tmp/x",
                      "extra"),
       r"unexpected arguments \['extra'\]"),
      ("unknown_allow_ops", ("merge", "--spec=a.toml", "--output_base=/tmp/x",
                             "--allow_ops=ReadFle"),
       r"--allow_ops names ReadFle, which python/common/denied_ops.txt does "
       r"not list"),
      ("inspect_both", ("inspect", "--frozen=a.pb", "--dir=/tmp"),
       r"pass exactly one of --frozen=<graph.pb> and --dir=<SavedModel "
       r"directory>"),
  )
  def test_bad_flags_exit_2(self, argv, regex):
    proc = _run(*argv)
    self.assertUsageError(proc, regex)
    self.assertFalse(os.path.exists("/tmp/x/1"))

  def test_inspect_missing_file_exits_1(self):
    proc = _run("inspect", f"--frozen={self.tmp}/nope.pb")
    self.assertJobFailed(proc, r"error: --frozen=.*nope.pb: frozen graph "
                         r".*nope.pb does not exist")

  def test_sigkill_at_random_points_leaves_only_complete_versions(self):
    # Version 1, published normally, must survive every crash untouched.
    proc = _run("merge", f"--spec={self.large_spec}",
                f"--output_base={self.base}")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    with open(os.path.join(self.base, "1", "saved_model.pb"), "rb") as f:
      version_1 = f.read()
    history = publish.read_history(self.base)

    rng = random.Random(20240611)
    # Kill points: after a random delay (mostly TF import), as soon as the
    # staging directory appears (writing), once the staged saved_model.pb
    # exists (flush and check), as soon as the new version appears (history
    # update), each with a random extra delay.
    events = ["delay", "staging", "staged_saved_model", "published", "delay"]
    outcomes = []
    for event in events:
      merge = _start("merge", f"--spec={self.large_spec}",
                     f"--output_base={self.base}", "--allow_same_content")
      self.addCleanup(merge.kill)
      reached = self._wait_for(event, merge, rng)
      if reached:
        time.sleep(rng.uniform(0, 0.05))
      merge.send_signal(signal.SIGKILL)
      merge.communicate(timeout=_TIMEOUT_SECONDS)
      outcomes.append((event, reached, _numeric_dirs(self.base)))
      # Every numeric directory is a complete bundle; version 1 unchanged.
      for name in _numeric_dirs(self.base):
        self.assertTrue(
            os.path.isfile(os.path.join(self.base, name, "saved_model.pb")),
            f"half-written version {name} after SIGKILL at {event}: "
            f"{outcomes}")
      with open(os.path.join(self.base, "1", "saved_model.pb"), "rb") as f:
        self.assertEqual(f.read(), version_1)
    self.assertTrue(any(reached for _, reached, _ in outcomes), outcomes)
    for name in _numeric_dirs(self.base):
      self.assertCompleteVersion(os.path.join(self.base, name))

    # The next merge cleans up what the killed runs left and succeeds.
    proc = _run("merge", f"--spec={self.large_spec}",
                f"--output_base={self.base}", "--format=json",
                "--allow_same_content")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    summary = json.loads(proc.stdout)
    self.assertEqual(summary["version"],
                     int(_numeric_dirs(self.base)[-2]) + 1)
    self.assertEqual(_leftovers(self.base), [])
    self.assertCompleteVersion(summary["path"])
    current, _ = publish.read_history(self.base)
    self.assertEqual(current[-1], history[0][-1])
    self.assertTrue(current[0].startswith(f"{summary['version']}\t"))
    # Every published version has its line, including one whose merge was
    # killed right after its rename (repaired by this run).
    self.assertCountEqual([line.split("\t")[0] for line in current],
                          _numeric_dirs(self.base))

  def _wait_for(self, event, proc, rng) -> bool:
    """Waits until `event` is observable in the base; False if it never is."""
    if event == "delay":
      time.sleep(rng.uniform(0.5, 6.0))
      return True
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    known = set(_numeric_dirs(self.base))
    while time.monotonic() < deadline and proc.poll() is None:
      names = os.listdir(self.base)
      staging = [n for n in names if n.startswith(".staging")]
      if event == "staging" and staging:
        return True
      if event == "staged_saved_model" and any(
          os.path.exists(os.path.join(self.base, n, "saved_model.pb"))
          for n in staging):
        return True
      if event == "published" and set(_numeric_dirs(self.base)) - known:
        return True
      time.sleep(0.001)
    return False

  def test_concurrent_merges_publish_two_distinct_complete_versions(self):
    procs = [
        _start("merge", f"--spec={spec}", f"--output_base={self.base}",
               "--format=json", "--allow_removed_signatures")
        for spec in (self.spec, self.large_spec)
    ]
    results = []
    for proc in procs:
      self.addCleanup(proc.kill)
      out, err = proc.communicate(timeout=_TIMEOUT_SECONDS)
      self.assertEqual(proc.returncode, 0, err)
      results.append(json.loads(out))
    self.assertCountEqual([r["version"] for r in results], [1, 2])
    self.assertEqual(_numeric_dirs(self.base), ["1", "2"])
    for r in results:
      self.assertCompleteVersion(r["path"])
    current, exported = publish.read_history(self.base)
    self.assertEqual([line.split("\t")[0] for line in current], ["2", "1"])
    newest = max(results, key=lambda r: r["version"])
    self.assertEqual(exported, newest["signatures"])
    self.assertEqual(_leftovers(self.base), [])


# --- Hostile and broken input (issue 11) -----------------------------------
#
# Each case: how to set it up (returns the command line), the exit status and
# the stderr regex expected. Every case must finish well within its timeout
# (no hang), print no traceback and at most a few lines, and publish nothing
# unless the case says it publishes. The README's reliability figures count
# these cases.


def _graph_def_of(info):
  graph_def = tf.compat.v1.GraphDef()
  with open(info["path"], "rb") as f:
    graph_def.ParseFromString(f.read())
  return graph_def


def _write_bytes(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return path


def _case_fifo(t):
  path = os.path.join(t.tmp, "pipe.pb")
  os.mkfifo(path)
  return ["merge", f"--spec={t.entry_spec(frozen=path)}"]


def _case_dev_zero(t):
  return ["merge", f"--spec={t.entry_spec(frozen='/dev/zero')}"]


def _case_socket(t):
  short = tempfile.mkdtemp(dir="/tmp")  # AF_UNIX paths are short.
  t.addCleanup(shutil.rmtree, short, ignore_errors=True)
  path = os.path.join(short, "s.pb")
  sock = socket.socket(socket.AF_UNIX)
  sock.bind(path)
  t.addCleanup(sock.close)
  return ["merge", f"--spec={t.entry_spec(frozen=path)}"]


def _case_size_limit(t):
  return ["merge", f"--spec={t.entry_spec()}", "--max_input_bytes=1000"]


def _case_inspect_fifo(t):
  path = os.path.join(t.tmp, "pipe.pb")
  os.mkfifo(path)
  return ["inspect", f"--frozen={path}"]


def _case_inspect_dir_device(t):
  version = os.path.join(t.tmp, "bundle", "1")
  os.makedirs(version)
  os.symlink("/dev/zero", os.path.join(version, "saved_model.pb"))
  return ["inspect", f"--dir={version}"]


def _case_spec_fifo(t):
  path = os.path.join(t.tmp, "spec.toml")
  os.mkfifo(path)
  return ["merge", f"--spec={path}"]


def _case_deep_pbtxt(t):
  depth = 200000
  path = _write_bytes(os.path.join(t.tmp, "deep.pbtxt"),
                      b"node { attr { value { " + b"list { " * depth +
                      b"} " * depth + b"} } }\n")
  return ["merge", f"--spec={t.entry_spec(frozen=path)}"]


def _case_junk_line(t):
  path = _write_bytes(os.path.join(t.tmp, "junk.pbtxt"),
                      b"node " + b"x" * (50 << 20) + b"\n")
  return ["merge", f"--spec={t.entry_spec(frozen=path)}"]


def _case_inspect_junk_line(t):
  path = _write_bytes(os.path.join(t.tmp, "junk.pbtxt"),
                      b"node " + b"x" * (50 << 20) + b"\n")
  return ["inspect", f"--frozen={path}"]


def _denied_graph(t):
  graph_def = _graph_def_of(t.hyaudio)
  name = graph_def.node.add(name="secret/name", op="Const")
  name.attr["dtype"].type = tf.string.as_datatype_enum
  name.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("/etc/shadow"))
  graph_def.node.add(name="secret/read", op="ReadFile",
                     input=["secret/name"])
  return _write_bytes(os.path.join(t.tmp, "denied.pb"),
                      graph_def.SerializeToString())


def _case_denied_op(t):
  return ["merge", f"--spec={t.entry_spec(frozen=_denied_graph(t))}"]


def _case_inspect_lists_denied_op(t):
  return ["inspect", f"--frozen={_denied_graph(t)}"]


def _case_shadow_vocabulary(t):
  info = graphs.write_vocabulary_table(os.path.join(t.tmp, "v.pb"),
                                       os.path.join(t.tmp, "words.txt"))
  graph_def = _graph_def_of(info)
  for node in graph_def.node:
    if node.name == "vocab/vocabulary_file":
      node.attr["value"].tensor.string_val[0] = b"/etc/shadow"
  _write_bytes(info["path"], graph_def.SerializeToString())
  spec = graphs.write_spec(os.path.join(t.tmp, "spec.toml"),
                           [graphs.model_entry("v", info, frozen="v.pb")])
  return ["merge", f"--spec={spec}"]


def _case_unlisted_placeholder(t):
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
    scale = tf.compat.v1.placeholder(tf.float32, [], name="scale")
    tf.identity(x * scale, name="y")
  _write_bytes(os.path.join(t.tmp, "g.pb"),
               graph.as_graph_def().SerializeToString())
  spec = graphs.write_spec(os.path.join(t.tmp, "spec.toml"), [{
      "signature_name": "scaled", "frozen": "g.pb", "inputs": {"x": "x:0"},
      "outputs": {"y": "y:0"}}])
  return ["merge", f"--spec={spec}"]


def _case_endless_loop(t):
  graph = tf.Graph()
  with graph.as_default():
    start = tf.compat.v1.placeholder(tf.int32, [], name="start")
    tf.identity(tf.compat.v1.while_loop(
        lambda i: i >= 0, lambda i: i * 1, [start]), name="y")
  _write_bytes(os.path.join(t.tmp, "loop.pb"),
               graph.as_graph_def().SerializeToString())
  spec = graphs.write_spec(os.path.join(t.tmp, "spec.toml"), [{
      "signature_name": "loop", "frozen": "loop.pb",
      "inputs": {"start": "start:0"}, "outputs": {"y": "y:0"}}])
  return ["merge", f"--spec={spec}", "--check_timeout_seconds=1",
          "--nowarmup"]


def _case_removed_signature(t):
  t.publish_first(t.entry_spec(signature_name="digits"))
  return ["merge", f"--spec={t.entry_spec(signature_name='audio')}"]


def _case_same_content(t):
  t.publish_first(t.entry_spec())
  return ["merge", f"--spec={t.entry_spec()}", "--message=again"]


def _case_history_is_fifo(t):
  os.makedirs(t.base)
  os.mkfifo(os.path.join(t.base, "current_version"))
  return ["merge", f"--spec={t.entry_spec()}"]


def _case_killed_after_rename(t):
  # What a merge killed right after its rename leaves: a version without its
  # history line.
  t.publish_first(t.entry_spec(signature_name="digits"))
  t.publish_first(t.entry_spec(signature_name="audio"),
                  "--allow_removed_signatures")
  current = os.path.join(t.base, "current_version")
  with open(current) as f:
    lines = f.readlines()
  with open(current, "w") as f:
    f.writelines(lines[1:])
  with open(os.path.join(t.base, "exported_models"), "w") as f:
    f.write("digits\n")
  shutil.copy(os.path.join(t.tmp, "hyaudio.pb"),
              os.path.join(t.tmp, "other.pb"))
  return ["merge", f"--spec={t.entry_spec(signature_name='audio')}",
          "--nowarmup"]


def _case_zero_padded_keep_versions(t):
  t.publish_first(t.entry_spec(), "--version=10")
  os.rename(os.path.join(t.base, "10"), os.path.join(t.base, "010"))
  return ["merge", f"--spec={t.entry_spec()}", "--keep_versions=1",
          "--allow_same_content"]


# name, setup, exit status, stderr regex, versions published by the case.
HOSTILE_CASES = (
    ("fifo_frozen", _case_fifo, 1,
     r'model #1 "audio", key "frozen": frozen graph .*pipe.pb is a FIFO '
     r"\(named pipe\), not a regular file", 0),
    ("dev_zero_frozen", _case_dev_zero, 1,
     r"frozen graph /dev/zero is a character device, not a regular file", 0),
    ("socket_frozen", _case_socket, 1, r"s.pb is a socket, not a regular", 0),
    ("over_size_limit", _case_size_limit, 1,
     r"hyaudio.pb is .* over the limit of 1000 B .*--max_input_bytes", 0),
    ("spec_is_fifo", _case_spec_fifo, 1,
     r"cannot read spec file: .*spec.toml is a FIFO", 0),
    ("inspect_fifo", _case_inspect_fifo, 1, r"pipe.pb is a FIFO", 0),
    ("inspect_dir_device", _case_inspect_dir_device, 1,
     r"saved_model.pb is a character device", 0),
    ("deep_pbtxt", _case_deep_pbtxt, 1,
     r"deep.pbtxt is not a valid text GraphDef: messages are nested more "
     r"than 100 levels deep", 0),
    ("junk_line", _case_junk_line, 1,
     r"junk.pbtxt is not a valid text GraphDef", 0),
    ("inspect_junk_line", _case_inspect_junk_line, 1,
     r"junk.pbtxt is not a valid text GraphDef", 0),
    ("denied_op", _case_denied_op, 1,
     r'denied.pb contains op\(s\) refused by default: ReadFile \(node '
     r'"secret/read"\).*--allow_ops=ReadFile', 0),
    ("inspect_lists_denied_op", _case_inspect_lists_denied_op, 0,
     r"Ops refused by default", 0),
    ("shadow_vocabulary", _case_shadow_vocabulary, 1,
     r'spec .*spec.toml, model #1 "v", key "frozen": table initializer '
     r"vocab/table_init reads vocabulary file /etc/shadow, which is outside "
     r"the directories assets may come from", 0),
    ("unlisted_placeholder", _case_unlisted_placeholder, 1,
     r'^error: spec .*spec.toml, model #1 "scaled", key "outputs": output '
     r"\"y\" \(\"y:0\"\) needs placeholder\(s\) 'scale'.*Add them to the "
     r"model's inputs", 0),
    ("endless_loop", _case_endless_loop, 1,
     r'the merged bundle of spec .*spec.toml \(staged, not published\): '
     r'signature "loop" did not finish within the check\'s deadline of 1 s '
     r"\(--check_timeout_seconds\)", 0),
    ("removed_signature", _case_removed_signature, 1,
     r"version 2 would remove signature\(s\) digits that the newest version "
     r".*--allow_removed_signatures", 0),
    ("same_content", _case_same_content, 1,
     r"the new version would have the same content as the newest version 1 "
     r".*--allow_same_content", 0),
    ("history_is_fifo", _case_history_is_fifo, 1,
     r"cannot read the history file .*current_version.*is a FIFO", 0),
    ("killed_after_rename", _case_killed_after_rename, 0,
     r"repaired the history of .*version\(s\) 2 were published without "
     r"their current_version line", 1),
    ("zero_padded_keep_versions", _case_zero_padded_keep_versions, 0,
     r"Published version 11", 1),
)


class HostileInputTest(parameterized.TestCase):
  """Hostile and broken inputs: one clear line, no hang, nothing published."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = os.path.join(absltest.get_default_test_tmpdir(),
                            f"hostile-{uuid.uuid4().hex}")
    cls.hyaudio = graphs.write_hyaudio(os.path.join(cls.root, "hyaudio.pb"))

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.base = os.path.join(self.tmp, "models")
    shutil.copy(self.hyaudio["path"], os.path.join(self.tmp, "hyaudio.pb"))

  def entry_spec(self, frozen="hyaudio.pb", signature_name="audio"):
    return graphs.write_spec(
        os.path.join(self.tmp, f"spec-{uuid.uuid4().hex[:8]}.toml"),
        [graphs.model_entry(signature_name, self.hyaudio, frozen=frozen)])

  def publish_first(self, spec, *flags):
    proc = _run("merge", f"--spec={spec}", f"--output_base={self.base}",
                *flags)
    self.assertEqual(proc.returncode, 0, proc.stderr)

  @parameterized.named_parameters(*HOSTILE_CASES)
  def test_case(self, setup, status, regex, published):
    argv = setup(self)
    before = _numeric_dirs(self.base)
    if argv[0] == "merge":
      argv.append(f"--output_base={self.base}")
    start = time.monotonic()
    proc = _run(*argv)
    elapsed = time.monotonic() - start
    self.assertEqual(proc.returncode, status, proc.stderr[-3000:])
    self.assertNotIn("Traceback", proc.stderr)
    self.assertLess(elapsed, 120)  # No hang (the loop's deadline is 1 s).
    errors_printed = [l for l in proc.stderr.splitlines()
                      if l.startswith("error:")]
    if status:
      self.assertLen(errors_printed, 1, proc.stderr[-3000:])
      self.assertRegex(errors_printed[0], regex)
      self.assertLess(len(errors_printed[0]), 2000)
    else:
      self.assertEqual(errors_printed, [])
      self.assertRegex(proc.stderr + proc.stdout, regex)
      self.assertLess(len(proc.stderr), 100000)
    self.assertLen(set(_numeric_dirs(self.base)) - set(before), published)
    if os.path.isdir(self.base):
      self.assertEqual(_leftovers(self.base), [])
    check = getattr(self, f"_after_{self._testMethodName.split('_', 2)[-1]}",
                    None)
    if check:
      check(proc)

  def _after_inspect_lists_denied_op(self, proc):
    self.assertRegex(proc.stdout, r"Ops refused by default .*--allow_ops="
                     r'ReadFile\):\n  ReadFile  node "secret/read"')

  def _after_endless_loop(self, proc):
    del proc
    # The lock was not kept by the endless run: the next merge publishes.
    self.publish_first(self.entry_spec(), "--lock_timeout_seconds=5")
    self.assertEqual(_numeric_dirs(self.base), ["1"])

  def _after_killed_after_rename(self, proc):
    # Version 2 served "audio" (and dropped "digits"): once repaired, this
    # run removes nothing and adds nothing.
    self.assertIn("new in this version: (none)", proc.stdout)
    self.assertNotIn("removed in this version", proc.stdout)
    current, exported = publish.read_history(self.base)
    self.assertEqual([l.split("\t")[0] for l in current], ["3", "2", "1"])
    self.assertEqual(current[1].split("\t")[1:2] + current[1].split(
        "\t")[3:], ["audio", "digits"])
    self.assertEqual(exported, ["audio"])

  def _after_zero_padded_keep_versions(self, proc):
    self.assertIn("deleted old versions: 10", proc.stdout)
    self.assertEqual(_numeric_dirs(self.base), ["11"])

  def assertCompleteVersion(self, path):
    self.assertTrue(os.path.isfile(os.path.join(path, "saved_model.pb")))
    bundle_check.check_bundle(path)


if __name__ == "__main__":
  absltest.main()
