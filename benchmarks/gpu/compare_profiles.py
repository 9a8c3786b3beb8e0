#!/usr/bin/env python3
"""Side-by-side comparison of two op profiles (schema pipet-op-profile-v1):
ours from `bench_step_time --profile`, the reference from
`hf_step_time.py --profile` (or any two such files).

    python3 benchmarks/gpu/compare_profiles.py OURS.ops.json REFERENCE.ops.json [--top 15]

Prints, per training step (each profile's sums divided by its profiled step
count):
  1. time per op category: GEMM/matmul/conv, attention, layer_norm, gelu,
     softmax/cross-entropy, dropout, elementwise/copy/cast, optimizer,
     reductions/norm, other, plus device time no recorded op launched;
  2. the --top ops with the largest |ours - reference| difference, with their
     calls per step on both sides;
  3. the same for kernels, when both profiles hold device kernels.

The metric is each op's self device time (the kernels it launched itself)
when both profiles have device time (--metric auto, the default), else its
self CPU time. Categories come from op names, first matching rule wins (see
CATEGORIES); `_foreach_norm` (gradient clipping's norms) counts as a
reduction, the other `_foreach_*` ops as optimizer.

Exit status: 0 printed, 2 bad arguments or a file that is not such a profile.
"""

import argparse
import json
import re
import sys

from op_profile import aligned_table

SCHEMA = "pipet-op-profile-v1"

# (category, pattern searched in the lower-cased op name); first match wins.
CATEGORIES = [
    ("attention", r"attention|flash|sdpa|fmha"),
    ("layer_norm", r"layer_norm"),
    ("gelu", r"gelu"),
    ("softmax/cross-entropy", r"softmax|nll_loss|cross_entropy"),
    ("dropout", r"dropout|bernoulli"),
    ("reductions/norm", r"norm|^aten::(sum|mean|amax|amin|max|min|var|std|prod|all|any|argmax|argmin)$"),
    ("optimizer", r"adam|_foreach_|optimizer|sgd"),
    ("gemm/matmul/conv",
     r"^aten::(mm|addmm|bmm|baddbmm|addbmm|matmul|linear|_scaled_mm|addmv|mv|dot|einsum)$"
     r"|conv|gemm|cublas"),
    ("elementwise/copy/cast",
     r"^aten::(add|mul|div|sub|rsub|neg|pow|sqrt|rsqrt|exp|log|tanh|sigmoid|clamp|addcmul|addcdiv"
     r"|lerp|abs|sign|reciprocal|maximum|minimum|where|masked_fill|fill|zero|copy|_to_copy|to"
     r"|clone|contiguous|cat|stack|zeros|ones|full|zeros_like|ones_like|eq|ne|lt|gt|le|ge"
     r"|logical_\w+|bitwise_\w+|_local_scalar_dense|index\w*|scatter\w*|gather|embedding\w*)_?$"
     r"|elementwise|memcpy|memset"),
]
OTHER = "other"
UNATTRIBUTED = "(device time no op launched)"
CATEGORY_ORDER = ["gemm/matmul/conv", "attention", "layer_norm", "gelu", "softmax/cross-entropy",
                  "dropout", "elementwise/copy/cast", "optimizer", "reductions/norm", OTHER]
_COMPILED = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]


class ProfileError(Exception):
    """A file that is not a readable op profile."""


def category(name):
    lowered = name.lower()
    for label, pattern in _COMPILED:
        if pattern.search(lowered):
            return label
    return OTHER


def load_profile(path):
    """The profile in `path`, checked for the fields this script reads."""
    try:
        with open(path, encoding="utf-8") as source:
            profile = json.load(source)
    except OSError as error:
        raise ProfileError(f"{path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ProfileError(f"{path}: not JSON: {error}") from None
    if not isinstance(profile, dict) or profile.get("schema") != SCHEMA:
        raise ProfileError(f"{path}: not an op profile (schema is "
                           f"{profile.get('schema') if isinstance(profile, dict) else None!r}, "
                           f"expected {SCHEMA!r})")
    steps = profile.get("steps")
    if not isinstance(steps, int) or steps < 1:
        raise ProfileError(f"{path}: 'steps' must be an integer >= 1, got {steps!r}")
    rows = profile.get("rows")
    if not isinstance(rows, list):
        raise ProfileError(f"{path}: 'rows' must be a list")
    for index, row in enumerate(rows):
        for key, kind in (("name", str), ("kind", str), ("calls", int), ("self_cpu_us", (int, float)),
                          ("self_device_us", (int, float))):
            if not isinstance(row, dict) or not isinstance(row.get(key), kind):
                raise ProfileError(f"{path}: rows[{index}].{key} is missing or of the wrong type")
    if not isinstance(profile.get("totals"), dict):
        raise ProfileError(f"{path}: 'totals' must be an object")
    return profile


def choose_metric(requested, ours, reference):
    has_device = all(p["totals"].get("device_us", 0) > 0 for p in (ours, reference))
    if requested == "auto":
        return "self_device_us" if has_device else "self_cpu_us"
    if requested == "device" and not has_device:
        raise ProfileError("--metric device: a profile has no device time (profiled on the CPU?)")
    return "self_device_us" if requested == "device" else "self_cpu_us"


def per_step(profile, kind, metric):
    """{name: (ms per step, calls per step)} over the rows of `kind`."""
    steps = profile["steps"]
    out = {}
    for row in profile["rows"]:
        if row["kind"] == kind:
            ms, calls = out.get(row["name"], (0.0, 0.0))
            out[row["name"]] = (ms + row[metric] / 1000.0 / steps, calls + row["calls"] / steps)
    return out


def by_category(profile, metric):
    """{category: ms per step}; the device metric adds the unattributed time."""
    sums = {label: 0.0 for label in CATEGORY_ORDER}
    for name, (ms, _) in per_step(profile, "op", metric).items():
        sums[category(name)] += ms
    if metric == "self_device_us":
        sums[UNATTRIBUTED] = profile["totals"].get("unattributed_device_us", 0.0) / 1000.0 / profile["steps"]
    return sums


def _ms(value):
    return f"{value:.3f}"


def _signed(value):
    return f"{value:+.3f}"


def _share(part, whole):
    return f"{100.0 * part / whole:.1f}" if whole > 0 else "-"


def category_table(ours, reference, metric):
    mine, theirs = by_category(ours, metric), by_category(reference, metric)
    total_mine, total_theirs = sum(mine.values()), sum(theirs.values())
    rows = []
    for label in mine:
        a, b = mine[label], theirs.get(label, 0.0)
        rows.append([label, _ms(a), _ms(b), _signed(a - b), _share(a, total_mine), _share(b, total_theirs)])
    rows.append(["total", _ms(total_mine), _ms(total_theirs), _signed(total_mine - total_theirs),
                 "100.0", "100.0"])
    return aligned_table(["category", "ours ms/step", "ref ms/step", "ours-ref ms", "ours %", "ref %"], rows)


def difference_table(ours, reference, kind, metric, top):
    """The `top` names of `kind` by |ours - reference|, or None when one side has none."""
    mine, theirs = per_step(ours, kind, metric), per_step(reference, kind, metric)
    if not mine or not theirs:
        return None
    names = set(mine) | set(theirs)
    differences = []
    for name in names:
        a, ca = mine.get(name, (0.0, 0.0))
        b, cb = theirs.get(name, (0.0, 0.0))
        if a or b:
            differences.append((abs(a - b), name, a, b, ca, cb))
    differences.sort(key=lambda d: (-d[0], d[1]))
    rows = []
    for _, name, a, b, ca, cb in differences[:top]:
        shown = name if len(name) <= 80 else name[:77] + "..."
        rows.append([shown, category(name), _ms(a), _ms(b), _signed(a - b), f"{ca:g}", f"{cb:g}"])
    return aligned_table([kind, "category", "ours ms/step", "ref ms/step", "ours-ref ms",
                    "ours calls/step", "ref calls/step"], rows)


def describe(tag, profile):
    totals = profile["totals"]
    steps = profile["steps"]
    text = (f"{tag}: {profile.get('label', '?')} ({profile.get('source', '?')}, torch "
            f"{profile.get('torch_version', '?')}, {profile.get('device', '?')}); {steps} steps, "
            f"{profile.get('wall_ms_per_step', 0.0):.2f} ms/step wall under the profiler; self CPU "
            f"{totals.get('self_cpu_us', 0.0) / 1000.0 / steps:.3f} ms/step")
    if totals.get("device_us", 0) > 0:
        text += f", device {totals['device_us'] / 1000.0 / steps:.3f} ms/step"
    return text


def compare(ours, reference, metric, top):
    """The whole comparison as text."""
    what = "self device time" if metric == "self_device_us" else "self CPU time"
    parts = [describe("ours", ours), describe("ref ", reference),
             f"metric: {what} per step (sums over each profile's steps / its step count)\n",
             "by category:", category_table(ours, reference, metric)]
    for kind, title in (("op", "ops"), ("kernel", "kernels")):
        table = difference_table(ours, reference, kind, metric, top)
        if table is not None:
            parts += [f"top {top} {title} by |ours - ref| ({what}, ms/step):", table]
    return "\n".join(parts)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ours", help="our profile (bench_step_time --profile: *.ops.json)")
    parser.add_argument("reference", help="the reference profile (hf_step_time.py --profile)")
    parser.add_argument("--top", type=int, default=15, help="ops/kernels listed by difference (default 15)")
    parser.add_argument("--metric", choices=("auto", "device", "cpu"), default="auto",
                        help="self device time, self CPU time, or device when both have it (default)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        ours, reference = load_profile(args.ours), load_profile(args.reference)
        metric = choose_metric(args.metric, ours, reference)
    except ProfileError as error:
        print(f"compare_profiles: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(compare(ours, reference, metric, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
