"""The local OCI registry (Debian's docker-registry) and its seed images.

The images are built with buildah from Debian's busybox-static, so deploys and
builds have real images to use without any public registry.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import yaml

from conveyor.builds.buildah import Buildah  # noqa: F401 - the stack's callers use it from here
from conveyor.clients.oci_registry import MANIFEST_ACCEPT, base_url, manifest_digest  # noqa: F401 - the stack's callers use them from here
from conveyor.settings import Settings
from conveyor.stack import versions

REGISTRY_BINARY = "/usr/bin/docker-registry"

# Demo app images: (repository, tags, index.html text). The marker tags share
# the bits of v1; only the tag tells the simulated kubelet how to fail.
DEMO_IMAGES: list[tuple[str, tuple[str, ...], str]] = [
    ("demo/web", ("v1", "latest", "v1-crashloop", "v1-pullfail", "v1-neverready"), "demo web v1"),
    ("demo/web", ("v2",), "demo web v2"),
]


def config_text(settings: Settings) -> str:
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(settings.home / "registry")},
            "delete": {"enabled": True},
        },
        "http": {"addr": settings.registry},
    }
    return yaml.safe_dump(config)


def server_command(settings: Settings) -> list[str]:
    config = settings.home / "registry.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text(settings))
    return [REGISTRY_BINARY, "serve", str(config)]


def url(settings: Settings) -> str:
    return base_url(settings)


def healthy(settings: Settings) -> bool:
    return httpx.get(f"{url(settings)}/v2/", timeout=2.0).status_code == 200


def base_image(settings: Settings) -> str:
    return f"{settings.registry}/{versions.BASE_IMAGE_REPOSITORY}:{versions.BASE_IMAGE_TAG}"


def _busybox_rootfs(target: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    bin_dir = target / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    for folder in ("tmp", "etc", "app", "www"):
        (target / folder).mkdir()
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n")
    (target / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")


def ensure_seed_images(settings: Settings, progress) -> None:
    """Build and push the base and demo images unless the registry has them."""
    builder = Buildah(settings)
    base = base_image(settings)
    if manifest_digest(settings, versions.BASE_IMAGE_REPOSITORY, versions.BASE_IMAGE_TAG) is None:
        progress(f"building base image {base} from busybox-static")
        with tempfile.TemporaryDirectory(prefix="conveyor-base-") as tmp:
            context = Path(tmp)
            _busybox_rootfs(context / "rootfs")
            (context / "Dockerfile").write_text(
                "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nWORKDIR /app\nCMD [\"/bin/sh\"]\n"
            )
            builder.build(context, base)
        progress(f"pushed {base} ({builder.push(base)})")
    for repository, tags, text in DEMO_IMAGES:
        wanted = [t for t in tags if manifest_digest(settings, repository, t) is None]
        if not wanted:
            continue
        image = f"{settings.registry}/{repository}:{tags[0]}"
        progress(f"building demo image {image}")
        with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as tmp:
            context = Path(tmp)
            (context / "index.html").write_text(text + "\n")
            (context / "Dockerfile").write_text(
                f"FROM {base}\nCOPY index.html /www/index.html\nRUN echo built > /www/build.txt\n"
                "EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
            )
            builder.build(context, image)
        for tag in wanted:
            target = f"{settings.registry}/{repository}:{tag}"
            progress(f"pushed {target} ({builder.push(image, target)})")
