"""Runs every benchmark once at a tiny size and checks its JSON summary.

Benchmarks are `bazel run` targets that report figures and never assert
timings; this test only keeps their code from rotting: each one must run to
completion as a process (exit 0), end with one well-formed JSON line, and
report the behaviour that does not depend on timing (identical answers, a
small saved_model.pb, bundles that load and answer).
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests.bench import bench_lib
from tests.bench import scale_plot

# Whole benchmark runs on 2 busy cores: generous, but finite.
_TIMEOUT_S = 600


def _run_bench(module: str, *flags: str) -> dict:
  """Runs `python -m module flags...`; returns its last-line JSON summary."""
  work_dir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  command = [sys.executable, "-m", module, f"--work_dir={work_dir}", *flags]
  result = subprocess.run(
      command, capture_output=True, text=True, timeout=_TIMEOUT_S,
      env=bench_lib.python_env(), cwd=bench_lib.REPO_ROOT, check=False)
  if result.returncode != 0:
    raise AssertionError(
        f"{' '.join(command)} exited with {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  lines = result.stdout.strip().splitlines()
  if not lines:
    raise AssertionError(f"{module} printed nothing; stderr:\n"
                         f"{result.stderr[-3000:]}")
  try:
    summary = json.loads(lines[-1])
  except json.JSONDecodeError as e:
    raise AssertionError(
        f"the last line of {module}'s output is not JSON: {lines[-1]!r}"
    ) from e
  if os.path.exists(work_dir) and os.listdir(work_dir):
    raise AssertionError(f"{module} left files in --work_dir={work_dir}: "
                         f"{os.listdir(work_dir)}")
  return summary


class RunProcessTest(absltest.TestCase):

  def test_peak_rss_is_the_childs_own_not_the_harness(self):
    # Linux carries ru_maxrss across exec, so a child spawned by a process
    # that holds 400 MiB would report 400 MiB through wait4.
    held = bytearray(400 << 20)
    for i in range(0, len(held), 4096):
      held[i] = 1
    small = bench_lib.run_process(
        [sys.executable, "-c", "import time; time.sleep(0.2)"])
    big = bench_lib.run_process([
        sys.executable, "-c",
        "import time\nx = bytearray(200 << 20)\n"
        "for i in range(0, len(x), 4096): x[i] = 1\ntime.sleep(0.2)"])
    del held
    self.assertEqual((small.returncode, big.returncode), (0, 0))
    self.assertLess(small.max_rss_bytes, 100 << 20)
    self.assertGreater(small.max_rss_bytes, 0)
    self.assertGreater(big.max_rss_bytes, 200 << 20)
    self.assertLess(big.max_rss_bytes, 300 << 20)


class LoadSecondsFromLogTest(absltest.TestCase):

  def test_project_server_log(self):
    log = "\n".join([
        "I1122 03:09:50.000000 1 model_manager.py:510] Loading servable: "
        "{name: other version: 1} from /m/other/1",
        "I1122 03:09:56.250000 1 model_manager.py:510] Loading servable: "
        "{name: m version: 3} from /m/m/3",
        "I1122 03:09:58.000000 1 model_manager.py:542] Successfully loaded "
        "servable version {name: other version: 1}",
        "I1122 03:09:58.750000 1 model_manager.py:542] Successfully loaded "
        "servable version {name: m version: 3}",
    ])
    self.assertAlmostEqual(bench_lib.load_seconds_from_log(log, "m"), 2.5)
    self.assertAlmostEqual(bench_lib.load_seconds_from_log(log, "other"), 8)

  def test_tensorflow_model_server_log_across_midnight(self):
    log = ("2025-11-21 23:59:59.500000: I tensorflow_serving/core/loader_"
           "harness.cc:71] Loading servable version {name: m version: 1}\n"
           "2025-11-22 00:00:00.750000: I tensorflow_serving/core/loader_"
           "harness.cc:98] Successfully loaded servable version {name: m "
           "version: 1}\n")
    self.assertAlmostEqual(bench_lib.load_seconds_from_log(log, "m"), 1.25)

  def test_not_loaded(self):
    log = ("I1122 03:09:56.250000 1 x.py:1] Loading servable: {name: m "
           "version: 1} from /m/1\n")
    self.assertIsNone(bench_lib.load_seconds_from_log(log, "m"))
    self.assertIsNone(bench_lib.load_seconds_from_log("", "m"))


class LatencyStatsTest(absltest.TestCase):

  def test_latency_summary_pools_and_takes_the_median_block_p99(self):
    # Three blocks of 1..100 ms; the last one has a burst of 1 s requests.
    steady = [ms / 1000 for ms in range(1, 101)]
    burst = steady[:95] + [1.0] * 5
    summary = bench_lib.latency_summary([steady, steady, burst])
    self.assertEqual(summary["requests"], 300)
    self.assertEqual(summary["blocks"], 3)
    pooled = steady + steady + burst
    self.assertAlmostEqual(summary["p50_ms"],
                           bench_lib.percentile(pooled, 50) * 1000, places=3)
    # The burst sets the pooled p99 (1 s), not the median block p99 (99 ms).
    self.assertEqual(summary["p99_ms"], 1000.0)
    # Nearest rank (python/common/stats): the 99th of 100 values, 99 ms.
    self.assertAlmostEqual(summary["block_p99_ms"], 99.0, places=3)
    self.assertEqual(summary["block_p99_ms_all"], [99.0, 99.0, 1000.0])

  def test_latency_summary_rejects_empty_blocks(self):
    with self.assertRaisesRegex(bench_lib.BenchError,
                                r"non-empty blocks; got 2 blocks of sizes "
                                r"\[1, 0\]"):
      bench_lib.latency_summary([[0.1], []])

  def test_paired_block_ratio(self):
    base = [[0.001 * i for i in range(1, 101)]] * 3
    slower = [[v * f for v in block] for block, f in zip(base, (1.1, 0.9, 2))]
    result = bench_lib.paired_block_ratio(slower, base, 99)
    self.assertEqual(result["all"], [1.1, 0.9, 2.0])
    self.assertEqual(result["median"], 1.1)
    self.assertEqual((result["min"], result["max"]), (0.9, 2.0))

  def test_paired_block_ratio_needs_paired_blocks(self):
    with self.assertRaisesRegex(bench_lib.BenchError,
                                "same number of blocks.*got 2 and 1"):
      bench_lib.paired_block_ratio([[1.0], [1.0]], [[1.0]], 99)


class BenchSmokeTest(absltest.TestCase):

  def assert_positive_figures(self, contender: dict, name: str) -> None:
    self.assertEqual(contender["failed_runs"], 0, msg=name)
    self.assertGreater(contender["wall_s"], 0, msg=name)
    self.assertGreater(contender["peak_rss_mib"], 0, msg=name)

  def test_merge_bench(self):
    summary = _run_bench("tests.bench.merge_bench", "--graphs=2",
                         "--total_mb=2", "--nodes=200", "--rounds=1")
    self.assertEqual(summary["benchmark"], "merge")
    self.assertEqual(summary["graphs"], 2)
    self.assertGreaterEqual(summary["nodes"], 200)
    self.assertCountEqual(summary["contenders"],
                          ["floor", "seed", "ours", "ours_noverify",
                           "replace_incremental", "replace_full",
                           "replace_incremental_noverify",
                           "replace_full_noverify"])
    for name, contender in summary["contenders"].items():
      self.assert_positive_figures(contender, name)
      self.assertEqual(contender["runs"], 1, msg=name)
    self.assertTrue(summary["targets_met"]["replace_answers_identical"])
    for key in ("ours_vs_floor_wall", "ours_noverify_vs_floor_wall",
                "ours_vs_seed_rss", "replace_incremental_vs_full_wall",
                "replace_incremental_vs_full_rss"):
      self.assertGreater(summary["ratios"][key], 0, msg=key)
    self.assertEqual(summary["answers"],
                     {"signatures": 2, "identical": 2, "max_abs_diff": 0.0,
                      "differing": []})
    self.assertIs(summary["targets_met"]["answers_identical_to_seed"], True)

  def test_scale_bench(self):
    csv_path = os.path.join(absltest.get_default_test_tmpdir(), "scale.csv")
    png_path = os.path.join(absltest.get_default_test_tmpdir(), "scale.png")
    summary = _run_bench("tests.bench.scale_bench", "--sizes_gib=0.004",
                         "--graph_gib=0.002", "--nodes_per_graph=100",
                         f"--csv={csv_path}", f"--png={png_path}")
    self.assertEqual(summary["benchmark"], "scale")
    [row] = summary["rows"]
    self.assertEqual(row["graphs"], 2)
    self.assertGreater(row["ours_wall_s"], 0)
    self.assertGreater(row["ours_noverify_rss_mib"], 0)
    # Under 2 GiB the seed approach works too.
    self.assertIs(row["seed_ok"], True)
    self.assertLess(row["saved_model_pb_mib"], 16)
    self.assertIs(row["server_ok"], True)
    self.assertGreater(row["server_load_s"], 0)
    self.assertIs(summary["checks"]["saved_model_pb_under_16mib"], True)
    self.assertIs(summary["checks"]["server_loads_all"], True)
    # Under Bazel the runfiles hold //cc/verify, so the C++ load must run.
    if os.path.exists(os.path.join(bench_lib.REPO_ROOT, "cc/verify/verify")):
      self.assertIs(row["verifier_ok"], True)
      self.assertIs(summary["checks"]["verifier_loads_all"], True)
    with open(csv_path, encoding="utf-8") as f:
      header, *rows = f.read().strip().splitlines()
    self.assertTrue(header.startswith("size_gib,graphs,"))
    self.assertLen(rows, 1)
    # The CSV reads back as the printed row (what replot_scale plots).
    self.assertEqual(scale_plot.read_csv(csv_path), [row])
    # The plot: a real PNG of the documented size, not an empty canvas.
    self.assertEqual(summary["png"], png_path)
    with open(png_path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertEqual(scale_plot.png_size(png_path),
                     (scale_plot.WIDTH_PX, scale_plot.HEIGHT_PX))
    self.assertGreater(os.path.getsize(png_path), 20_000)

  def test_serving_bench(self):
    summary = _run_bench("tests.bench.serving_bench", "--graphs=2",
                         "--graph_mb=0.1", "--nodes_per_graph=50",
                         "--requests=5", "--blocks=2", "--warmup_requests=2",
                         "--load_rounds=1")
    self.assertEqual(summary["benchmark"], "serving")
    for name in ("alone", "merged"):
      latency = summary["latency"][name]
      self.assertEqual(latency["requests"], 10, msg=name)
      self.assertEqual(latency["blocks"], 2, msg=name)
      self.assertLen(latency["block_p99_ms_all"], 2, msg=name)
      self.assertGreater(latency["p50_ms"], 0, msg=name)
      self.assertGreaterEqual(latency["p99_ms"], latency["p50_ms"], msg=name)
      self.assertGreaterEqual(latency["p99_ms"], latency["block_p99_ms"],
                              msg=name)
      self.assertGreater(summary["load"][name]["load_s"], 0, msg=name)
    ratios = summary["ratios"]
    self.assertGreater(ratios["p50_merged_vs_alone"], 0)
    self.assertGreater(ratios["load_merged_vs_alone"], 0)
    low, high = ratios["block_p99_merged_vs_alone_range"]
    self.assertBetween(ratios["block_p99_merged_vs_alone"], low, high)
    self.assertEqual(summary["latency_method"]["requests_per_block"], 5)
    self.assertLen(summary["latency_method"]["block_p99_ratios"], 2)

  def test_server_bench(self):
    summary = _run_bench("tests.bench.server_bench", "--concurrency=1,2",
                         "--seconds=0.5", "--floor_calls=20",
                         "--block_requests=7", "--warmup_requests=2",
                         "--dense_width=16")
    self.assertEqual(summary["benchmark"], "server")
    self.assertCountEqual(summary["models"], ["half_plus_two", "dense"])
    for model, result in summary["models"].items():
      for floor in ("callable", "grpc_empty_prediction_service"):
        self.assertEqual(result["floors"][floor]["requests"], 20,
                         msg=(model, floor))
        self.assertGreater(result["floors"][floor]["p50_ms"], 0,
                           msg=(model, floor))
      self.assertCountEqual(result["servers"],
                            ["python/serve", "python/serve --enable_batching"])
      for label, by_concurrency in result["servers"].items():
        self.assertEqual(
            result["in_turns_concurrency_1"][label]["requests"], 20)
        self.assertCountEqual(by_concurrency, ["1", "2"], msg=label)
        for stats in by_concurrency.values():
          self.assertGreater(stats["requests"], 0, msg=label)
          self.assertGreater(stats["throughput_rps"], 0, msg=label)
        self.assertGreater(result["overhead_p50_vs_floors"][label], 0)
      self.assertCountEqual(result["batching_gain_rps"], ["1", "2"])
      diffs = result["max_abs_diff_vs_sequential"]
      self.assertCountEqual(diffs, result["servers"])
      if model == "half_plus_two":  # Row by row: batching changes no bit.
        self.assertEqual(set(diffs.values()), {0.0}, msg=diffs)
      else:  # GEMM kernels may round another batch size differently.
        self.assertLess(max(diffs.values()), 1e-4, msg=diffs)

  def test_rest_bench(self):
    summary = _run_bench("tests.bench.rest_bench", "--requests=10",
                         "--blocks=2", "--warmup_requests=2",
                         "--model_mb=0.1", "--nodes=50")
    self.assertEqual(summary["benchmark"], "rest")
    for protocol in ("grpc", "rest"):
      stats = summary["protocols"][protocol]
      self.assertEqual(stats["requests"], 20, msg=protocol)
      self.assertGreater(stats["p50_ms"], 0, msg=protocol)
    self.assertLen(summary["block_p99_ratio"]["all"], 2)

  def test_hotswap_bench(self):
    summary = _run_bench("tests.bench.hotswap_bench", "--graphs=2",
                         "--graph_mb=0.1", "--nodes_per_graph=50",
                         "--concurrency=2", "--publishes=1",
                         "--interval_s=0", "--settle_s=3")
    self.assertEqual(summary["benchmark"], "hotswap")
    self.assertEqual(summary["failed"], 0, msg=summary["failures"])
    self.assertGreater(summary["requests"], 0)
    # The load ran before and after the swap (it waits for version 2).
    self.assertCountEqual(summary["versions_seen"], ["1", "2"])
    self.assertLen(summary["publish_s"], 1)
    self.assertIs(summary["targets_met"]["zero_failed_requests"], True)
    # Requests and RSS samples in both phases, one swap window.
    for phase in ("steady", "swap"):
      self.assertGreater(summary[phase]["requests"], 0, msg=phase)
      self.assertGreater(summary[phase]["max_rss_mib"], 0, msg=phase)
    self.assertLen(summary["swap"]["seconds"], 1)
    self.assertGreater(summary["swap_vs_steady_p99"], 0)
    self.assertGreater(summary["server_peak_rss_mib"], 0)


if __name__ == "__main__":
  absltest.main()
