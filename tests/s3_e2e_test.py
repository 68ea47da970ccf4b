"""End to end on a real S3 API: moto's server mode on loopback, started here.

* python/merge publishes to s3://fleet/merged; three python/serve replicas
  serve that base path, each with its own download cache; under client load
  on all three a second version is published: every replica switches to it
  with zero failed requests, monotonic versions, and evicts version 1 from
  its cache;
* //cc/verify --export_dir=s3://... verifies a published version;
* a merge binary killed while it uploads leaves no numeric prefix; one
  killed while it copies leaves a prefix without saved_model.pb that no
  poller takes for a version, and the next merge removes it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List

from absl.testing import absltest
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from python.common import built_binaries
from python.common import moto_server
from python.common import object_store
from python.merge import incremental
from python.merge import merge_lib
from python.merge import publish
from python.merge.testdata import graphs
from python.serve import launcher

State = get_model_status_pb2.ModelVersionStatus.State
_BUCKET = "fleet"
_DEADLINE_S = 180.0
_REPLICAS = 3


def _binary(*parts: str) -> str:
  return built_binaries.built_binary(*parts)


class S3EndToEndTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.moto = moto_server.MotoServer().start()
    cls.moto.install_env()
    cls.moto.create_bucket(_BUCKET)
    cls.root = absltest.get_default_test_tmpdir()
    cls.specs = {v: cls._spec(v) for v in (1, 2, 3)}

  @classmethod
  def tearDownClass(cls):
    cls.moto.stop()
    super().tearDownClass()

  @classmethod
  def _spec(cls, version: int) -> str:
    frozen = os.path.join(cls.root, "frozen", f"hyaudio_{version}.pb")
    info = graphs.write_hyaudio(frozen, seed=version)
    cls.input_shape = [2] + [abs(d) for d in info["shapes"][
        info["inputs"]["inputs"]][1:]]
    return graphs.write_spec(
        os.path.join(cls.root, f"merge_{version}.toml"),
        [graphs.model_entry("hyaudio", info, frozen=frozen)],
        serving_default="hyaudio", message=f"version {version}")

  def _merge_command(self, spec: str, base: str) -> List[str]:
    return [_binary("python", "merge", "merge"), f"--spec={spec}",
            f"--output_base={base}", "--noverify",
            # Weights in variables/ and a warmup file: objects to copy before
            # saved_model.pb.
            "--externalize_threshold_bytes=0"]

  def _keys(self, prefix: str) -> List[str]:
    return self.moto.keys(_BUCKET, prefix + "/")

  def _numeric(self, prefix: str) -> List[str]:
    return [k for k in self._keys(prefix)
            if k[len(prefix) + 1:].split("/")[0].isdigit()]

  # --- serving -------------------------------------------------------------

  def _status(self, address: str) -> Dict[int, int]:
    with grpc.insecure_channel(address) as channel:
      stub = model_service_pb2_grpc.ModelServiceStub(channel)
      request = get_model_status_pb2.GetModelStatusRequest()
      request.model_spec.name = "merged"
      response = stub.GetModelStatus(request, timeout=10)
    return {s.version: s.state for s in response.model_version_status}

  def test_three_replicas_switch_versions_with_zero_failed_requests(self):
    base = f"s3://{_BUCKET}/merged"
    first = merge_lib.merge_and_publish(self.specs[1], base)
    self.assertEqual((first.version, first.path), (1, f"{base}/1"))

    caches = [os.path.join(self.root, f"cache_{i}") for i in range(_REPLICAS)]
    servers = [launcher.ServerProcess(
        model_name="merged", model_base_path=base, use_real_server=False,
        env=self.moto.env({}),
        extra_flags=["--file_system_poll_wait_seconds=1",
                     f"--model_cache_dir={cache}"]) for cache in caches]
    starters = [threading.Thread(target=s.start) for s in servers]
    for t in starters:
      t.start()
    for t in starters:
      t.join()
    for server in servers:
      self.addCleanup(server.stop)
      self.assertIsNotNone(server.process, server.log_tail())
      self.assertIsNone(server.process.poll(), server.log_tail())
      self.assertEqual(self._status(server.address), {1: State.AVAILABLE},
                       server.log_tail())
    for cache in caches:
      self.assertTrue(os.path.isfile(os.path.join(
          cache, _BUCKET, "merged", "1", "saved_model.pb")))

    stop = threading.Event()
    seen: List[List[int]] = [[] for _ in servers]
    failures: List[str] = []
    x = tf.make_tensor_proto(np.ones(self.input_shape, np.float32))

    def client(index: int) -> None:
      with grpc.insecure_channel(servers[index].address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "merged"
        request.model_spec.signature_name = "hyaudio"
        request.inputs["inputs"].CopyFrom(x)
        while not stop.is_set():
          try:
            response = stub.Predict(request, timeout=60)
            seen[index].append(response.model_spec.version.value)
          except grpc.RpcError as e:
            failures.append(f"replica {index}: {e.code()}: {e.details()}")
          time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(i,))
               for i in range(_REPLICAS)]
    for t in threads:
      t.start()
    try:
      deadline = time.monotonic() + _DEADLINE_S
      while not all(seen):
        self.assertLess(time.monotonic(), deadline, "no answers from v1")
        time.sleep(0.1)
      second = merge_lib.merge_and_publish(self.specs[2], base)
      self.assertEqual(second.version, 2)
      for server in servers:
        while self._status(server.address) != {2: State.AVAILABLE,
                                               1: State.END}:
          self.assertLess(time.monotonic(), deadline,
                          f"{server.address} did not switch: "
                          f"{server.log_tail()}")
          time.sleep(0.2)
      while not all(s and s[-1] == 2 for s in seen):
        self.assertLess(time.monotonic(), deadline, "clients stalled")
        time.sleep(0.1)
    finally:
      stop.set()
      for t in threads:
        t.join()

    self.assertEqual(failures, [])
    for index, versions in enumerate(seen):
      self.assertEqual(versions, sorted(versions),
                       f"replica {index}: a version went backwards")
      self.assertEqual(set(versions), {1, 2}, f"replica {index}")
    for cache in caches:
      models = os.path.join(cache, _BUCKET, "merged")
      self.assertEqual(sorted(os.listdir(models)), ["2"])  # 1 evicted.

    # The verifier reads the same S3 version.
    result = subprocess.run(
        [_binary("cc", "verify", "verify"), f"--export_dir={base}/2",
         "--json"], capture_output=True, text=True, timeout=300,
        env=self.moto.env(), check=False)
    self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
    report = json.loads(result.stdout)
    self.assertTrue(report["ok"])
    self.assertEqual(report["export_dir"], f"{base}/2")
    self.assertIn("hyaudio", report["signatures"])
    missing = subprocess.run(
        [_binary("cc", "verify", "verify"), f"--export_dir={base}/9"],
        capture_output=True, text=True, timeout=300, env=self.moto.env(),
        check=False)
    self.assertEqual(missing.returncode, 1)
    self.assertIn(f"no SavedModel at {base}/9", missing.stderr)

  # --- killed merges -------------------------------------------------------

  def _run_and_kill(self, base: str, endpoint: str, when) -> None:
    tmp = self.create_tempdir().full_path
    env = self.moto.env()
    env.update(AWS_ENDPOINT_URL=endpoint, TMPDIR=tmp,
               TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(self._merge_command(self.specs[1], base),
                               env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + _DEADLINE_S
    try:
      while not when():
        if process.poll() is not None:
          self.fail("the merge ended before it could be killed: "
                    + process.stderr.read().decode()[-2000:])
        self.assertLess(time.monotonic(), deadline, "publish never started")
        time.sleep(0.02)
    finally:
      process.send_signal(signal.SIGKILL)
      process.communicate()

  def test_kill_while_uploading_leaves_no_numeric_prefix(self):
    prefix = "killed_upload"
    proxy = moto_server.FaultProxy(
        self.moto.port, delay=lambda method, path, headers: (
            method == "PUT" and (".staging-" in path or
                                 "x-amz-copy-source" in headers)),
        delay_s=1.5)
    self.addCleanup(proxy.close)
    self._run_and_kill(
        f"s3://{_BUCKET}/{prefix}", proxy.endpoint,
        lambda: any(".staging-" in k for k in self._keys(prefix)))
    self.assertEqual(self._numeric(prefix), [])
    self.assertEqual(publish.list_versions(f"s3://{_BUCKET}/{prefix}"), [])

  def test_kill_while_copying_is_invisible_and_cleaned_up(self):
    prefix = "killed_copy"
    base = f"s3://{_BUCKET}/{prefix}"
    proxy = moto_server.FaultProxy(
        self.moto.port, delay=lambda method, path, headers: (
            "x-amz-copy-source" in headers), delay_s=1.5)
    self.addCleanup(proxy.close)
    self._run_and_kill(base, proxy.endpoint,
                       lambda: bool(self._numeric(prefix)))
    numeric = self._numeric(prefix)
    self.assertNotEmpty(numeric)
    self.assertNotIn(f"{prefix}/1/saved_model.pb", numeric)
    self.assertEqual(publish.list_versions(base), [])  # No poller sees it.
    # The next merge, once the dead merge's heartbeat is stale, removes the
    # partial prefix and the staging objects and publishes version 2.
    time.sleep(2.5)
    env = self.moto.env()
    env.update(TFSM_S3_STALE_SECONDS="2", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(self._merge_command(self.specs[3], base) +
                            ["--verbose"],
                            env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn(f"Published version 2 at {base}/2", result.stdout)
    keys = self._keys(prefix)
    self.assertEqual(sorted({k.split("/")[1] for k in self._numeric(prefix)}),
                     ["2"], f"{keys}\n{result.stderr[-3000:]}")
    self.assertEmpty([k for k in keys if ".staging-" in k])
    self.assertEqual(publish.list_versions(base), [2])


  def test_incremental_deploy_from_an_s3_base(self):
    """base = "latest" on s3://: the kept model's files come from the bucket."""
    base = f"s3://{_BUCKET}/incremental"
    first = os.path.join(self.root, "frozen", "hyaudio_1.pb")
    second = os.path.join(self.root, "frozen", "hyaudio_2.pb")
    info_1 = graphs.write_hyaudio(first, seed=1)
    info_2 = graphs.write_hyaudio(second, seed=2)

    def model(name, info, frozen):
      return merge_lib.ModelSpec(signature_name=name, frozen=frozen,
                                 inputs=info["inputs"],
                                 outputs=info["outputs"])

    merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(model("kept", info_1, first),
                                    model("gone", info_2, second))),
        base, verify=False, externalize_threshold_bytes=0)
    # The second deploy has only the new model's graph: "kept" is copied
    # from version 1 in the bucket, "gone" removed, "added" merged.
    os.rename(first, first + ".moved")
    self.addCleanup(os.rename, first + ".moved", first)
    result = merge_lib.merge_and_publish(
        merge_lib.MergeSpec(models=(model("added", info_2, second),),
                            base="latest", remove=("gone",)),
        base, verify=False, externalize_threshold_bytes=0)
    self.assertEqual(result.version, 2)
    self.assertEqual(result.incremental.kept, ("kept",))
    self.assertEqual(result.removed_signatures, ("gone",))
    manifest = incremental.read_manifest(f"{base}/2")
    self.assertEqual(manifest["sources"]["kept"]["status"], "kept")
    self.assertEqual(manifest["sources"]["kept"]["version"], 1)
    self.assertEqual(manifest["sources"]["added"]["status"], "added")
    self.assertEqual(manifest["base"]["path"], f"{base}/1")
    # Bit-identical answers of the kept model, both versions from S3.
    value = np.linspace(0, 1, int(np.prod(self.input_shape)),
                        dtype=np.float32).reshape(self.input_shape)
    answers = []
    for version in (1, 2):
      local = os.path.join(self.create_tempdir().full_path, str(version))
      object_store.S3Store().download_tree(_BUCKET, f"incremental/{version}",
                                      local)
      answers.append(_run_signature(local, "kept", value))
    for alias in answers[0]:
      np.testing.assert_array_equal(answers[0][alias], answers[1][alias])


def _run_signature(export_dir: str, name: str, value: np.ndarray) -> dict:
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    signature = meta.signature_def[name]
    (alias, info), = signature.inputs.items()
    del alias
    return sess.run({a: i.name for a, i in signature.outputs.items()},
                    {info.name: value})


if __name__ == "__main__":
  absltest.main()
