"""Op-level profile of a PyTorch training step with torch.profiler.

Writes the same table and JSON (schema "pipet-op-profile-v1") that
`bench_step_time --profile` writes for our engine (benchmarks/profile_table.h),
so benchmarks/gpu/compare_profiles.py can put the two side by side. Used by
hf_step_time.py --profile; works on any step function and any torch from
1.13 (CPU only there: Debian's build has no Kineto) to 2.x with CUDA.

One row per op name (kind "op": host side; self device time = the kernels the
op launched itself, not its children's) and one per kernel name (kind
"kernel": device side, each kernel also counted in its op). Times are sums
over the profiled steps, in microseconds. Device-side copies of annotated
ranges (Optimizer.step#..., ProfilerStep#...) span kernels that are rows
already: they are dropped, and their host side keeps no device time.

Importing this module needs no torch; profile_step() takes the torch module.
"""

import json
import os
import time

SCHEMA = "pipet-op-profile-v1"
# torch.profiler's own bookkeeping, hidden from its tables (and from ours).
HIDDEN_NAMES = frozenset({
    "[memory]", "[OutOfMemory]", "profiler::_record_function_enter",
    "profiler::_record_function_enter_new", "profiler::_record_function_exit",
    "aten::is_leaf", "aten::output_nr", "aten::_version",
})
# Annotated ranges, for torch versions whose events lack is_user_annotation.
ANNOTATION_PREFIXES = ("ProfilerStep#", "Optimizer.step#", "Optimizer.zero_grad#")
NAME_WIDTH = 90


def _self_device_us(average):
    # self_device_time_total since torch 2.4 (self_cuda_time_total before).
    for attribute in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(average, attribute, None)
        if value is not None:
            return float(value)
    return 0.0


def rows_from_averages(torch, averages):
    """key_averages() -> [row dict] in the JSON row layout (unsorted)."""
    host = torch.autograd.DeviceType.CPU
    rows = []
    for average in averages:
        name = average.key
        if name in HIDDEN_NAMES:
            continue
        annotation = (bool(getattr(average, "is_user_annotation", False))
                      or name.startswith(ANNOTATION_PREFIXES))
        if average.device_type == host:
            rows.append(dict(name=name, kind="op", calls=int(average.count),
                             self_cpu_us=float(average.self_cpu_time_total),
                             total_cpu_us=float(average.cpu_time_total),
                             self_device_us=0.0 if annotation else _self_device_us(average)))
        elif not annotation:
            rows.append(dict(name=name, kind="kernel", calls=int(average.count), self_cpu_us=0.0,
                             total_cpu_us=0.0, self_device_us=_self_device_us(average)))
    return rows


def build_profile(rows, source, label, device, torch_version, steps, wall_ms_per_step):
    """The JSON document: info, totals and rows, sorted as bench_step_time sorts
    them (cuda: self device time, then self CPU time; else self CPU time; ties
    by name, then kind). ValueError when steps < 1."""
    if steps < 1:
        raise ValueError(f"op profile: the profiled step count must be >= 1, got {steps}")
    ops = [r for r in rows if r["kind"] == "op"]
    kernels = [r for r in rows if r["kind"] == "kernel"]
    device_us = sum(r["self_device_us"] for r in kernels)
    op_device_us = sum(r["self_device_us"] for r in ops)
    by_device = device == "cuda"

    def order(row):
        primary = -row["self_device_us"] if by_device else 0.0
        return (primary, -row["self_cpu_us"], row["name"], row["kind"])

    return dict(schema=SCHEMA, source=source, label=label, device=device,
                torch_version=torch_version, steps=steps, wall_ms_per_step=wall_ms_per_step,
                sort_key="self_device_us" if by_device else "self_cpu_us",
                totals=dict(self_cpu_us=sum(r["self_cpu_us"] for r in ops), device_us=device_us,
                            op_self_device_us=op_device_us,
                            unattributed_device_us=device_us - op_device_us),
                rows=sorted(rows, key=order))


def _is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def aligned_table(headers, rows, strip_lines=False):
    """Columns as wide as their widest cell; numbers right-aligned, text left.
    strip_lines drops trailing spaces (the C++ table keeps them)."""
    widths = [max([len(h)] + [len(r[c]) for r in rows]) for c, h in enumerate(headers)]

    def line(cells, header):
        parts = []
        for c, cell in enumerate(cells):
            right = not header and _is_number(cell)
            last = c + 1 == len(cells)
            parts.append(cell.rjust(widths[c]) if right else (cell if last else cell.ljust(widths[c])))
        text = "  ".join(parts)
        return text.rstrip() if strip_lines else text

    out = [line(headers, True), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(r, False) for r in rows]
    return "\n".join(out) + "\n"


def format_table(profile, row_limit=80):
    """The text table bench_step_time --profile writes, for this profile."""
    totals, device = profile["totals"], profile["device"] == "cuda"

    def ms(us):
        return f"{us / 1000.0:.3f}"

    def percent(part, whole):
        return f"{100.0 * part / whole:.1f}" if whole > 0 else "-"

    head = (f"op profile: {profile['label']} ({profile['source']}, torch {profile['torch_version']}, "
            f"{profile['device']})\n"
            f"{profile['steps']} profiled steps, {profile['wall_ms_per_step']:.2f} ms/step wall under "
            f"the profiler; times are sums over the {profile['steps']} steps\n"
            f"self CPU total {ms(totals['self_cpu_us'])} ms")
    if device:
        head += (f"; device total {ms(totals['device_us'])} ms (launched by ops "
                 f"{ms(totals['op_self_device_us'])} ms, unattributed "
                 f"{ms(totals['unattributed_device_us'])} ms)")
        head += ("\nkind op = host side (self device = kernels it launched itself); kind kernel = "
                 "device side (also counted in the op that launched it)")
    head += "\n\n"
    headers = ["name", "kind", "calls", "self CPU ms", "self CPU %", "CPU total ms"]
    if device:
        headers += ["self device ms", "self device %"]
    cells = []
    for row in profile["rows"][:row_limit]:
        name = row["name"]
        if len(name) > NAME_WIDTH:
            name = name[:NAME_WIDTH - 3] + "..."
        line = [name, row["kind"], str(row["calls"]), ms(row["self_cpu_us"]),
                percent(row["self_cpu_us"], totals["self_cpu_us"]), ms(row["total_cpu_us"])]
        if device:
            whole = totals["op_self_device_us"] if row["kind"] == "op" else totals["device_us"]
            line += [ms(row["self_device_us"]), percent(row["self_device_us"], whole)]
        cells.append(line)
    text = head + aligned_table(headers, cells)
    if len(profile["rows"]) > row_limit:
        text += f"({len(profile['rows']) - row_limit} more rows in the JSON)\n"
    return text


def _write_atomically(path, text):
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def profile_step(torch, step, steps, device, prefix, source, label, row_limit=80):
    """Runs step() `steps` times under torch.profiler (CPU activity, plus CUDA on
    cuda), then writes PREFIX.ops.txt (the table), PREFIX.ops.json and
    PREFIX.trace.json (Chrome trace). Returns the profile dict. Run it after
    warm-up: the profile should show steady-state steps."""
    if steps < 1:
        raise ValueError(f"op profile: the profiled step count must be >= 1, got {steps}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = device == "cuda"
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1000.0
    profile = build_profile(rows_from_averages(torch, profiler.key_averages()), source, label,
                            device, torch.__version__, steps, wall_ms / steps)
    _write_atomically(prefix + ".ops.txt", format_table(profile, row_limit))
    _write_atomically(prefix + ".ops.json", json.dumps(profile, indent=2) + "\n")
    profiler.export_chrome_trace(prefix + ".trace.json")
    return profile
