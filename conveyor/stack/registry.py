"""The local OCI registry (Debian's docker-registry) and its seed images.

The images are built with buildah from Debian's busybox-static, so deploys and
builds have real images to use without any public registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import yaml

from conveyor.registry import MANIFEST_ACCEPT, base_url, manifest_digest  # noqa: F401 - the stack's callers use them from here
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


class Buildah:
    """buildah with vfs storage and chroot isolation under the platform home."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.home / "buildah"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STORAGE_DRIVER": "vfs",
            "BUILDAH_ISOLATION": "chroot",
            "BUILDAH_LAYERS": "true",
        }

    def base_args(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "vfs",
        ]

    def run(self, args: list[str], cwd: Path | None = None, log=None) -> str:
        proc = subprocess.run(
            self.base_args() + args,
            cwd=cwd,
            env=self.env(),
            stdout=log if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"buildah {args[0]} failed (exit {proc.returncode}): {(proc.stdout or '')[-2000:]}")
        return proc.stdout or ""

    def bud_args(self, context: Path, image: str, dockerfile: Path | None = None, pull: bool = True) -> list[str]:
        args = ["bud", "--isolation", "chroot", "--layers", "-f", str(dockerfile or context / "Dockerfile"), "-t", image]
        if not pull:
            args.append("--pull=never")
        elif self.settings.registry_insecure:
            args.append("--tls-verify=false")
        return args + [str(context)]

    def build(self, context: Path, image: str, log=None, dockerfile: str = "Dockerfile") -> None:
        self.run(self.bud_args(context, image, context / dockerfile), cwd=context, log=log)

    def popen(self, args: list[str], cwd: Path) -> subprocess.Popen:
        """A buildah command whose output is read as it comes (own process group, so it can be killed whole)."""
        return subprocess.Popen(
            self.base_args() + args,
            cwd=cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )

    def push(self, image: str, destination: str | None = None) -> str:
        """Push and return the pushed manifest digest."""
        with tempfile.NamedTemporaryFile("r", suffix=".digest") as digest_file:
            args = ["push", "--digestfile", digest_file.name]
            if self.settings.registry_insecure:
                args.append("--tls-verify=false")
            args += [image, f"docker://{destination or image}"]
            self.run(args)
            return Path(digest_file.name).read_text().strip()


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
