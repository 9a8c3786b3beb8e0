#!/usr/bin/env bash
# Runs the pipeline step-time benchmark under mpirun at 4 ranks, K in {1,2,4}
# and M in {1,2,4,8} (vit-small, 32 px, patch 8, global batch 32), and keeps
# the JSON results next to the build.
#
#   benchmarks/run_pipeline.sh BUILD_DIR [extra bench_pipeline_step flags...]
#
# RANKS=4 (the default) sets the rank count; extra flags are passed through,
# e.g. --pipeline-only, --schedule 1f1b or --iterations 5; a --stages,
# --micro-batches or --json given there replaces the script's default.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [bench_pipeline_step flags...]" >&2
  exit 2
fi
build_dir=$1
shift
source "$(dirname "$0")/prepare_bench.sh"
prepare_bench "$build_dir" bench_pipeline_step
mpirun --version | head -n 1

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ranks=${RANKS:-4}
suffix=""
case " $* " in *" --pipeline-only"*) suffix="_pipeline_only" ;; esac
defaults=()
case " $* " in *" --stages"*) ;; *) defaults+=(--stages 1,2,4) ;; esac
case " $* " in *" --micro-batches"*) ;; *) defaults+=(--micro-batches 1,2,4,8) ;; esac
case " $* " in *" --json"*) ;; *) defaults+=(--json "$build_dir/bench/pipeline_np$ranks$suffix.json") ;; esac
bench_mpirun -np "$ranks" "$build_dir/benchmarks/bench_pipeline_step" "${defaults[@]}" "$@"
