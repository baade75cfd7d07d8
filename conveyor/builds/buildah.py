"""buildah, the builder: vfs storage and chroot isolation under the platform
home. Used by the build activities and by the local platform's seed images."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from conveyor.settings import Settings

# What buildah prints when it could not start the runner of a build step, before
# the step ran: the kernel refused to seal or execute its in-memory copy of
# itself (sealing fails with EBUSY while the copy's pages are briefly pinned, as
# under memory reclaim in the build's cgroup). Nothing the source did.
STARTUP_FAULTS = ("Close_Fd sealing memfd copy:", "Error sealing memfd copy:", "Error during reexec(...):")


def startup_fault(line: str) -> bool:
    """Whether a line of buildah's output says it could not start a build step's runner."""
    return line.lstrip().startswith(STARTUP_FAULTS)


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
