"""Benchmark harness: whole processes, alternating rounds, medians.

Timings on shared machines are noisy, so contenders are compared side by
side in one run: every round runs each contender once (the order rotates
from round to round), each as a fresh process, and the report gives medians
of wall time and peak RSS (the child's own `VmHWM`, sampled while it runs; see
`run_process`) and their ratios.

  contenders = [bench_lib.Contender("floor", [sys.executable, "floor.py"]),
                bench_lib.Contender("ours", [...], setup=clean_dir)]
  results = bench_lib.run_rounds(contenders, rounds=3)
  print(bench_lib.markdown_table(...))
  bench_lib.print_summary({"benchmark": "merge", ...})

Nothing here asserts timings; the benchmarks report figures and targets.
"""

import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from python.common import cli
from python.common import stats

# Repository root, from this file's location (works in a checkout and in
# Bazel runfiles, where the workspace directory holds the same tree).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SUMMARY_KEY = "benchmark"
# How often `run_process` samples a child's peak RSS.
_RSS_POLL_S = 0.01

# Log timestamps of absl (the project server: "I1122 03:09:56.611909 ...")
# and of tensorflow_model_server ("2025-11-22 03:09:56.611909: I ...").
_ABSL_TIME = re.compile(r"^[IWEF](\d{4}) (\d\d:\d\d:\d\d\.\d{6})")
_TFS_TIME = re.compile(r"^\d{4}-(\d\d)-(\d\d) (\d\d:\d\d:\d\d\.\d{6})")



class BenchError(RuntimeError):
  """A benchmark step failed in a way that makes its figures meaningless."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One timed process.

  Attributes:
    wall_s: Wall-clock seconds from spawn to exit.
    max_rss_bytes: Peak resident set size of the process.
    user_s: User CPU seconds.
    sys_s: System CPU seconds.
    returncode: Exit status (negative: killed by that signal).
    output_tail: Last lines of its stdout+stderr.
  """
  wall_s: float
  max_rss_bytes: int
  user_s: float
  sys_s: float
  returncode: int
  output_tail: str

  @property
  def ok(self) -> bool:
    return self.returncode == 0


@dataclasses.dataclass
class Contender:
  """A command timed as a whole process.

  Attributes:
    name: Short name used in tables and JSON keys.
    argv: The command.
    setup: Called before every run, untimed (e.g. to delete the previous
      run's output).
    env: Extra environment variables.
    expect_failure: The command is expected to fail (reported, not raised).
    results: Filled by `run_rounds`.
  """
  name: str
  argv: Sequence[str]
  setup: Optional[Callable[[], None]] = None
  env: Optional[Mapping[str, str]] = None
  expect_failure: bool = False
  results: list = dataclasses.field(default_factory=list)

  def successes(self) -> list[RunResult]:
    return [r for r in self.results if r.ok]

  def median_wall_s(self) -> Optional[float]:
    ok = self.successes()
    return statistics.median(r.wall_s for r in ok) if ok else None

  def median_rss_bytes(self) -> Optional[float]:
    ok = self.successes()
    return statistics.median(r.max_rss_bytes for r in ok) if ok else None

  def median_cpu_s(self) -> Optional[float]:
    """Median user+system CPU seconds: steadier than wall time when shared."""
    ok = self.successes()
    return statistics.median(r.user_s + r.sys_s for r in ok) if ok else None

  def summary(self) -> dict[str, Any]:
    """JSON-ready medians (None when every run failed)."""
    wall = self.median_wall_s()
    rss = self.median_rss_bytes()
    failed = [r for r in self.results if not r.ok]
    summary = {
        "runs": len(self.results),
        "failed_runs": len(failed),
        "wall_s": None if wall is None else round(wall, 3),
        "wall_s_all": [round(r.wall_s, 3) for r in self.results],
        "peak_rss_mib": None if rss is None else round(rss / 2**20, 1),
        "cpu_s": (None if self.median_cpu_s() is None else
                  round(self.median_cpu_s(), 3)),
    }
    if failed:
      summary["error"] = last_line(failed[-1].output_tail)
    return summary


def last_line(text: str, max_chars: int = 300) -> str:
  """The last non-empty line of `text`, shortened."""
  lines = [l for l in text.strip().splitlines() if l.strip()]
  return lines[-1][-max_chars:] if lines else ""


def python_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
  """Environment for child Pythons: repo root on PYTHONPATH, quiet TF logs."""
  env = dict(os.environ)
  paths = [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                         if p]
  env["PYTHONPATH"] = os.pathsep.join(paths)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if extra:
    env.update(extra)
  return env


def python_module(module: str, *args: str) -> list[str]:
  """A command running `module` (e.g. "python.merge.merge") on this Python."""
  return [sys.executable, "-m", module, *args]


def run_process(argv: Sequence[str], *,
                env: Optional[Mapping[str, str]] = None,
                timeout_s: float = 3600.0, tail_lines: int = 30) -> RunResult:
  """Runs `argv` to completion and measures it.

  CPU time comes from `os.wait4`, which returns the child's own resource
  usage. Peak RSS does not: Linux keeps `ru_maxrss` across exec, and a child
  that Python spawns (vfork + exec) starts with the benchmark's own peak
  RSS, so a small contender would report the harness's memory (a child that
  runs `pass` under a parent that once held 1.5 GiB reports 1.5 GiB). Peak
  RSS is the child's `VmHWM` instead, the high-water mark of its own address
  space (which exec replaces), read from /proc every `_RSS_POLL_S` while it
  runs; growth in its last few milliseconds is missed.

  Args:
    argv: The command as a list.
    env: Its full environment (default: `python_env()`).
    timeout_s: Killed (SIGKILL) after this many seconds; then returncode is
      -9.
    tail_lines: How many lines of output to keep.

  Returns:
    The RunResult.
  """
  with tempfile.TemporaryFile() as log:
    start = time.monotonic()
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        list(argv), stdout=log, stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else python_env(), cwd=REPO_ROOT)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    peak = [0]
    exited = threading.Event()

    def sample():
      while True:
        peak[0] = max(peak[0], peak_rss_of_pid(proc.pid) or 0)
        if exited.wait(_RSS_POLL_S):
          return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
      _, status, usage = os.wait4(proc.pid, 0)
    finally:
      exited.set()
      timer.cancel()
      sampler.join()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    text = log.read().decode("utf-8", errors="replace")
  tail = "\n".join(text.splitlines()[-tail_lines:])
  return RunResult(wall_s=wall, max_rss_bytes=peak[0],
                   user_s=usage.ru_utime, sys_s=usage.ru_stime,
                   returncode=proc.returncode, output_tail=tail)


def run_rounds(contenders: Sequence[Contender], rounds: int, *,
               timeout_s: float = 3600.0,
               log: Callable[[str], None] = print) -> None:
  """Runs every contender once per round, rotating the order each round.

  Raises:
    BenchError: a contender not marked `expect_failure` failed (its output
      tail is in the message).
  """
  if rounds < 1:
    raise BenchError(f"rounds={rounds} must be at least 1.")
  n = len(contenders)
  for r in range(rounds):
    order = [contenders[(r + i) % n] for i in range(n)]
    for contender in order:
      if contender.setup:
        contender.setup()
      env = python_env(contender.env)
      result = run_process(contender.argv, env=env, timeout_s=timeout_s)
      contender.results.append(result)
      status = "ok" if result.ok else f"FAILED (exit {result.returncode})"
      log(f"  round {r + 1}/{rounds} {contender.name:<14} "
          f"{result.wall_s:8.2f} s {result.max_rss_bytes / 2**20:9.1f} MiB "
          f"{status}")
      if not result.ok and not contender.expect_failure:
        raise BenchError(
            f"{contender.name} failed (exit {result.returncode}): "
            f"{' '.join(contender.argv)}\n{result.output_tail}")


def ratio(numerator: Optional[float],
          denominator: Optional[float]) -> Optional[float]:
  """numerator / denominator rounded to 3 places, None if either is missing."""
  if numerator is None or not denominator:
    return None
  return round(numerator / denominator, 3)


def remove(path: str) -> None:
  """Deletes a file or directory tree if it exists."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def user_path(path: Optional[str]) -> Optional[str]:
  """`path` resolved as `cli.user_path` does, `~` expanded, made absolute."""
  if not path:
    return path
  return os.path.abspath(cli.user_path(os.path.expanduser(path)))


def in_existing_dir(path: Optional[str]) -> bool:
  """Flag validator: unset, or a file whose directory exists."""
  return not path or os.path.isdir(os.path.dirname(user_path(path)))


def run_benchmark(name: str, run: Callable[[str], Mapping[str, Any]], *,
                  parent_dir: Optional[str], keep: bool,
                  errors: tuple = (BenchError,)) -> None:
  """Runs `run(work_dir)` in a fresh scratch directory, prints its summary.

  The scratch directory is new even inside `parent_dir` (so only it is
  deleted afterwards) and is removed unless `keep`.

  Args:
    name: The benchmark's name, for messages and the directory prefix.
    run: Takes the scratch directory, returns the JSON summary.
    parent_dir: Where to create the scratch directory (None: the temp dir).
    keep: Keep the scratch directory and say where it is.
    errors: Exception types that mean the benchmark failed; they end the
      process with a one-line message instead of a traceback.
  """
  if parent_dir:
    os.makedirs(parent_dir, exist_ok=True)
  work_dir = os.path.abspath(tempfile.mkdtemp(prefix=f"{name}_",
                                              dir=parent_dir))
  try:
    summary = run(work_dir)
  except errors as e:
    raise SystemExit(f"{name} failed: {e}") from e
  finally:
    if keep:
      print(f"Kept {work_dir}", flush=True)
    else:
      remove(work_dir)
  print_summary(summary)


def machine_description() -> str:
  """CPU model, core count, memory and Python/OS, for the report."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  mem = ""
  try:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    mem = f", {pages / 2**30:.0f} GiB RAM"
  except (ValueError, OSError):
    pass
  return (f"{cpu}, {os.cpu_count()} cores{mem}, Linux {platform.release()}, "
          f"Python {platform.python_version()}")


def fmt(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
  """Formats a number for a table cell ('-' when missing)."""
  if value is None:
    return "-"
  return f"{value:.{digits}f}{suffix}"


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub Markdown table."""
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def print_summary(summary: Mapping[str, Any]) -> str:
  """Prints the one-line JSON summary (the last line of stdout).

  Returns:
    The line printed.
  """
  if SUMMARY_KEY not in summary:
    raise BenchError(f"a summary needs a {SUMMARY_KEY!r} key: {summary}")
  line = json.dumps(summary, sort_keys=True)
  print(line, flush=True)
  return line


def peak_rss_of_pid(pid: int) -> Optional[int]:
  """VmHWM (peak RSS) of a live process, in bytes; None if unreadable."""
  try:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def percentile(values: Sequence[float], p: float) -> Optional[float]:
  """python/common/stats's nearest-rank percentile; None if empty."""
  return stats.percentile(values, p) if values else None


def latency_summary(blocks: Sequence[Sequence[float]]) -> dict[str, Any]:
  """Pooled and per-block statistics of latencies measured in blocks.

  Args:
    blocks: Latencies in seconds, one sequence per block.

  Returns:
    {"requests", "blocks", "p50_ms", "p99_ms", "mean_ms" (pooled over every
    request), "block_p99_ms" (the median over blocks of each block's p99),
    "block_p99_ms_all"}, in milliseconds rounded to 3 places.

  Raises:
    BenchError: there is no latency at all, or a block is empty.
  """
  if not blocks or any(not block for block in blocks):
    raise BenchError(
        f"latency_summary needs non-empty blocks; got {len(blocks)} blocks "
        f"of sizes {[len(block) for block in blocks]}.")
  pooled = [value for block in blocks for value in block]
  block_p99 = [percentile(block, 99) * 1000 for block in blocks]
  return {
      "requests": len(pooled),
      "blocks": len(blocks),
      "p50_ms": round(percentile(pooled, 50) * 1000, 3),
      "p99_ms": round(percentile(pooled, 99) * 1000, 3),
      "mean_ms": round(statistics.fmean(pooled) * 1000, 3),
      "block_p99_ms": round(statistics.median(block_p99), 3),
      "block_p99_ms_all": [round(v, 3) for v in block_p99],
  }


def paired_block_ratio(numerator: Sequence[Sequence[float]],
                       denominator: Sequence[Sequence[float]],
                       p: float) -> dict[str, Any]:
  """Per-block ratios of the p-th percentiles of two paired measurements.

  Block i of `numerator` and block i of `denominator` must have been
  measured at the same time (e.g. requests alternating one by one), so each
  ratio compares the two under the same machine load; the median over blocks
  is then robust to a burst of noise that inflates a pooled tail percentile.

  Args:
    numerator: Latencies per block.
    denominator: Latencies per block, paired with `numerator`'s.
    p: The percentile (0-100).

  Returns:
    {"median", "min", "max", "all"}: the ratios rounded to 3 places.

  Raises:
    BenchError: the block counts differ, or there are no blocks.
  """
  if len(numerator) != len(denominator) or not numerator:
    raise BenchError(
        f"paired_block_ratio needs the same number of blocks on both sides; "
        f"got {len(numerator)} and {len(denominator)}.")
  ratios = [percentile(n, p) / percentile(d, p)
            for n, d in zip(numerator, denominator)]
  return {"median": round(statistics.median(ratios), 3),
          "min": round(min(ratios), 3), "max": round(max(ratios), 3),
          "all": [round(r, 3) for r in ratios]}


def _log_time(line: str) -> Optional[datetime.datetime]:
  match = _ABSL_TIME.match(line)
  if match:
    day, clock = match.group(1), match.group(2)
  else:
    match = _TFS_TIME.match(line)
    if not match:
      return None
    day, clock = match.group(1) + match.group(2), match.group(3)
  return datetime.datetime.strptime(f"{day} {clock}", "%m%d %H:%M:%S.%f")


def load_seconds_from_log(log_text: str, model: str) -> Optional[float]:
  """Seconds between "Loading servable" and "Successfully loaded" of `model`.

  Both the project server and tensorflow_model_server log these lines with
  microsecond timestamps; this is the load (restore + warmup) alone, without
  process start-up.

  Returns:
    The seconds for the first version of `model` loaded, or None if the log
    lacks either line.
  """
  start = end = None
  tag = f"{{name: {model} version:"
  for line in log_text.splitlines():
    if tag not in line:
      continue
    if start is None and "Loading servable" in line:
      start = _log_time(line)
    elif start is not None and "Successfully loaded servable" in line:
      end = _log_time(line)
      break
  if start is None or end is None:
    return None
  return (end - start).total_seconds()
