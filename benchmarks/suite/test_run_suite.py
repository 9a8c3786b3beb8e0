#!/usr/bin/python3
"""Tests of the benchmark suite harness (ctest: suite_harness, label suite).

    /usr/bin/python3 benchmarks/suite/test_run_suite.py --build BUILD_DIR

The figure logic on hand-made metrics, the error paths, and the `micro`
suite end to end through the real engine under mpirun (2 ranks, 2
configurations, 2 short epochs). Exits 22 (skipped) without matplotlib.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_suite  # noqa: E402

BUILD = None


def event(kind, **fields):
    return dict(event=kind, **fields)


def epoch_event(epoch, f, k, r, rate, seconds, elapsed):
    return event("epoch", epoch=epoch, step=epoch * 8, train_loss=1.0 / epoch, frozen_blocks=f, stages=k,
                 replicas=r, idle_ranks=0, samples_per_sec=rate, epoch_seconds=seconds,
                 elapsed_seconds=elapsed, cache_hit_rate=0.0)


class FiguresTest(unittest.TestCase):
    def events(self, accuracies, seconds):
        out = {"epoch": [], "eval": [], "transition": [], "summary": []}
        elapsed = 0.0
        for i, (acc, s) in enumerate(zip(accuracies, seconds), 1):
            elapsed += s
            out["epoch"].append(epoch_event(i, 0, 2, 2, 256 / s, s, elapsed))
            out["eval"].append(event("eval", epoch=i, step=i * 8, eval_loss=1.0 - acc, eval_accuracy=acc,
                                     elapsed_seconds=elapsed + 0.1))
        out["summary"].append(event("summary", steps=8 * len(seconds), train_loss=0.5,
                                    samples_per_sec=100.0, train_seconds=elapsed + 0.2))
        return out

    def test_speedups_by_time_to_finish_and_to_target(self):
        base = run_suite.figures_of(self.events([0.5, 0.7, 0.9], [2.0, 2.0, 2.0]), "base", 0.7)
        fast = run_suite.figures_of(self.events([0.6, 0.8, 0.9], [1.0, 1.0, 1.0]), "fast", 0.7)
        never = run_suite.figures_of(self.events([0.1, 0.2, 0.3], [1.0, 1.0, 1.0]), "never", 0.7)
        self.assertAlmostEqual(base["time_to_target"], 4.1)
        self.assertEqual(base["epochs_to_target"], 2)
        self.assertAlmostEqual(fast["time_to_target"], 2.1)
        self.assertIsNone(never["time_to_target"])
        results = {"base": base, "fast": fast, "never": never}
        run_suite.add_speedups(results, "base", 0.7)
        self.assertAlmostEqual(results["base"]["speedup"], 1.0)
        self.assertAlmostEqual(results["fast"]["speedup"], 4.1 / 2.1)
        self.assertIsNone(results["never"]["speedup"])
        run_suite.add_speedups(results, "base", None)
        self.assertAlmostEqual(results["fast"]["speedup"], 6.2 / 3.2)
        self.assertAlmostEqual(results["fast"]["final_accuracy"], 0.9)
        self.assertEqual([e["samples_per_sec"] for e in fast["epochs"]], [256.0, 256.0, 256.0])
        run_suite.add_speedups(results, "base", 0.7)
        labels = {n: n for n in results}
        table = run_suite.table_markdown("t", {}, ["base", "fast", "never"], results, labels, 0.7,
                                         {"fast": 2.83})
        self.assertIn("| fast | 0 0 0 | 2x2 2x2 2x2 | 256, 256, 256 | 100 | 2.10 | 0.900 | 1.95x | 2.83x |", table)
        self.assertIn("not reached", table)

    def test_repeats_report_the_fastest_run(self):
        runs = [self.events([0.9], [t]) for t in (3.0, 1.0, 2.0)]
        figures = [run_suite.figures_of(r, "x", None) for r in runs]
        chosen = run_suite.fastest_run(figures, "train_seconds")
        self.assertAlmostEqual(chosen["train_seconds"], 1.2)
        self.assertAlmostEqual(chosen["epochs"][0]["epoch_seconds"], 1.0)
        self.assertEqual([r["train_seconds"] for r in chosen["repeats"]], [3.2, 1.2, 2.2])
        self.assertEqual(run_suite.time_cell(chosen, "train_seconds"), "1.20 (1.20-3.20)")
        # A run that never reached the target ranks last.
        never = run_suite.figures_of(self.events([0.1], [0.5]), "x", 0.5)
        reached = run_suite.figures_of(self.events([0.9], [4.0]), "x", 0.5)
        self.assertAlmostEqual(run_suite.fastest_run([never, reached], "time_to_target")["time_to_target"], 4.1)

    def test_missing_figure_names_the_key(self):
        events = self.events([0.5], [1.0])
        del events["epoch"][0]["epoch_seconds"]
        with self.assertRaisesRegex(run_suite.SuiteError, "epoch_seconds"):
            run_suite.figures_of(events, "x", None)

    def test_suite_file_errors_name_the_place(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "bad.json"
            bad.write_text('{"s": {\n "ranks": 2,,\n}}')
            with self.assertRaisesRegex(run_suite.SuiteError, r"bad\.json:2:"):
                run_suite.load_suites(bad)
        suites = {"s": {"ranks": 2, "epochs": 1, "configurations": [{"name": "a"}], "rank": 3}}
        with self.assertRaisesRegex(run_suite.SuiteError, "suite 's': unknown key 'rank'"):
            run_suite.check_suite(suites, "s", "f.json")
        suites = {"s": {"ranks": 2, "epochs": 1, "configurations": [{"name": "a"}, {"name": "a"}]}}
        with self.assertRaisesRegex(run_suite.SuiteError, r"configurations\[1\]: configuration 'a' is listed twice"):
            run_suite.check_suite(suites, "s", "f.json")
        with self.assertRaisesRegex(run_suite.SuiteError, "no suite 'x'; suites are s"):
            run_suite.check_suite(suites, "x", "f.json")
        # The shipped suites are valid.
        shipped = run_suite.load_suites(run_suite.DEFAULT_SUITES)
        for name in shipped:
            run_suite.check_suite(shipped, name, "suites.json")
        self.assertEqual(run_suite.set_value_text(False), "false")
        self.assertEqual(run_suite.set_value_text([3, 4]), "[3,4]")


def run_harness(*args):
    return subprocess.run([sys.executable, str(HERE / "run_suite.py"), *args], capture_output=True, text=True,
                          timeout=300)


class EndToEndTest(unittest.TestCase):
    def test_missing_binary_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_harness("--suite", "micro", "--build", tmp + "/nowhere", "--out", tmp + "/out")
        self.assertEqual(result.returncode, run_suite.EXIT_ENVIRONMENT, result.stderr)
        self.assertIn("nowhere/runtime/app/pipetransformer not found", result.stderr)

    def test_a_failing_run_names_its_configuration_and_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_harness("--suite", "micro", "--build", BUILD, "--out", tmp, "--set", "train.lr=-1")
        self.assertEqual(result.returncode, run_suite.EXIT_RUN_FAILED, result.stderr)
        self.assertIn("configuration 'baseline' exited with status 2", result.stderr)
        self.assertIn("train.lr", result.stderr)

    def test_every_shipped_configuration_is_valid_for_the_engine(self):
        binary = str(Path(BUILD) / "runtime" / "app" / "pipetransformer")
        suites = run_suite.load_suites(run_suite.DEFAULT_SUITES)
        with tempfile.TemporaryDirectory() as tmp:
            empty = Path(tmp) / "empty.json"
            empty.write_text("{}")
            for name, suite in suites.items():
                for c in suite["configurations"]:
                    overrides = dict(suite.get("set", {}))
                    overrides.update(c.get("set", {}))
                    args = [binary, "config", "--validate", str(empty)]
                    for key, value in overrides.items():
                        args += ["--set", f"{key}={run_suite.set_value_text(value)}"]
                    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
                    self.assertEqual(result.returncode, 0, f"{name}/{c['name']}: {result.stderr[-500:]}")

    def test_micro_suite_end_to_end(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            result = run_harness("--suite", "micro", "--build", BUILD, "--out", str(out))
            self.assertEqual(result.returncode, 0, result.stderr[-3000:])
            suite = json.loads((out / "suite.json").read_text())
            self.assertEqual(suite["baseline"], "baseline")
            runs = {c["name"]: c for c in suite["configurations"]}
            self.assertEqual(sorted(runs), ["baseline", "elastic"])
            for r in runs.values():
                self.assertEqual(len(r["epochs"]), 2)
                self.assertEqual(len(r["evals"]), 2)
                for e in r["epochs"]:
                    self.assertGreater(e["samples_per_sec"], 0)
                    self.assertGreater(e["epoch_seconds"], 0)
                self.assertGreater(r["train_seconds"], 0)
                self.assertGreaterEqual(r["final_accuracy"], 0.0)
                self.assertLessEqual(r["final_accuracy"], 1.0)
                self.assertLess(r["epochs"][0]["elapsed_seconds"], r["epochs"][1]["elapsed_seconds"])
            self.assertAlmostEqual(runs["baseline"]["speedup"], 1.0)
            self.assertAlmostEqual(runs["elastic"]["speedup"],
                                   runs["baseline"]["train_seconds"] / runs["elastic"]["train_seconds"])
            # The elastic run froze 3 blocks after epoch 1 and went from 2x1 to 1x2.
            layout = [(e["frozen_blocks"], e["stages"], e["replicas"]) for e in runs["elastic"]["epochs"]]
            self.assertEqual(layout, [(0, 2, 1), (3, 1, 2)])
            self.assertEqual([(e["stages"], e["replicas"]) for e in runs["baseline"]["epochs"]], [(2, 1), (2, 1)])
            self.assertEqual(len(runs["elastic"]["transitions"]), 1)
            table = (out / "table.md").read_text()
            self.assertIn("| freeze + AutoPipe + AutoDP | 0 3 | 2x1 1x2 |", table)
            self.assertIn("| GPipe (baseline) | 0 0 | 2x1 2x1 |", table)
            for name in ("throughput.png", "speedup.png", "layout.png"):
                data = (out / name).read_bytes()
                self.assertTrue(data.startswith(b"\x89PNG"), name)
                self.assertGreater(len(data), 5000, name)
            self.assertTrue((out / "runs" / "elastic" / "metrics.jsonl").exists())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    args, rest = parser.parse_known_args()
    BUILD = str(Path(args.build).resolve())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("skipped: matplotlib is not installed (bash scripts/setup.sh installs python3-matplotlib)")
        sys.exit(22)
    unittest.main(argv=[sys.argv[0]] + rest)
