#!/usr/bin/env python3
"""Tests of the op-profile tools on the CPU: op_profile.py on a tiny PyTorch
training step, bench_step_time --profile on a tiny model (with
--bench-step-time PATH), and compare_profiles.py on the pair.

    /usr/bin/python3 benchmarks/gpu/test_op_profile.py [--bench-step-time BUILD/benchmarks/bench_step_time]

Exit 0 all passed, 1 a test failed, 22 no torch in this interpreter (skip).
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_profiles  # noqa: E402
import op_profile  # noqa: E402

SKIP = 22
BENCH_STEP_TIME = None  # set from the command line
STEPS = 3


def tiny_step(torch):
    """A training step of a small MLP with a LayerNorm and GELU, AdamW."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.LayerNorm(256),
                                torch.nn.Linear(256, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, labels = torch.randn(64, 128), torch.randint(0, 10, (64,))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # first-call costs outside the profile
    return step


def by_name(profile, kind="op"):
    return {row["name"]: row for row in profile["rows"] if row["kind"] == kind}


def run_compare(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = compare_profiles.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class OpProfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch
        cls.torch = torch
        torch.set_num_threads(1)
        cls.directory = tempfile.TemporaryDirectory(prefix="op-profile-test-")
        cls.prefix = os.path.join(cls.directory.name, "pytorch-tiny")
        cls.profile = op_profile.profile_step(torch, tiny_step(torch), STEPS, "cpu", cls.prefix,
                                              source="pytorch", label="tiny mlp")

    @classmethod
    def tearDownClass(cls):
        cls.directory.cleanup()

    def test_pytorch_profile_lists_the_step_ops_with_their_times(self):
        profile = self.profile
        self.assertEqual(profile["schema"], op_profile.SCHEMA)
        self.assertEqual((profile["steps"], profile["device"], profile["sort_key"]),
                         (STEPS, "cpu", "self_cpu_us"))
        rows = by_name(profile)
        # Two Linear layers: two addmm per forward; one LayerNorm, one GELU.
        for name, calls in (("aten::addmm", 2 * STEPS), ("aten::native_layer_norm", STEPS),
                            ("aten::gelu", STEPS), ("aten::native_layer_norm_backward", STEPS),
                            ("aten::gelu_backward", STEPS)):
            self.assertIn(name, rows)
            self.assertEqual(rows[name]["calls"], calls, name)
            self.assertGreater(rows[name]["total_cpu_us"], 0.0, name)
        self.assertGreater(rows["aten::addmm"]["self_cpu_us"], 0.0)
        self.assertNotIn("aten::is_leaf", rows)
        self.assertAlmostEqual(profile["totals"]["self_cpu_us"],
                               sum(r["self_cpu_us"] for r in profile["rows"] if r["kind"] == "op"))
        self.assertEqual(profile["totals"]["device_us"], 0.0)
        times = [r["self_cpu_us"] for r in profile["rows"]]
        self.assertEqual(times, sorted(times, reverse=True))
        with open(self.prefix + ".ops.json", encoding="utf-8") as source:
            self.assertEqual(json.load(source), profile)
        with open(self.prefix + ".ops.txt", encoding="utf-8") as source:
            text = source.read()
        self.assertTrue(text.startswith("op profile: tiny mlp (pytorch, torch "))
        self.assertIn("aten::addmm", text)
        self.assertNotIn("self device ms", text)
        self.assertNotIn("kind op = host side", text)  # the legend of the device columns
        with open(self.prefix + ".trace.json", encoding="utf-8") as source:
            trace = json.load(source)
        # The legacy profiler (torch 1.13 without Kineto) writes the array form.
        self.assertGreater(len(trace if isinstance(trace, list) else trace["traceEvents"]), 20)

    def test_build_profile_sorts_by_device_time_on_cuda_and_totals_split_ops_from_kernels(self):
        rows = [dict(name="aten::mm", kind="op", calls=2, self_cpu_us=5.0, total_cpu_us=9.0,
                     self_device_us=30.0),
                dict(name="aten::add", kind="op", calls=1, self_cpu_us=8.0, total_cpu_us=8.0,
                     self_device_us=4.0),
                dict(name="gemm", kind="kernel", calls=2, self_cpu_us=0.0, total_cpu_us=0.0,
                     self_device_us=30.0),
                dict(name="add_kernel", kind="kernel", calls=1, self_cpu_us=0.0, total_cpu_us=0.0,
                     self_device_us=4.0),
                dict(name="memset", kind="kernel", calls=1, self_cpu_us=0.0, total_cpu_us=0.0,
                     self_device_us=2.0)]
        profile = op_profile.build_profile(rows, "pytorch", "x", "cuda", "2.11", 2, 3.0)
        self.assertEqual([(r["kind"], r["name"]) for r in profile["rows"]],
                         [("op", "aten::mm"), ("kernel", "gemm"), ("op", "aten::add"),
                          ("kernel", "add_kernel"), ("kernel", "memset")])
        self.assertEqual(profile["totals"], dict(self_cpu_us=13.0, device_us=36.0,
                                                 op_self_device_us=34.0, unattributed_device_us=2.0))
        text = op_profile.format_table(profile, row_limit=2)
        self.assertIn("device total 0.036 ms (launched by ops 0.034 ms, unattributed 0.002 ms)", text)
        self.assertIn("(3 more rows in the JSON)", text)
        with self.assertRaises(ValueError):
            op_profile.build_profile(rows, "pytorch", "x", "cuda", "2.11", 0, 3.0)

    def test_categories(self):
        expected = {
            "aten::addmm": "gemm/matmul/conv", "aten::mm": "gemm/matmul/conv",
            "aten::convolution_backward": "gemm/matmul/conv",
            "aten::_flash_attention_forward": "attention",
            "aten::_scaled_dot_product_efficient_attention_backward": "attention",
            "aten::native_layer_norm_backward": "layer_norm", "aten::gelu_backward": "gelu",
            "aten::_log_softmax": "softmax/cross-entropy", "aten::nll_loss_forward": "softmax/cross-entropy",
            "aten::native_dropout": "dropout", "aten::_foreach_norm": "reductions/norm",
            "aten::linalg_vector_norm": "reductions/norm", "aten::sum": "reductions/norm",
            "aten::_fused_adamw_": "optimizer", "aten::_foreach_mul_": "optimizer",
            "aten::copy_": "elementwise/copy/cast", "aten::_to_copy": "elementwise/copy/cast",
            "aten::add_": "elementwise/copy/cast", "aten::mul": "elementwise/copy/cast",
            "Memcpy DtoH (Device -> Pageable)": "elementwise/copy/cast",
            "aten::view": "other", "cudaLaunchKernel": "other",
        }
        self.assertEqual({name: compare_profiles.category(name) for name in expected}, expected)

    def test_ours_profile_matches_the_schema_and_compares_with_pytorch(self):
        if BENCH_STEP_TIME is None:
            self.skipTest("no --bench-step-time given")
        directory = self.directory.name
        result = subprocess.run(
            [BENCH_STEP_TIME, "--no-pytorch", "--models", "vit-tiny", "--batch", "2", "--threads", "1",
             "--warmup", "1", "--iterations", "1", "--check-steps", "1", "--profile", directory,
             "--profile-steps", "2"], capture_output=True, text=True, timeout=240)
        self.assertEqual(result.returncode, 0, result.stderr)
        prefix = os.path.join(directory, "ours-vit-tiny-b2-t1")
        self.assertIn(f"op profile: {prefix}.ops.txt", result.stdout)
        with open(prefix + ".ops.json", encoding="utf-8") as source:
            ours = json.load(source)
        # The same schema on both sides: the same keys everywhere.
        self.assertEqual(set(ours), set(self.profile))
        self.assertEqual(set(ours["totals"]), set(self.profile["totals"]))
        self.assertEqual({frozenset(r) for r in ours["rows"]}, {frozenset(self.profile["rows"][0])})
        self.assertEqual((ours["source"], ours["steps"], ours["device"]), ("pipetransformer", 2, "cpu"))
        rows = by_name(ours)
        for name in ("aten::linear", "aten::addmm", "aten::native_layer_norm", "aten::gelu",
                     "aten::native_layer_norm_backward"):
            self.assertIn(name, rows)
            self.assertEqual(rows[name]["calls"] % 2, 0, name)  # the same ops in each step
            self.assertGreater(rows[name]["total_cpu_us"], 0.0, name)
        self.assertGreater(rows["aten::addmm"]["self_cpu_us"], 0.0)
        # Python renders our JSON into exactly the table we wrote: one format.
        with open(prefix + ".ops.txt", encoding="utf-8") as source:
            self.assertEqual(op_profile.format_table(ours), source.read())
        with open(prefix + ".trace.json", encoding="utf-8") as source:
            self.assertGreater(len(json.load(source)["traceEvents"]), 50)

        code, out, err = run_compare(prefix + ".ops.json", self.prefix + ".ops.json", "--top", "5")
        self.assertEqual(code, 0, err)
        self.assertIn("metric: self CPU time per step", out)
        categories = {line.split("  ")[0]: line.split() for line in out.splitlines()
                      if line.split("  ")[0] in compare_profiles.CATEGORY_ORDER + ["total"]}
        self.assertEqual(set(categories), set(compare_profiles.CATEGORY_ORDER) | {"total"})
        for label in ("gemm/matmul/conv", "layer_norm", "total"):
            ours_ms, ref_ms = float(categories[label][-5]), float(categories[label][-4])
            self.assertGreater(ours_ms, 0.0, label)
            self.assertGreater(ref_ms, 0.0, label)
        self.assertIn("top 5 ops by |ours - ref|", out)
        self.assertNotIn("kernels by", out)  # no device kernels on the CPU

    def test_compare_per_step_categories_and_errors(self):
        def write(name, profile):
            path = os.path.join(self.directory.name, name)
            with open(path, "w", encoding="utf-8") as out:
                json.dump(profile, out)
            return path

        def rows(*entries):
            return [dict(name=n, kind=k, calls=c, self_cpu_us=0.0, total_cpu_us=0.0, self_device_us=d)
                    for n, k, c, d in entries]

        ours = op_profile.build_profile(rows(("aten::mm", "op", 4, 4000.0), ("aten::copy_", "op", 8, 2000.0),
                                             ("gemm", "kernel", 4, 4000.0), ("copy", "kernel", 8, 2000.0),
                                             ("orphan", "kernel", 2, 1000.0)),
                                        "pipetransformer", "a", "cuda", "2.11", 2, 5.0)
        reference = op_profile.build_profile(rows(("aten::mm", "op", 8, 6000.0),
                                                  ("gemm", "kernel", 8, 6000.0)),
                                             "pytorch", "b", "cuda", "2.11", 4, 2.0)
        code, out, err = run_compare(write("a.json", ours), write("b.json", reference))
        self.assertEqual(code, 0, err)
        self.assertIn("metric: self device time per step", out)
        lines = {line.split("  ")[0]: line.split()[-5:] for line in out.splitlines()}
        # ours: 2 steps; reference: 4 steps.
        self.assertEqual(lines["gemm/matmul/conv"], ["2.000", "1.500", "+0.500", "57.1", "100.0"])
        self.assertEqual(lines["elementwise/copy/cast"], ["1.000", "0.000", "+1.000", "28.6", "0.0"])
        self.assertEqual(lines["(device time no op launched)"], ["0.500", "0.000", "+0.500", "14.3", "0.0"])
        self.assertEqual(lines["total"], ["3.500", "1.500", "+2.000", "100.0", "100.0"])
        op_lines = out.split("top 15 ops")[1].split("top 15 kernels")[0].splitlines()
        self.assertTrue(op_lines[3].startswith("aten::copy_"))  # the largest difference first
        self.assertEqual(op_lines[3].split()[-2:], ["4", "0"])  # calls per step
        self.assertIn("top 15 kernels by |ours - ref|", out)

        code, _, err = run_compare(write("a.json", ours), write("bad.json", {"schema": "other"}))
        self.assertEqual(code, 2)
        self.assertIn("bad.json: not an op profile", err)
        code, _, err = run_compare(write("a.json", ours), os.path.join(self.directory.name, "missing.json"))
        self.assertEqual(code, 2)
        self.assertIn("missing.json: cannot read", err)
        code, _, err = run_compare(write("a.json", ours), self.prefix + ".ops.json", "--metric", "device")
        self.assertEqual(code, 2)
        self.assertIn("has no device time", err)


def main():
    global BENCH_STEP_TIME
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-step-time", help="the bench_step_time binary to profile too")
    args, rest = parser.parse_known_args()
    BENCH_STEP_TIME = args.bench_step_time
    try:
        import torch  # noqa: F401
    except ImportError as error:
        print(f"test_op_profile: skipped: {error} ({sys.executable})", file=sys.stderr)
        return SKIP
    program = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
