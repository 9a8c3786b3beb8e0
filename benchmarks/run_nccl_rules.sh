#!/usr/bin/env bash
# What NCCL's rules cost on CPU (PIPET_NCCL_RULES=1, docs/ARCHITECTURE.md):
# bench_pipeline_step under the 1F1B schedule at 4 ranks, K in {2,4} and M in
# {2,4,8}, in ordinary and strict mode, alternating the two REPEATS times
# (default 3) so that both see the same machine; then the median step time
# of each side per (K, M), their ratio and the spread of the repeats.
#
#   benchmarks/run_nccl_rules.sh BUILD_DIR [extra bench_pipeline_step flags...]
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [bench_pipeline_step flags...]" >&2
  exit 2
fi
build_dir=$1
shift
source "$(dirname "$0")/prepare_bench.sh"
prepare_bench "$build_dir" bench_pipeline_step
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
repeats=${REPEATS:-3}
out="$build_dir/bench/nccl_rules"
mkdir -p "$out"
for ((r = 1; r <= repeats; r++)); do
  for mode in ordinary strict; do
    rules=0
    [ "$mode" = strict ] && rules=1
    PIPET_NCCL_RULES=$rules bench_mpirun -np 4 "$build_dir/benchmarks/bench_pipeline_step" --schedule 1f1b \
      --stages 2,4 --micro-batches 2,4,8 --json "$out/$mode-$r.json" "$@" > "$out/$mode-$r.log"
  done
done
/usr/bin/python3 - "$out" "$repeats" <<'PY'
import json, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
def load(mode):
    rows = {}
    for r in range(1, repeats + 1):
        for row in json.load(open(f"{out}/{mode}-{r}.json"))["results"]:
            rows.setdefault((row["stages"], row["micro_batches"]), []).append(row["step_ms"])
    return rows
ordinary, strict = load("ordinary"), load("strict")
print("| K | M | ordinary ms (median, min-max) | NCCL rules ms (median, min-max) | rules / ordinary |")
print("|---|---|---|---|---|")
ratios = []
for key in sorted(ordinary):
    o, s = ordinary[key], strict[key]
    ratio = statistics.median(s) / statistics.median(o)
    ratios.append(ratio)
    print(f"| {key[0]} | {key[1]} | {statistics.median(o):.1f} ({min(o):.1f}-{max(o):.1f}) | "
          f"{statistics.median(s):.1f} ({min(s):.1f}-{max(s):.1f}) | {ratio:.3f} |")
print(f"\nmedian ratio over the rows: {statistics.median(ratios):.3f} ({repeats} alternating repeats per side)")
PY
