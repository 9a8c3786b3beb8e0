# Sourced by the image scripts: sets the array `engine` to the container
# command to use (podman with the project's containers.conf, or docker where
# its daemon answers) and defines apt_install. Installs podman and runc from
# Debian when neither is there.
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" > /dev/null ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; }
}

if [ -n "${PIPET_CONTAINER_ENGINE:-}" ]; then
  read -r -a engine <<< "$PIPET_CONTAINER_ENGINE"
elif command -v podman > /dev/null; then
  engine=(podman)
elif command -v docker > /dev/null && timeout 10 docker info > /dev/null 2>&1; then
  engine=(docker)
else
  echo "container: installing podman (Debian's)"
  apt_install podman runc
  engine=(podman)
fi
if [ "${engine[0]}" = podman ]; then
  command -v runc > /dev/null || apt_install runc
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/container/podman/containers.conf}"
fi
