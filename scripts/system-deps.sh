#!/usr/bin/env bash
# Install the Debian packages and tools the local platform needs, if missing.
# Safe to run again: it only installs what is absent.
set -euo pipefail

need=()
command -v buildah >/dev/null || need+=(buildah)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v ss >/dev/null || need+=(iproute2)
command -v git >/dev/null || need+=(git)
command -v unshare >/dev/null && command -v prlimit >/dev/null || need+=(util-linux)
command -v newuidmap >/dev/null || need+=(uidmap)
command -v slirp4netns >/dev/null || need+=(slirp4netns)
# The Web UI codec test drives headless Chromium through the distribution's driver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root, or install these yourself: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Builds run in a user namespace whose root is an unprivileged range of host
# ids (conveyor/builds/sandbox.py); newuidmap hands out only ranges listed here.
if ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null || ! grep -q "^$(id -un):" /etc/subgid 2>/dev/null; then
  echo "adding subordinate ids 100000-165535 for $(id -un) (the build sandbox's users)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root, or add them yourself: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $(id -un)" >&2
    exit 1
  fi
  usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "$(id -un)"
fi

if ! command -v go >/dev/null; then
  echo "error: Go (1.24 or newer) is needed to build Kubernetes, etcd and KWOK from their modules" >&2
  exit 1
fi

if ! command -v uv >/dev/null; then
  echo "installing uv from PyPI"
  python3 -m pip install --quiet uv
fi
