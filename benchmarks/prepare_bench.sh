# Sourced by the run_*.sh scripts: the steps they share.
#
#   prepare_bench BUILD_DIR TARGET
#
# Configures BUILD_DIR if it has no CMake cache yet (Ninja, Release), builds
# TARGET only, and makes BUILD_DIR/bench for the JSON results.
prepare_bench() {
  local build_dir=$1 target=$2
  local source_dir
  source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S "$source_dir" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build_dir" --target "$target"
  mkdir -p "$build_dir/bench"
}

# mpirun as the benchmarks run it on one machine: as root if need be, more
# ranks than cores, shared memory between the ranks.
bench_mpirun() {
  mpirun --allow-run-as-root --oversubscribe --mca btl self,vader "$@"
}
