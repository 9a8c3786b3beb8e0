#!/usr/bin/env bash
# Runs the training step-time benchmark (ours vs PyTorch eager) at 1 and 2
# threads and keeps the JSON results next to the build.
#
#   benchmarks/run_step_time.sh BUILD_DIR [extra bench_step_time flags...]
#
# Works from a fresh build directory: configures it if needed and builds only
# bench_step_time. Extra flags are passed through, e.g. --models vit-tiny
# --iterations 30 --fail-above-ratio 1.0; a --threads or --json given there
# replaces the script's default.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [bench_step_time flags...]" >&2
  exit 2
fi
build_dir=$1
shift
source "$(dirname "$0")/prepare_bench.sh"
prepare_bench "$build_dir" bench_step_time

# libgomp's idle workers spin by default and take the cores from OpenBLAS's
# threads during GEMMs; both sides inherit this (see docs/benchmarks.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

defaults=()
case " $* " in *" --threads"*) ;; *) defaults+=(--threads 1,2) ;; esac
case " $* " in
  *" --json"*) ;;
  *) defaults+=(--json "$build_dir/bench/step_time.json") ;;
esac
exec "$build_dir/benchmarks/bench_step_time" "${defaults[@]}" "$@"
