#!/usr/bin/env bash
# One GPU-machine session in phases, each logged to $OUT/<phase>.log (or
# output/gpu/ when OUT is unset), so one long command can build, test and
# measure (docs/gpu.md):
#   scripts/gpu_session.sh build test bench hf freeze profile
# build   scripts/gpu_build.sh into build-gpu (every target)
# test    ctest -L gpu (communicators, the engine on the GPU, parity)
# bench   bench_step_time on the GPU: ViT-B/16 and BERT, bf16 (ours)
# hf      benchmarks/gpu/hf_step_time.py: transformers eager and torch.compile
# freeze  the trainer at f = 0, 4, 8, 11 frozen ViT-B/16 blocks, AutoCache off/on
# profile op-level profiles of the ViT-B/16 batch-128 bf16 step, ours and transformers eager, compared
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$repo/output/gpu}
mkdir -p "$out"
build=$repo/build-gpu
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LD_LIBRARY_PATH=$repo/.gpu-deps/lib:${LD_LIBRARY_PATH:-}
summary=$out/summary.txt

note() { echo "$*" | tee -a "$summary"; }

phase_build() {
  bash "$repo/scripts/gpu_build.sh" "$build" -- -k 0 2>&1 | grep -v '^\[[0-9]*/[0-9]*\] Building'
}

phase_test() {
  (cd "$build" && ctest -L gpu --output-on-failure --timeout 500)
}

phase_bench() {
  local bench=$build/benchmarks/bench_step_time
  local common=(--device cuda --precision bf16 --no-pytorch --warmup 5 --iterations 30 --check-steps 1)
  "$bench" "${common[@]}" --models vit-b16 --batch 128 --labels 1000 --json "$out/ours-vit-b16-128.json"
  "$bench" "${common[@]}" --models vit-b16 --batch 256 --labels 1000 --json "$out/ours-vit-b16-256.json"
  "$bench" "${common[@]}" --models bert-base --batch 128 --seq 128 --labels 2 --json "$out/ours-bert-base.json"
  "$bench" "${common[@]}" --models bert-large --batch 32 --seq 384 --labels 2 --json "$out/ours-bert-large.json"
}

phase_hf() {
  python3 "$repo/benchmarks/gpu/hf_step_time.py" \
    --cases vit-b16:128,vit-b16:256,bert-base:128:128,bert-large:32:384 \
    --modes eager,compile --warmup 5 --iterations 30 --jsonl "$out/hf.jsonl"
}

phase_freeze() {
  local app=$build/runtime/app/pipetransformer
  for mode in off on; do
    for f in 0 4 8 11; do
      local dir=$out/freeze-f$f-cache-$mode
      local policy=manual
      [ "$f" = 0 ] && policy=none
      # f blocks frozen after the first step; epoch 1 fills the cache, the
      # later epochs read it. samples/s of the last epoch is the figure.
      "$app" train --config "$repo/examples/vit-b16-gpu-frozen.json" \
        --set freeze.policy=$policy --set "freeze.manual=[$f]" --set autocache.mode=$mode \
        --output "$dir" > "$dir.log" 2>&1 || { note "freeze f=$f cache=$mode FAILED: $(tail -3 "$dir.log")"; continue; }
      note "freeze f=$f cache=$mode: $(grep '"event":"epoch"\|event=epoch' "$dir.log" | tail -1)"
    done
  done
}

# Op tables (.ops.txt/.ops.json) and gzipped Chrome traces under $OUT/profile/,
# and compare_profiles.py's side-by-side in $OUT/profile/comparison.txt. About
# a minute of device time: some 20 steps per side (warm-up, 10 timed, then 3
# profiled), each side's timings printed as usual.
phase_profile() {
  local dir=$out/profile
  mkdir -p "$dir"
  "$build/benchmarks/bench_step_time" --device cuda --precision bf16 --no-pytorch \
    --models vit-b16 --batch 128 --labels 1000 --warmup 5 --iterations 10 --check-steps 1 \
    --profile "$dir" --profile-steps 3 --json "$dir/ours-step-time.json" || return 1
  python3 "$repo/benchmarks/gpu/hf_step_time.py" --cases vit-b16:128 --modes eager \
    --warmup 5 --iterations 10 --profile "$dir" --profile-steps 3 --jsonl "$dir/hf.jsonl" || return 1
  python3 "$repo/benchmarks/gpu/compare_profiles.py" "$dir/ours-vit-b16-b128-t1.ops.json" \
    "$dir/hf-vit-b16-b128-eager.ops.json" > "$dir/comparison.txt" || return 1
  cat "$dir/comparison.txt"
  # Traces run to tens of MB; Perfetto and chrome://tracing open .json.gz.
  if command -v gzip >/dev/null; then gzip -f "$dir"/*.trace.json; fi
  note "profile: $(sed -n '/^by category/,/^total/p' "$dir/comparison.txt")"
}

status=0
for phase in "$@"; do
  start=$(date +%s)
  if ! declare -F "phase_$phase" >/dev/null; then
    echo "gpu_session: unknown phase '$phase' (build test bench hf freeze profile)" >&2
    exit 2
  fi
  "phase_$phase" > "$out/$phase.log" 2>&1
  rc=$?
  note "phase $phase: exit $rc in $(( $(date +%s) - start )) s"
  [ $rc -ne 0 ] && status=1 && tail -40 "$out/$phase.log"
done
exit $status
