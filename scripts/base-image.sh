#!/usr/bin/env bash
# Build the Conveyor image's base from Debian's packages (no public image can be
# pulled here) and push it to the registry: a minimal bookworm rootfs made by
# debootstrap with Python 3.11 and what the worker runs (git, buildah).
#
# The rootfs is cached as a tarball under ~/.cache/conveyor keyed by the
# package list, so repeat builds skip debootstrap. Prints the pushed image name.
set -euo pipefail

registry=${CONVEYOR_REGISTRY:-127.0.0.1:5000}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# containernetworking-plugins: buildah needs a container-network-stack, a
# virtual package debootstrap cannot pick a provider for itself.
packages=python3.11,ca-certificates,git,buildah,containernetworking-plugins,uidmap,slirp4netns
key=$(printf '%s %s %s' "$suite" "$packages" "$(dpkg-query -W -f='${Version}' debootstrap)" | sha256sum | cut -c1-12)
cache=${CONVEYOR_CACHE:-$HOME/.cache/conveyor}/debian-base
tarball=$cache/$suite-$key.tar
image=$registry/conveyor/debian-python:$suite-3.11-$key

if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  # debootstrap mounts /proc (and more) inside the rootfs while it configures
  # packages; unmount whatever a failed run left before deleting the folder.
  # (`|| true`: under pipefail, a grep that finds no mount would end the trap
  # before its rm, and the script with status 1.)
  trap 'findmnt -rno TARGET | grep "^$work/" | sort -r | xargs -r umount -l || true; rm -rf "$work"' EXIT
  echo "debootstrap $suite ($packages) into $work" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
  # apt's lists and caches are not part of a runtime image.
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$work/rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

# The image build's own buildah storage (vfs keeps a full copy per layer, so it
# is pruned after each build): CONVEYOR_IMAGE_STORAGE, set by build-image.sh.
storage=${CONVEYOR_IMAGE_STORAGE:-${CONVEYOR_HOME:-$PWD/.conveyor}/image-build}
store=(buildah --root "$storage/storage" --runroot "$storage/run" --storage-driver vfs)
if ! "${store[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  ctr=$("${store[@]}" from scratch)
  "${store[@]}" add "$ctr" "$tarball" / >/dev/null
  "${store[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
  "${store[@]}" commit --quiet "$ctr" "$image" >/dev/null
  "${store[@]}" rm "$ctr" >/dev/null
fi
"${store[@]}" push --quiet --tls-verify=false "$image" "docker://$image" >&2
echo "$image"
