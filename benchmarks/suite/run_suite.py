#!/usr/bin/python3
"""The speed-up breakdown: one named suite of configurations on the same
model, data and seeds, run one after another through the engine's command
line, compared against the suite's baseline.

    python3 benchmarks/suite/run_suite.py --suite cpu-tiny --build build --out output/suite-cpu-tiny

Writes into --out: suite.json (every figure of every run), table.md,
throughput.png (samples/s per epoch), speedup.png (the breakdown bar chart,
beside the published figures when the suite models the paper's setting),
layout.png (frozen blocks f, stages K and replicas R over training time), and
runs/<configuration>/ (the engine's output: metrics.jsonl, summary.json,
stdout.log, stderr.log, error.txt on failure).

The figures come from the engine's metrics file (metrics.jsonl: one JSON
object per event), never from its log text. Exit status: 0 done, 1 a run
failed (its configuration, exit status, error file and log tail are printed),
2 bad arguments or suite file, 3 missing binary or plotting library.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SUITES = Path(__file__).resolve().parent / "suites.json"

EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3

SUITE_KEYS = {"description", "ranks", "config", "set", "epochs", "seed", "mpirun_args", "env",
              "baseline", "models_paper", "published_source", "configurations", "timeout_s", "repeats"}
CONFIGURATION_KEYS = {"name", "label", "set", "published"}


class SuiteError(Exception):
    """A problem the user can fix; carries the exit status to end with."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Suite definitions


def load_suites(path):
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SuiteError(f"cannot read the suite file {path}: {e.strerror}")
    try:
        suites = json.loads(text)
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}")
    if not isinstance(suites, dict) or not suites:
        raise SuiteError(f"{path}: expected an object of named suites")
    return suites


def check_suite(suites, name, path):
    """The named suite, validated; every message names the file and key."""
    if name not in suites:
        raise SuiteError(f"{path}: no suite '{name}'; suites are {', '.join(sorted(suites))}")
    suite = suites[name]
    where = f"{path}: suite '{name}'"
    if not isinstance(suite, dict):
        raise SuiteError(f"{where}: expected an object")
    unknown = sorted(set(suite) - SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key '{unknown[0]}'; keys are {', '.join(sorted(SUITE_KEYS))}")
    for key in ("ranks", "epochs", "configurations"):
        if key not in suite:
            raise SuiteError(f"{where}: missing '{key}'")
    if not isinstance(suite["ranks"], int) or suite["ranks"] < 1:
        raise SuiteError(f"{where}: 'ranks' must be a positive integer, got {suite['ranks']!r}")
    if not isinstance(suite.get("repeats", 1), int) or suite.get("repeats", 1) < 1:
        raise SuiteError(f"{where}: 'repeats' must be a positive integer, got {suite['repeats']!r}")
    if not isinstance(suite["epochs"], int) or suite["epochs"] < 1:
        raise SuiteError(f"{where}: 'epochs' must be a positive integer, got {suite['epochs']!r}")
    configurations = suite["configurations"]
    if not isinstance(configurations, list) or not configurations:
        raise SuiteError(f"{where}: 'configurations' must be a non-empty list")
    seen = set()
    for i, c in enumerate(configurations):
        cwhere = f"{where}: configurations[{i}]"
        if not isinstance(c, dict) or "name" not in c:
            raise SuiteError(f"{cwhere}: expected an object with a 'name'")
        unknown = sorted(set(c) - CONFIGURATION_KEYS)
        if unknown:
            raise SuiteError(f"{cwhere}: unknown key '{unknown[0]}'; keys are {', '.join(sorted(CONFIGURATION_KEYS))}")
        if not isinstance(c["name"], str) or not c["name"] or not c["name"].replace("-", "").replace("_", "").isalnum():
            raise SuiteError(f"{cwhere}: 'name' must be letters, digits, '-' or '_', got {c['name']!r}")
        if c["name"] in seen:
            raise SuiteError(f"{cwhere}: configuration '{c['name']}' is listed twice")
        seen.add(c["name"])
        if not isinstance(c.get("set", {}), dict):
            raise SuiteError(f"{cwhere}: 'set' must be an object of config keys")
    baseline = suite.get("baseline", configurations[0]["name"])
    if baseline not in seen:
        raise SuiteError(f"{where}: baseline '{baseline}' is not one of the configurations")
    if not isinstance(suite.get("set", {}), dict):
        raise SuiteError(f"{where}: 'set' must be an object of config keys")
    return suite


def set_value_text(value):
    """A JSON value as the engine's --set expects it (key=value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# ---------------------------------------------------------------------------
# Running one configuration


def engine_command(binary, suite, configuration, run_dir, epochs, seed, extra_sets):
    overrides = dict(suite.get("set", {}))
    overrides.update(configuration.get("set", {}))
    overrides["train.epochs"] = epochs
    if seed is not None:
        overrides["train.seed"] = seed
    overrides["output.dir"] = str(run_dir)
    overrides.update(extra_sets)
    args = [str(binary), "--error-file", str(run_dir / "error.txt"), "train"]
    if suite.get("config"):
        config = Path(suite["config"])
        args += ["--config", str(config if config.is_absolute() else REPO / config)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={set_value_text(value)}"]
    ranks = suite["ranks"]
    if ranks > 1:
        mpirun = shutil.which("mpirun")
        if not mpirun:
            raise SuiteError("mpirun is not on PATH (install openmpi-bin: bash scripts/setup.sh)", EXIT_ENVIRONMENT)
        args = [mpirun, "-np", str(ranks)] + list(suite.get("mpirun_args", [])) + args
    return args, overrides


def tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_configuration(command, run_dir, env, timeout_s, name):
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the metrics file is appended to: start clean
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    with open(run_dir / "stdout.log", "wb") as out, open(run_dir / "stderr.log", "wb") as err:
        try:
            process = subprocess.run(command, stdout=out, stderr=err, env=env, cwd=REPO, timeout=timeout_s)
            code = process.returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.monotonic() - started
    if code != 0:
        reason = f"timed out after {timeout_s} s" if code is None else f"exited with status {code}"
        message = [f"configuration '{name}' {reason} after {wall:.1f} s",
                   "command: " + " ".join(command)]
        error_file = run_dir / "error.txt"
        if error_file.exists():
            message.append(f"error file {error_file}:\n  " + error_file.read_text(errors="replace").strip())
        message.append(f"last lines of {run_dir / 'stderr.log'}:\n" + (tail(run_dir / "stderr.log") or "  (empty)"))
        raise SuiteError("\n".join(message), EXIT_RUN_FAILED)
    return wall


def read_metrics(run_dir, name):
    """The run's events by kind, from the engine's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise SuiteError(f"configuration '{name}': the engine wrote no {path}", EXIT_RUN_FAILED)
    events = {"epoch": [], "eval": [], "transition": [], "train": [], "summary": []}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{path}:{number}: not a JSON line: {e.msg}", EXIT_RUN_FAILED)
        events.setdefault(event.get("event", "?"), []).append(event)
    if not events["summary"]:
        raise SuiteError(f"{path}: no summary event: the run did not finish", EXIT_RUN_FAILED)
    if not events["epoch"]:
        raise SuiteError(f"{path}: no epoch event: no epoch completed", EXIT_RUN_FAILED)
    return events


def number(event, key, where):
    value = event.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SuiteError(f"{where}: event '{event.get('event')}' has no numeric '{key}' "
                         f"(is the engine older than this harness?)", EXIT_RUN_FAILED)
    return float(value)


def figures_of(events, name, target_accuracy):
    """Every figure of one run: per epoch, per evaluation, and the totals."""
    where = f"configuration '{name}' metrics"
    epochs = []
    for e in events["epoch"]:
        epochs.append({
            "epoch": int(number(e, "epoch", where)),
            "frozen_blocks": int(number(e, "frozen_blocks", where)),
            "stages": int(number(e, "stages", where)),
            "replicas": int(number(e, "replicas", where)),
            "idle_ranks": int(e.get("idle_ranks", 0)),
            "samples_per_sec": number(e, "samples_per_sec", where),
            "epoch_seconds": number(e, "epoch_seconds", where),
            "elapsed_seconds": number(e, "elapsed_seconds", where),
            "train_loss": number(e, "train_loss", where),
            "cache_hit_rate": float(e.get("cache_hit_rate", 0.0)),
        })
    evals = []
    for e in events["eval"]:
        evals.append({
            "epoch": int(number(e, "epoch", where)),
            "accuracy": number(e, "eval_accuracy", where),
            "loss": number(e, "eval_loss", where),
            "elapsed_seconds": number(e, "elapsed_seconds", where),
        })
    summary = events["summary"][-1]
    figures = {
        "train_seconds": number(summary, "train_seconds", where),
        "samples_per_sec": number(summary, "samples_per_sec", where),
        "final_accuracy": evals[-1]["accuracy"] if evals else None,
        "final_train_loss": number(summary, "train_loss", where),
        "epochs": epochs,
        "evals": evals,
        "transitions": [{k: v for k, v in t.items() if k != "event"} for t in events["transition"]],
        "transition_seconds": sum(float(t.get("seconds", 0.0)) for t in events["transition"]),
    }
    if target_accuracy is not None:
        reached = [e for e in evals if e["accuracy"] >= target_accuracy]
        figures["time_to_target"] = reached[0]["elapsed_seconds"] if reached else None
        figures["epochs_to_target"] = reached[0]["epoch"] if reached else None
    return figures


def fastest_run(runs, key):
    """The run with the smallest `key` stands for the configuration (runs that
    never reached the target rank last): on a shared machine interference
    only ever adds time, so the fastest repeat is the closest to the
    undisturbed figure. Its per-epoch figures all come from that one run;
    every repeat's totals are kept under "repeats"."""
    ranked = sorted(runs, key=lambda r: (r[key] is None, r[key] or 0.0))
    chosen = dict(ranked[0])
    chosen["repeats"] = [{k: r.get(k) for k in ("train_seconds", "samples_per_sec", "final_accuracy",
                                                "time_to_target", "wall_seconds", "run_dir")} for r in runs]
    return chosen


def add_speedups(results, baseline, target_accuracy):
    """Speed-up = the baseline's time / this configuration's time (time to
    finish, or time to the target accuracy when one is given)."""
    key = "time_to_target" if target_accuracy is not None else "train_seconds"
    base = results[baseline][key]
    for r in results.values():
        mine = r[key]
        r["speedup"] = base / mine if base and mine else None
        r["speedup_basis"] = key


# ---------------------------------------------------------------------------
# Output: table, JSON, plots


def fmt(value, digits=2, none="-"):
    if value is None:
        return none
    return f"{value:.{digits}f}"


def time_cell(result, key):
    """The reported (fastest) time, with the range over repeats when there are several."""
    text = fmt(result[key])
    values = [r[key] for r in result.get("repeats", []) if r.get(key) is not None]
    if len(result.get("repeats", [])) > 1 and values:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    return text


def table_markdown(suite_name, suite, order, results, labels, target_accuracy, published):
    time_header = f"time to {target_accuracy:.3g} acc. (s)" if target_accuracy is not None else "time (s)"
    header = ["configuration", "f by epoch", "K x R by epoch", "samples/s by epoch", "overall samples/s",
              time_header, "final accuracy", "speed-up"]
    if published:
        header.append("paper")
    rows = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + " |"]
    for name in order:
        r = results[name]
        epochs = r["epochs"]
        layout = " ".join(f"{e['stages']}x{e['replicas']}" + (f"+{e['idle_ranks']}idle" if e["idle_ranks"] else "")
                          for e in epochs)
        cells = [labels[name],
                 " ".join(str(e["frozen_blocks"]) for e in epochs),
                 layout,
                 ", ".join(f"{e['samples_per_sec']:.0f}" for e in epochs),
                 f"{r['samples_per_sec']:.0f}",
                 time_cell(r, "time_to_target" if target_accuracy is not None else "train_seconds"),
                 fmt(r["final_accuracy"], 3),
                 (fmt(r["speedup"]) + "x") if r["speedup"] is not None else "not reached"]
        if published:
            p = published.get(name)
            cells.append(f"{p:.2f}x" if p is not None else "-")
        rows.append("| " + " | ".join(cells) + " |")
    repeated = any(len(r.get("repeats", [])) > 1 for r in results.values())
    intro = (f"Suite `{suite_name}`: {suite.get('description', '')}\n\n"
             f"Time = the engine's training seconds (evaluations included, start-up excluded)"
             f"{'; the fastest of the repeats, their range in brackets' if repeated else ''}; "
             f"speed-up = baseline time / configuration time; f = frozen blocks, K = stages, "
             f"R = replicas that train, +N idle = ranks left out without AutoDP.\n\n")
    return intro + "\n".join(rows) + "\n"


def plots(out, order, results, labels, published, published_source):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SuiteError("matplotlib is not installed for this Python (apt-get install python3-matplotlib, "
                         "or bash scripts/setup.sh); the table and JSON are written", EXIT_ENVIRONMENT)
    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3, "savefig.dpi": 150, "savefig.bbox": "tight",
    })
    # Okabe-Ito: distinguishable in colour-blind vision and in grey print.
    palette = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(order)}
    marker = {name: markers[i % len(markers)] for i, name in enumerate(order)}
    written = []

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name in order:
        epochs = results[name]["epochs"]
        ax.plot([e["epoch"] for e in epochs], [e["samples_per_sec"] for e in epochs], marker=marker[name],
                color=colour[name], label=labels[name], linewidth=1.4, markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training throughput (samples/s)")
    ax.set_title("Throughput per epoch")
    ax.set_ylim(bottom=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(out / "throughput.png")
    plt.close(fig)
    written.append("throughput.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = list(range(len(order)))
    ours = [results[n]["speedup"] or 0.0 for n in order]
    width = 0.38 if published else 0.6
    bars = ax.bar([x - (width / 2 if published else 0) for x in xs], ours, width, color="#0072B2", label="ours")
    for bar, value in zip(bars, ours):
        ax.annotate(f"{value:.2f}x", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")
    if published:
        paper = [published.get(n) for n in order]
        pbars = ax.bar([x + width / 2 for x in xs], [p or 0.0 for p in paper], width, color="#E69F00",
                       hatch="//", edgecolor="white", label=published_source or "published")
        for bar, value in zip(pbars, paper):
            if value is not None:
                ax.annotate(f"{value:.2f}x", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.legend(frameon=False, loc="upper left")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(xs)
    ax.set_xticklabels([labels[n] for n in order], rotation=20, ha="right")
    ax.set_ylabel("speed-up vs baseline")
    ax.set_title("Speed-up breakdown")
    ax.grid(axis="x", visible=False)
    fig.savefig(out / "speedup.png")
    plt.close(fig)
    written.append("speedup.png")

    fig, axes = plt.subplots(3, 1, figsize=(5.5, 5.0), sharex=True)
    series = [("frozen_blocks", "frozen blocks f"), ("stages", "stages K"), ("replicas", "replicas R")]
    for i, name in enumerate(order):
        epochs = results[name]["epochs"]
        # Each epoch's layout held from its start to its end. Configurations
        # often share a value: a small vertical offset keeps every line visible.
        offset = 0.05 * (i - (len(order) - 1) / 2)
        xs = [e["elapsed_seconds"] - e["epoch_seconds"] for e in epochs] + [epochs[-1]["elapsed_seconds"]]
        for ax, (key, _) in zip(axes, series):
            ys = [e[key] + offset for e in epochs] + [epochs[-1][key] + offset]
            ax.step(xs, ys, where="post", color=colour[name], label=labels[name], linewidth=1.4)
    for ax, (_, title) in zip(axes, series):
        ax.set_ylabel(title)
        ax.yaxis.get_major_locator().set_params(integer=True)
    axes[-1].set_xlabel("training time (s)")
    axes[0].set_title("Freezing, pipeline length and data parallelism over time\n"
                      "(lines offset slightly where configurations coincide)", fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, frameon=False, fontsize=7, loc="upper center", ncol=3,
               bbox_to_anchor=(0.5, 0.0))
    fig.savefig(out / "layout.png")
    plt.close(fig)
    written.append("layout.png")
    return written


# ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run a named suite of PipeTransformer configurations and compare them with the baseline.",
        epilog="Example: python3 benchmarks/suite/run_suite.py --suite cpu-tiny --build build "
               "--out output/suite-cpu-tiny")
    parser.add_argument("--suite", help="suite name (see --list)")
    parser.add_argument("--suites", default=str(DEFAULT_SUITES), help="suite file (default: %(default)s)")
    parser.add_argument("--build", default="build", help="build directory holding runtime/app/pipetransformer "
                        "(default: %(default)s)")
    parser.add_argument("--out", help="output directory (default: output/suite-<suite>)")
    parser.add_argument("--epochs", type=int, help="epochs per configuration (default: the suite's)")
    parser.add_argument("--target-accuracy", type=float,
                        help="compare time to this evaluation accuracy (0-1) instead of time to finish; "
                             "each run still trains the suite's epochs, and evaluates every epoch")
    parser.add_argument("--configs", help="comma-separated subset of configurations (the baseline is always run)")
    parser.add_argument("--repeats", type=int,
                        help="runs per configuration, round-robin; the fastest run's figures are reported "
                             "(default: the suite's, else 1)")
    parser.add_argument("--seed", type=int, help="train.seed for every configuration (default: the suite's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra engine config override for every configuration (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.target_accuracy is not None and not 0.0 < args.target_accuracy <= 1.0:
        parser.error("--target-accuracy must lie in (0, 1]")
    if not args.list and not args.suite:
        parser.error("--suite is required (or --list)")
    for item in args.set:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    suites = load_suites(args.suites)
    if args.list:
        for name, suite in suites.items():
            print(f"{name}: {suite.get('description', '') if isinstance(suite, dict) else ''}")
        return 0
    suite = check_suite(suites, args.suite, args.suites)
    binary = Path(args.build) / "runtime" / "app" / "pipetransformer"
    if not binary.is_absolute():
        binary = (Path.cwd() / binary).resolve()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise SuiteError(f"engine binary {binary} not found or not executable: build it first "
                         f"(cmake --build {args.build} --target pipetransformer), or pass --build DIR",
                         EXIT_ENVIRONMENT)
    out = Path(args.out or f"output/suite-{args.suite}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    configurations = suite["configurations"]
    baseline = suite.get("baseline", configurations[0]["name"])
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
        names = [c["name"] for c in configurations]
        for w in wanted:
            if w not in names:
                raise SuiteError(f"--configs: no configuration '{w}' in suite '{args.suite}'; "
                                 f"it has {', '.join(names)}")
        configurations = [c for c in configurations if c["name"] in wanted or c["name"] == baseline]
    epochs = args.epochs or suite["epochs"]
    seed = args.seed if args.seed is not None else suite.get("seed")
    extra_sets = dict(item.split("=", 1) for item in args.set)
    if args.target_accuracy is not None:
        extra_sets.setdefault("eval.every_epochs", "1")
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    env.update({k: str(v) for k, v in suite.get("env", {}).items()})
    published = {c["name"]: c["published"] for c in configurations if "published" in c} \
        if suite.get("models_paper") else {}
    labels = {c["name"]: c.get("label", c["name"]) for c in configurations}
    order = [c["name"] for c in configurations]

    repeats = args.repeats or suite.get("repeats", 1)
    runs = {name: [] for name in order}
    total = repeats * len(configurations)
    # Round-robin over the configurations, so a slow spell of a shared
    # machine falls on all of them rather than on one.
    for repeat in range(1, repeats + 1):
        for configuration in configurations:
            name = configuration["name"]
            run_dir = out / "runs" / (name if repeats == 1 else f"{name}-{repeat}")
            command, overrides = engine_command(binary, suite, configuration, run_dir, epochs, seed, extra_sets)
            done = sum(len(r) for r in runs.values()) + 1
            print(f"[suite] {done}/{total} {name}: {labels[name]}" + (f" (repeat {repeat})" if repeats > 1 else ""),
                  flush=True)
            wall = run_configuration(command, run_dir, env, suite.get("timeout_s", 3600), name)
            figures = figures_of(read_metrics(run_dir, name), name, args.target_accuracy)
            figures.update({"command": command, "overrides": overrides, "wall_seconds": wall,
                            "run_dir": str(run_dir)})
            runs[name].append(figures)
            print(f"[suite]   {figures['train_seconds']:.2f} s training ({wall:.1f} s wall), "
                  f"{figures['samples_per_sec']:.0f} samples/s, accuracy {fmt(figures['final_accuracy'], 3)}",
                  flush=True)
    results = {}
    for name in order:
        results[name] = fastest_run(runs[name], "time_to_target" if args.target_accuracy is not None
                                   else "train_seconds")
        results[name].update({"name": name, "label": labels[name], "published_speedup": published.get(name)})
    add_speedups(results, baseline, args.target_accuracy)
    if args.target_accuracy is not None and results[baseline]["time_to_target"] is None:
        print(f"[suite] warning: the baseline never reached accuracy {args.target_accuracy}: "
              f"no speed-ups (train longer with --epochs)", file=sys.stderr)

    document = {
        "suite": args.suite,
        "description": suite.get("description", ""),
        "command": [sys.executable, str(Path(__file__).relative_to(REPO))] + list(sys.argv[1:] if argv is None else argv),
        "ranks": suite["ranks"],
        "epochs": epochs,
        "repeats": repeats,
        "seed": seed,
        "target_accuracy": args.target_accuracy,
        "baseline": baseline,
        "published_source": suite.get("published_source") if published else None,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "configurations": [results[n] for n in order],
    }
    (out / "suite.json").write_text(json.dumps(document, indent=2) + "\n")
    table = table_markdown(args.suite, suite, order, results, labels, args.target_accuracy, published)
    (out / "table.md").write_text(table)
    written = plots(out, order, results, labels, published, suite.get("published_source"))
    print(table)
    print(f"[suite] wrote {out / 'suite.json'}, {out / 'table.md'}, " + ", ".join(str(out / w) for w in written))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SuiteError as e:
        print(f"run_suite: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("run_suite: interrupted", file=sys.stderr)
        sys.exit(130)
