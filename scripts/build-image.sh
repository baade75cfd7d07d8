#!/usr/bin/env bash
# `make image`: build the Conveyor image (Containerfile) with buildah on the
# Debian base from scripts/base-image.sh, push it to CONVEYOR_REGISTRY, then
# smoke-test it (tests/image: the image's own API, worker and migration
# command against the local platform, a /healthz and a real deploy).
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${CONVEYOR_REGISTRY:-127.0.0.1:5000}
image=$registry/conveyor/conveyor:${IMAGE_TAG:-latest}
export CONVEYOR_IMAGE_STORAGE=${CONVEYOR_IMAGE_STORAGE:-${CONVEYOR_HOME:-$PWD/.conveyor}/image-build}
store=(buildah --root "$CONVEYOR_IMAGE_STORAGE/storage" --runroot "$CONVEYOR_IMAGE_STORAGE/run" --storage-driver vfs)
uv run conveyor up --detach >/dev/null   # the registry the base goes to, and the stack the smoke test uses
base=$(scripts/base-image.sh)

secret=()
# Trust the host's CA bundle for the builder's downloads (TLS-inspecting networks).
[ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
echo "building $image on $base" >&2
"${store[@]}" bud --isolation chroot --layers "${secret[@]}" \
  --build-arg BASE="$base" -f Containerfile -t "$image" .
"${store[@]}" push --quiet --tls-verify=false "$image" "docker://$image"
echo "pushed $image" >&2
# Every vfs layer is a whole rootfs (about 1 GB here): drop the ones no tag
# needs. The next build re-runs its steps, fast with the uv cache and the
# debootstrap tarball.
"${store[@]}" rmi --prune >/dev/null || true
CONVEYOR_IMAGE_UNDER_TEST=$image uv run pytest -q tests/image
