#!/usr/bin/env bash
# Idempotent setup for a Debian 12 machine: installs every package the build,
# the tests and the demo need. Safe to run again: apt skips what is present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev python3-torch libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libturbojpeg0-dev libpng-dev
  python3-matplotlib dataset-fashion-mnist
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
