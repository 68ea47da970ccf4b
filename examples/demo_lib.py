"""The whole chain on the bundled examples: what `bazel run //:demo` does.

  1. build the example graphs (hyaudio, digits trained on scikit-learn's
     digits, a diabetes regression) into a work directory;
  2. merge them into one SavedModel, published as version 1 of
     `output_base`;
  3. check it with the C++ verifier (//cc/verify);
  4. start tensorflow_model_server if one is on PATH, else //python/serve;
  5. run the client over every signature; report the digits error rate (via
     predict and classify) and the diabetes RMSE (via regress);
  6. publish version 2 (adding a second audio model) while a background load
     runs, and show the server switching versions with zero failed requests;
  7. stop the server and print a summary with the paths used.

The server is stopped on every path out (context manager), so nothing is
left running.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, TextIO

import numpy as np

from client import calls
from client import client_lib
from client import report
from client import run_lib
from examples import runfiles_path
from examples.digits import digits_model
from examples.hyaudio import hyaudio_graph
from examples.regress import diabetes_model
from python.merge import merge_lib
from python.serve import launcher

MODEL_NAME = "merged"
SECOND_MODEL = "hyaudio_2"
# The verifier's path inside this repository (a checkout or the runfiles).
VERIFY_RELATIVE_PATH = os.path.join("cc", "verify", "verify")
_REPO_ROOT = os.path.dirname(runfiles_path.EXAMPLES_DIR)


class DemoError(Exception):
  """A step of the demo failed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
  """How to run the demo.

  Attributes:
    output_base: the model base path; default `<work_dir>/models/merged`.
    work_dir: where graphs and logs go; default a new temp dir.
    verify_binary: the //cc/verify binary; default found next to the code
      (Bazel runfiles, or bazel-bin in a checkout). "" skips verification.
    load_seconds_after_switch: how long the background load keeps going
      after the server switched to version 2.
    load_concurrency: requests in flight during the switch.
    switch_timeout_s: how long to wait for the server to serve version 2.
    out: where the demo narrates.
    log_path: the file receiving the logs of the demo's own process (merge,
      TensorFlow), named in the summary; None when logs go to stderr.
  """
  output_base: Optional[str] = None
  work_dir: Optional[str] = None
  verify_binary: Optional[str] = None
  load_seconds_after_switch: float = 2.0
  load_concurrency: int = 2
  switch_timeout_s: float = 120.0
  out: TextIO = sys.stdout
  log_path: Optional[str] = None


@dataclasses.dataclass
class SwitchReport:
  """The background load across the version switch."""
  requests_by_version: Dict[str, int]
  failures: Dict[str, int]
  seconds: float

  @property
  def failed(self) -> int:
    return sum(self.failures.values())

  @property
  def total(self) -> int:
    return sum(self.requests_by_version.values()) + self.failed


@dataclasses.dataclass
class DemoSummary:
  """What the demo did and where."""
  work_dir: str
  spec_v1: str
  spec_v2: str
  output_base: str
  versions: List[str]
  verify_output: str
  server_command: List[str]
  server_log: str
  demo_log: Optional[str]
  signatures_ok: int
  signatures_total: int
  digits_error_rate_predict: float
  digits_error_rate_classify: float
  diabetes_rmse: float
  switch: SwitchReport


def find_verify_binary() -> Optional[str]:
  """The //cc/verify binary next to this code, or None if not built."""
  candidates = [
      os.path.join(_REPO_ROOT, VERIFY_RELATIVE_PATH),  # Bazel runfiles.
      os.path.join(_REPO_ROOT, "bazel-bin", VERIFY_RELATIVE_PATH),
  ]
  for path in candidates:
    if os.path.isfile(path) and os.access(path, os.X_OK):
      return path
  return None


class _Narrator:

  def __init__(self, out: TextIO):
    self._out = out
    self._step = 0
    self._start = time.monotonic()

  def step(self, title: str) -> None:
    self._step += 1
    self._out.write(f"\n== {self._step}. {title} "
                    f"[{time.monotonic() - self._start:.0f} s]\n")
    self._out.flush()

  def say(self, text: str) -> None:
    self._out.write(text.rstrip("\n") + "\n")
    self._out.flush()


def build_examples(examples_dir: str) -> Dict[str, object]:
  """Generates every example graph and copies the combined spec.

  Returns:
    {"spec": path, "digits": DigitsFiles, "diabetes": DiabetesFiles,
     "hyaudio": GraphInfo}.
  """
  hyaudio = hyaudio_graph.write_graph(os.path.join(examples_dir, "hyaudio"))
  digits = digits_model.write_model(os.path.join(examples_dir, "digits"))
  diabetes = diabetes_model.write_model(os.path.join(examples_dir, "regress"))
  spec = os.path.join(examples_dir, "merge.toml")
  shutil.copyfile(runfiles_path.example_file("merge.toml"), spec)
  return {"spec": spec, "digits": digits, "diabetes": diabetes,
          "hyaudio": hyaudio}


def write_second_spec(examples_dir: str, spec_v1: str) -> str:
  """Writes merge_v2.toml: the v1 spec plus a second audio model."""
  info = hyaudio_graph.write_graph(os.path.join(examples_dir, "hyaudio"),
                                   seed=2, filename="hyaudio_2.pb")
  with open(spec_v1, encoding="utf-8") as f:
    text = f.read()
  text = text.replace(
      'message = "bundled examples:',
      f'message = "add {SECOND_MODEL}; bundled examples:', 1)
  outputs = ", ".join(f'{k} = "{v}"' for k, v in sorted(info.outputs.items()))
  text += (
      "\n[[model]]\n"
      f'signature_name = "{SECOND_MODEL}"\n'
      'frozen = "hyaudio/hyaudio_2.pb"\n'
      f'inputs = {{ inputs = "{info.inputs["inputs"]}" }}\n'
      f"outputs = {{ {outputs} }}\n")
  path = os.path.join(examples_dir, "merge_v2.toml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def run_verifier(binary: str, export_dir: str) -> str:
  """Runs //cc/verify on a version directory; returns its report.

  Raises:
    DemoError: if the verifier fails or cannot run.
  """
  command = [binary, f"--export_dir={export_dir}"]
  try:
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=600, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise DemoError(f"could not run the verifier {command}: {e}") from e
  if done.returncode != 0:
    raise DemoError(
        f"the C++ verifier rejected {export_dir} (exit {done.returncode}):\n"
        f"{done.stdout}{done.stderr}")
  return done.stdout.strip()


class BackgroundLoad:
  """Sends Predict requests from a few threads until stopped.

  Records which model version answered each request and every failure.
  """

  def __init__(self, client: client_lib.ServingClient, signature_name: str,
               inputs: Dict[str, np.ndarray], concurrency: int):
    self._client = client
    self._signature_name = signature_name
    self._inputs = inputs
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self.by_version: Dict[str, int] = {}
    self.failures: Dict[str, int] = {}
    self._threads = [threading.Thread(target=self._work, daemon=True)
                     for _ in range(concurrency)]
    self._start = 0.0
    self.seconds = 0.0

  def _work(self) -> None:
    while not self._stop.is_set():
      try:
        result = self._client.predict(self._signature_name, self._inputs)
        key, target = str(result.model_version), self.by_version
      except client_lib.ClientError as e:
        key, target = str(e), self.failures
      with self._lock:
        target[key] = target.get(key, 0) + 1

  def start(self) -> "BackgroundLoad":
    self._start = time.monotonic()
    for t in self._threads:
      t.start()
    return self

  def count(self, version: int) -> int:
    with self._lock:
      return self.by_version.get(str(version), 0)

  def stop(self) -> SwitchReport:
    self._stop.set()
    for t in self._threads:
      t.join()
    self.seconds = time.monotonic() - self._start
    return SwitchReport(dict(self.by_version), dict(self.failures),
                        self.seconds)


def _wait_for(condition, timeout_s: float, what: str) -> None:
  deadline = time.monotonic() + timeout_s
  while not condition():
    if time.monotonic() > deadline:
      raise DemoError(f"timed out after {timeout_s:g} s waiting for {what}")
    time.sleep(0.1)


def run_demo(options: DemoOptions) -> DemoSummary:
  """Runs the whole chain; see the module docstring.

  Args:
    options: how to run it.

  Returns:
    The summary (also printed).

  Raises:
    DemoError: a step failed (the message names it).
    merge_lib.MergeError, launcher.LauncherError: from those steps.
  """
  say = _Narrator(options.out)
  work_dir = options.work_dir or tempfile.mkdtemp(
      prefix="tf_serving_merge_demo_")
  os.makedirs(work_dir, exist_ok=True)
  output_base = os.path.abspath(
      options.output_base or os.path.join(work_dir, "models", MODEL_NAME))
  examples_dir = os.path.join(work_dir, "examples")
  verify_binary = options.verify_binary
  if verify_binary is None:
    verify_binary = find_verify_binary()
    if verify_binary is None:
      raise DemoError(
          "the C++ verifier //cc/verify was not found next to the demo (not "
          "in runfiles, nor in bazel-bin/); run the demo with `bazel run "
          "//:demo`, build it with `bazel build //cc/verify`, pass "
          "--verify_binary=PATH, or skip it with --verify_binary=''")

  say.step("build the example graphs")
  built = build_examples(examples_dir)
  digits = built["digits"]
  diabetes = built["diabetes"]
  say.say(f"work dir: {work_dir}")
  say.say(f"hyaudio: {built['hyaudio'].path}")
  say.say(f"digits: {digits.predict_graph}, {digits.classify_graph} (held-out "
          f"accuracy {digits.test_accuracy:.3f})")
  say.say(f"diabetes: {diabetes.graph} (held-out RMSE "
          f"{diabetes.test_rmse:.1f})")

  say.step(f"merge into one SavedModel under {output_base}")
  # A reused --output_base may serve SECOND_MODEL from an earlier run: the
  # demo starts again from its first spec, which drops it on purpose (the
  # summary names it under "removed in this version").
  v1 = merge_lib.merge_and_publish(built["spec"], output_base,
                                   allow_removed_signatures=True)
  say.say(v1.to_text())
  if v1.removed_signatures:
    say.say(f"(this base was used before: version {v1.version} starts again "
            f"from the first spec, without {', '.join(v1.removed_signatures)})")

  say.step("verify with the C++ loader (//cc/verify)")
  if verify_binary:
    verify_output = run_verifier(verify_binary, v1.path)
    say.say(verify_output)
  else:
    verify_output = "skipped (--verify_binary='')"
    say.say(verify_output)

  say.step("start the model server")
  rest_port = launcher.free_port()
  server = launcher.ServerProcess(
      model_name=MODEL_NAME, model_base_path=output_base,
      extra_flags=["--file_system_poll_wait_seconds=1",
                   f"--rest_api_port={rest_port}"],
      log_dir=work_dir)
  with server:
    kind = ("tensorflow_model_server" if server.is_real_server
            else "the project's server (//python/serve)")
    say.say(f"{kind} at {server.address}, pid {server.process.pid}")
    say.say(f"command: {' '.join(server.command)}")
    with client_lib.ServingClient(server.address, MODEL_NAME,
                                  timeout_s=30.0) as client:
      say.step("query every signature with the client")
      metadata = client.metadata()
      signatures = list(metadata.signatures.values())
      reports = run_lib.check(client, signatures, [], batch_size=1,
                              bundle=calls.Bundle(v1.path))
      say.say(report.to_text(client, metadata, reports, [], None, 4))
      failed = [r for r in reports if not r.ok]
      if failed:
        raise DemoError("signatures failed: " + "; ".join(
            f"{r.signature}: {r.error}" for r in failed))

      say.step("query every signature again over REST (--rest_api_port)")
      rest_address = f"127.0.0.1:{rest_port}"
      with client_lib.ServingClient(rest_address, MODEL_NAME, timeout_s=30.0,
                                    protocol="rest") as rest:
        rest_reports = run_lib.check(rest, signatures, [], batch_size=1,
                                     bundle=calls.Bundle(v1.path))
        say.say(report.to_text(rest, rest.metadata(), rest_reports, [], None,
                               4))
        rest_failed = [r for r in rest_reports if not r.ok]
        if rest_failed:
          raise DemoError("signatures failed over REST: " + "; ".join(
              f"{r.signature}: {r.error}" for r in rest_failed))
        mismatched = [
            r.signature for r, g in zip(rest_reports, reports)
            if any(not np.array_equal(r.result.outputs[a], g.result.outputs[a])
                   for a in g.result.outputs)]
        if mismatched:
          raise DemoError(f"REST and gRPC answers differ for {mismatched}")
      say.say(f"REST and gRPC answers are identical on all {len(reports)} "
              f"signatures; by hand: curl "
              f"http://{rest_address}/v1/models/{MODEL_NAME}/metadata")

      images = np.load(digits.test_images, allow_pickle=False)
      labels = np.load(digits.test_labels, allow_pickle=False)
      predicted = client.predict("digits", {"images": images})
      error_predict = digits_model.error_rate(
          predicted.outputs["classes"], labels)
      classified = client.classify(
          "digits_classify", {digits_model.FEATURE: images})
      best = np.argmax(classified.outputs["scores"], axis=1)
      labels_of_best = classified.outputs["classes"][np.arange(len(best)),
                                                      best]
      error_classify = digits_model.error_rate(
          np.array([int(label) for label in labels_of_best]), labels)
      say.say(f"digits: inference error rate {error_predict:.2%} via "
              f"Predict, {error_classify:.2%} via Classify ({len(labels)} "
              "held-out images)")
      with np.load(diabetes.test_features, allow_pickle=False) as archive:
        features = {name: archive[name] for name in archive.files}
      targets = np.load(diabetes.test_targets, allow_pickle=False)
      regressed = client.regress("diabetes", features)
      rmse = diabetes_model.rmse(regressed.outputs["outputs"], targets)
      say.say(f"diabetes: RMSE {rmse:.1f} via Regress ({len(targets)} "
              "held-out patients)")

      # merge_and_publish numbers it highest + 1: v1 is the highest now.
      say.step(f"publish version {v1.version + 1} (adds {SECOND_MODEL}) "
               "under load")
      spec_v2 = write_second_spec(examples_dir, built["spec"])
      load = BackgroundLoad(client, "digits", {"images": images[:8]},
                            options.load_concurrency).start()
      try:
        _wait_for(lambda: load.count(v1.version) >= 20, 60,
                  f"requests answered by version {v1.version}")
        v2 = merge_lib.merge_and_publish(spec_v2, output_base)
        say.say(v2.to_text())
        _wait_for(lambda: load.count(v2.version) >= 1,
                  options.switch_timeout_s,
                  f"the server to answer with version {v2.version}")
        say.say(f"the server answers with version {v2.version}")
        time.sleep(options.load_seconds_after_switch)
      finally:
        switch = load.stop()
      by_version = ", ".join(
          f"v{v}: {n}" for v, n in sorted(switch.requests_by_version.items()))
      say.say(f"background load: {switch.total} requests in "
              f"{switch.seconds:.1f} s, by version: {by_version}; failed: "
              f"{switch.failed}")
      if switch.failed:
        raise DemoError(
            f"{switch.failed} request(s) failed during the version switch: "
            f"{switch.failures}")
      metadata = client.metadata(refresh=True)
      if SECOND_MODEL not in metadata.signatures:
        raise DemoError(
            f"version {v2.version} is served but has no {SECOND_MODEL!r} "
            f"signature; it has {sorted(metadata.signatures)}")
      result = client.run(SECOND_MODEL, client.sample_inputs(SECOND_MODEL))
      say.say(f"{SECOND_MODEL}: version {result.model_version}, classes "
              f"{result.outputs['classes'].tolist()}")

    say.step("stop the server")
  status = server.process.returncode
  say.say(f"server exited with status {status}")

  versions = sorted((d for d in os.listdir(output_base) if d.isdigit()),
                    key=int)
  summary = DemoSummary(
      work_dir=work_dir, spec_v1=built["spec"], spec_v2=spec_v2,
      output_base=output_base, versions=versions,
      verify_output=verify_output, server_command=server.command,
      server_log=server.log_path, demo_log=options.log_path,
      signatures_ok=len(reports) - len(failed),
      signatures_total=len(reports),
      digits_error_rate_predict=error_predict,
      digits_error_rate_classify=error_classify, diabetes_rmse=rmse,
      switch=switch)
  say.step("summary")
  say.say(format_summary(summary))
  return summary


def format_summary(summary: DemoSummary) -> str:
  """The closing summary, with every path the demo used."""
  lines = [
      f"work dir:          {summary.work_dir}",
      f"specs:             {summary.spec_v1}",
      f"                   {summary.spec_v2}",
      f"model base path:   {summary.output_base} (versions "
      f"{', '.join(summary.versions)})",
      f"server log:        {summary.server_log}",
  ]
  if summary.demo_log:
    lines.append(f"demo log:          {summary.demo_log}")
  lines += [
      f"signatures:        {summary.signatures_ok} of "
      f"{summary.signatures_total} answered",
      f"digits error rate: {summary.digits_error_rate_predict:.2%} (predict), "
      f"{summary.digits_error_rate_classify:.2%} (classify)",
      f"diabetes RMSE:     {summary.diabetes_rmse:.1f}",
      f"version switch:    {summary.switch.total} requests, "
      f"{summary.switch.failed} failed",
      "serve it yourself:",
      f"  bazel run //python/serve -- --model_name={MODEL_NAME} "
      f"--model_base_path={summary.output_base}",
      f"  bazel run //client -- --server=localhost:8500 "
      f"--model_name={MODEL_NAME}",
      f"  bazel run //client -- --protocol=rest --server=localhost:8501 "
      f"--model_name={MODEL_NAME}   (with --rest_api_port=8501)",
  ]
  return "\n".join(lines)
