#!/usr/bin/env bash
# Builds pipetransformer's GPU path on a machine with a CUDA PyTorch (its
# LibTorch), a CUDA toolkit, NCCL, Open MPI, spdlog, nlohmann-json, CLI11 and
# GoogleTest (docs/gpu.md records what the GPU machine has).
#   scripts/gpu_build.sh [build-dir] [cmake --build arguments...]
# TURBOJPEG_ROOT: where include/turbojpeg.h and lib/libturbojpeg.so are when
# the system has no libturbojpeg (default: .gpu-deps beside this script's repo).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build-gpu}
shift || true
python=${PYTHON:-python3}

torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
"$python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else "this PyTorch has no CUDA: " + torch.__version__)'
# The NCCL that PyTorch itself loads (nvidia-nccl wheel), so one libnccl.so.2
# serves both; else the toolkit's / the system's.
nccl_root=$("$python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("nvidia.nccl")
paths = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
print(next((p for p in paths if os.path.exists(os.path.join(p, "include", "nccl.h"))), "/usr"))
PY
)
export TURBOJPEG_ROOT=${TURBOJPEG_ROOT:-$repo/.gpu-deps}
cuda_root=${CUDA_HOME:-/usr/local/cuda}
arch=$("$python" -c 'import torch; m, n = torch.cuda.get_device_capability(0); print(f"{m}{n}")' 2>/dev/null || echo 90)

echo "gpu_build: torch $("$python" -c 'import torch; print(torch.__version__)') at $torch_prefix"
echo "gpu_build: NCCL from $nccl_root, CUDA $cuda_root, arch sm_$arch, TurboJPEG root $TURBOJPEG_ROOT"
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DTORCH_CUDA_ARCH_LIST="${arch:0:1}.${arch:1}" \
  -DNCCL_ROOT="$nccl_root" -DPIPET_WITH_CUDA=ON -DPIPET_WITH_NCCL=ON
cmake --build "$build" -j"$(nproc)" "$@"
