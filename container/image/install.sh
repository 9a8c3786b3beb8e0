#!/usr/bin/env bash
# The steps both images share (container/Dockerfile for GPUs,
# container/Dockerfile.cpu): build the engine and the launcher from /src with
# the CMake arguments given, install them in /usr/local/bin (outside /opt/ml,
# which SageMaker mounts), set up sshd for multi-host mpirun, and remove the
# sources and the build tree. Run as root inside the image build, after the
# image's ENV lines (ssh sessions get the image's PATH and LD_LIBRARY_PATH).
set -euo pipefail

src=/src
build=/tmp/pipet-build
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPIPET_BUILD_TESTS=OFF -DPIPET_BUILD_BENCHMARKS=OFF "$@"
cmake --build "$build" --target pipetransformer pipet-sagemaker
install -m 0755 "$build/runtime/app/pipetransformer" /usr/local/bin/pipetransformer
install -m 0755 "$build/container/pipet-sagemaker" /usr/local/bin/pipet-sagemaker
ln -sf /usr/local/bin/pipet-sagemaker /usr/local/bin/train
rm -rf "$build" "$src"

# sshd: one key pair baked into the image, so every host of a job trusts every
# other; no host-key prompts; root logs in with the key only; ssh sessions
# (how mpirun starts its daemons on the workers) see the image's environment.
mkdir -p /run/sshd /root/.ssh
ssh-keygen -A
ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys
chmod 700 /root/.ssh
chmod 600 /root/.ssh/authorized_keys /root/.ssh/id_ed25519
printf 'Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    Port 22\n    ServerAliveInterval 30\n' \
  >> /etc/ssh/ssh_config
sed -i -e 's/^#\?PermitRootLogin .*/PermitRootLogin prohibit-password/' \
       -e 's/^#\?Port .*/Port 22/' \
       -e 's/^#\?UsePAM .*/UsePAM no/' /etc/ssh/sshd_config
printf 'PermitUserEnvironment yes\nMaxStartups 100\n' >> /etc/ssh/sshd_config
printf 'PATH=%s\nLD_LIBRARY_PATH=%s\n' "$PATH" "${LD_LIBRARY_PATH:-}" > /root/.ssh/environment

# The launcher is what SageMaker runs; check that the image can start it.
/usr/local/bin/pipetransformer --help > /dev/null
