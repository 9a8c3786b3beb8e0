#!/usr/bin/env bash
# Runs the communication bandwidth benchmark under mpirun at 2 and 4 ranks
# (1 KiB .. 256 MiB) and keeps the JSON results next to the build.
#
#   benchmarks/run_comm.sh BUILD_DIR [extra bench_comm flags...]
#
# RANKS="2 4" (the default) picks the rank counts. Works from a fresh build
# directory: configures it if needed and builds only bench_comm.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [bench_comm flags...]" >&2
  exit 2
fi
build_dir=$1
shift
source "$(dirname "$0")/prepare_bench.sh"
prepare_bench "$build_dir" bench_comm
mpirun --version | head -n 1

# One intra-op thread per rank: the ranks already share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
for ranks in ${RANKS:-2 4}; do
  bench_mpirun -np "$ranks" "$build_dir/benchmarks/bench_comm" --json "$build_dir/bench/comm_np$ranks.json" "$@" || status=$?
done
exit $status
