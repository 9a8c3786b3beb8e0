#!/usr/bin/env bash
# Simulator validation on this machine: real engine runs under mpirun (np 2
# and 4, several layouts, GPipe and 1F1B, with and without a frozen prefix)
# against pipet-simulate's prediction from a profile taken here with the same
# thread setting. Prints one table row per case: measured and predicted
# steady-state step time and the error.
#
#   benchmarks/simulator/validate.sh [BUILD_DIR] [OUT_DIR] [CASE...]
#
# BUILD_DIR (default build-sim) must hold runtime/app/pipetransformer and
# benchmarks/simulator/pipet-simulate. Each case trains vit-small (32 px,
# patch 8: 17 tokens) on synthetic images, global batch 32, one epoch of
# STEPS steps, 1 thread per rank, and logs every step; the measured step
# time is the median of batch / samples_per_sec over the steady-state steps
# (after SKIP steps, and after the freeze transition when there is one).
# The machine is shared: each case is profiled right before its run (one
# process, same thread setting), so both see the same background load, and
# the table shows the 1-minute load average at the start of the case.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-sim}
OUT=${2:-$BUILD/simulator-validation}
shift $(( $# > 2 ? 2 : $# ))
ENGINE=$BUILD/runtime/app/pipetransformer
SIM=$BUILD/benchmarks/simulator/pipet-simulate
CLUSTER=benchmarks/simulator/clusters/cpu-here.json
STEPS=${STEPS:-24}
SKIP=${SKIP:-4}
FREEZE_AT=${FREEZE_AT:-8}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE

MODEL=(--set model.preset=vit-small --set model.image_size=32 --set model.patch_size=8
       --set data.augment=false --set data.eval_samples=0 --set train.batch_size=32
       --set runtime.threads=1)

# name ranks stages micro_batches schedule frozen_blocks (0 = no freezing)
ALL_CASES=(
  "np2-1x2-gpipe-m1 2 1 1 gpipe 0"
  "np2-2x1-gpipe-m2 2 2 2 gpipe 0"
  "np2-2x1-1f1b-m4 2 2 4 1f1b 0"
  "np2-2x1-1f1b-m2-f6 2 2 2 1f1b 6"
  "np4-1x4-gpipe-m1 4 1 1 gpipe 0"
  "np4-4x1-gpipe-m4 4 4 4 gpipe 0"
  "np4-4x1-1f1b-m4 4 4 4 1f1b 0"
  "np4-2x2-gpipe-m2 4 2 2 gpipe 0"
  "np4-2x2-1f1b-m4-f6 4 2 4 1f1b 6"
  "np4-4x1-gpipe-m4-f9 4 4 4 gpipe 9"
)
SELECTED=("$@")

printf '| case | ranks | predicted layout (engine after the transition) | load | measured ms | predicted ms | error |\n'
printf '| --- | ---: | --- | ---: | ---: | ---: | ---: |\n'
for spec in "${ALL_CASES[@]}"; do
  read -r name ranks stages micro schedule frozen <<<"$spec"
  if (( ${#SELECTED[@]} )) && [[ ! " ${SELECTED[*]} " =~ " $name " ]]; then continue; fi
  dir="$OUT/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  load=$(cut -d' ' -f1 /proc/loadavg)
  "$SIM" profile --config examples/vit-tiny-synthetic.json "${MODEL[@]}" --rows 1,2,4,8,16,32 \
    --repeats 5 -o "$dir/profile.json" 2>"$dir/profile.log"
  freeze_engine=(--set freeze.policy=none)
  freeze_run=(--set freeze.policy=none)
  if (( frozen > 0 )); then
    freeze_engine=(--set freeze.policy=manual --set "freeze.manual=[$frozen]" --set "freeze.every_steps=$FREEZE_AT")
    freeze_run=(--set freeze.policy=manual --set "freeze.manual=[$frozen]" --set "freeze.every_steps=$FREEZE_AT")
  fi
  mpirun -np "$ranks" --oversubscribe --mca btl self,vader "$ENGINE" train \
    --config examples/vit-tiny-synthetic.json "${MODEL[@]}" \
    --set data.train_samples=$((32 * STEPS)) --set train.epochs=1 --set train.log_every_steps=1 \
    --set parallel.pipeline_stages="$stages" --set parallel.micro_batches="$micro" \
    --set parallel.schedule="$schedule" --set checkpoint.dir= --set output.export_model=false \
    --set eval.every_epochs=0 --set autopipe.frozen_cost=0 "${freeze_engine[@]}" \
    --output "$dir" >"$dir/stdout.log" 2>"$dir/stderr.log"
  cat >"$dir/run.json" <<JSON
{"model": "vit-small",
 "train": {"batch_size": 32, "epochs": 1, "steps_per_epoch": $STEPS, "optimizer": "adamw"},
 "parallel": {"ranks": $ranks, "pipeline_stages": $stages, "micro_batches": $micro, "schedule": "$schedule"},
 "autopipe": {"frozen_cost": 0}}
JSON
  "$SIM" predict --cluster "$CLUSTER" --profile "$dir/profile.json" --run "$dir/run.json" \
    "${freeze_run[@]}" --json "$dir/prediction.json" >"$dir/prediction.txt" 2>&1
  python3 - "$dir" "$SKIP" "$FREEZE_AT" "$frozen" "$name" "$ranks" "$load" <<'PY'
import json, statistics, sys
d, skip, freeze_at, frozen, name, ranks, load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
events = [json.loads(l) for l in open(d + "/metrics.jsonl")]
train = [e for e in events if e["event"] == "train"]
first = freeze_at + skip if frozen else skip
times = [32.0 / e["samples_per_sec"] for e in train if e["step"] > first and e["samples_per_sec"] > 0]
measured = statistics.median(times)
pred = json.load(open(d + "/prediction.json"))
seg = pred["segments"][-1]
layout = f'{pred["segments"][0]["stages"]}x{pred["segments"][0]["replicas"]}'
trans = [e for e in events if e["event"] == "transition"]
if frozen:
    engine_after = f'{trans[0]["stages"]}x{trans[0]["replicas"]}' if trans else "none"
    layout += f' -> f={seg["frozen_blocks"]} {seg["stages"]}x{seg["replicas"]} M={seg["micro_batches"]} (engine {engine_after})'
else:
    layout += f' M={seg["micro_batches"]}'
predicted = seg["step_seconds"]
err = (predicted - measured) / measured
print(f'| {name} | {ranks} | {layout} | {load} | {measured*1e3:.0f} | {predicted*1e3:.0f} | {err*100:+.1f}% |', flush=True)
PY
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
