#!/usr/bin/env bash
# Builds the CPU image pipetransformer:cpu (container/Dockerfile.cpu) with
# podman, or docker where a docker daemon answers. Idempotent: installs podman
# (Debian's) when neither is there, and makes the Debian 12 base image once
# with debootstrap when no registry is reachable (PIPET_BASE_IMAGE names
# another base). Usage: scripts/build_image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-pipetransformer:cpu}
base=${PIPET_BASE_IMAGE:-localhost/pipet-debian:bookworm}
mirror=${PIPET_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# shellcheck source=scripts/container_engine.sh
source scripts/container_engine.sh

started=$(date +%s)
if ! "${engine[@]}" image exists "$base" 2>/dev/null && ! "${engine[@]}" image inspect "$base" > /dev/null 2>&1; then
  if [ -n "${PIPET_BASE_IMAGE:-}" ]; then
    echo "build_image: base image $base not found (PIPET_BASE_IMAGE)" >&2
    exit 1
  fi
  command -v debootstrap > /dev/null || apt_install debootstrap
  rootfs=$(mktemp -d /var/tmp/pipet-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build_image: making the base image $base with debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log" >&2; echo "build_image: debootstrap failed (log: $rootfs.log)" >&2; exit 1; }
  tar -C "$rootfs" -c . | "${engine[@]}" import - "$base" > /dev/null
  rm -f "$rootfs.log"
fi
echo "build_image: building $tag on $base"
"${engine[@]}" build --network host -f container/Dockerfile.cpu --build-arg "BASE_IMAGE=$base" -t "$tag" .
echo "build_image: $tag built in $(( $(date +%s) - started )) s"
