"""The Conveyor image's own commands, run from the image's rootfs with
`buildah run --isolation chroot` (crun cannot run containers on these
machines; chroot isolation needs no OCI runtime): `conveyor db upgrade`, the API and the worker, against the local
Temporal, cluster and a database of their own. Run by `make image`, which
sets CONVEYOR_IMAGE_UNDER_TEST and CONVEYOR_IMAGE_STORAGE; `make test` does not collect this folder."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from conveyor.clients.db import tokens
from conveyor.clients.db.queries import ensure_default_project
from conveyor.clients.db.session import current_revision, head_revision, session_scope
from tests.support.api_client import Api
from tests.support.production import MIGRATE_COMMAND, api_and_worker, conveyor_env, inline_kubeconfig

pytestmark = pytest.mark.stack
IMAGE = os.environ["CONVEYOR_IMAGE_UNDER_TEST"]
USER = "10001:10001"
STORAGE = Path(os.environ["CONVEYOR_IMAGE_STORAGE"])  # where build-image.sh built it
BUILDAH = ["buildah", "--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run"), "--storage-driver", "vfs"]


class ImageRunner:
    """Each command in its own working container of IMAGE, as the image's user."""

    def __init__(self, shared: Path):
        self.shared = shared
        self.containers: list[str] = []

    def argv(self, command: list[str], env: dict[str, str]) -> list[str]:
        name = f"conveyor-smoke-{uuid.uuid4().hex[:8]}"
        subprocess.run([*BUILDAH, "from", "--pull=never", "--name", name, IMAGE], check=True, capture_output=True)
        self.containers.append(name)
        args = [*BUILDAH, "run", "--isolation", "chroot", "--user", USER, "-v", f"{self.shared}:{self.shared}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        return [*args, name, "--", *command]

    def __call__(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with log.open("wb") as out:
            return subprocess.Popen(self.argv(command, env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def remove(self) -> None:
        for name in self.containers:
            subprocess.run([*BUILDAH, "rm", name], capture_output=True)


@pytest.fixture
def runner(platform, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 10001, 10001)
    image_runner = ImageRunner(shared)
    yield image_runner
    image_runner.remove()


def test_image_runs_as_non_root_without_build_tools(runner):
    config = subprocess.run([*BUILDAH, "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", IMAGE],
                            check=True, capture_output=True, text=True).stdout.strip()
    assert config == USER
    probe = subprocess.run(runner.argv(["id", "-u"], {}), capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "10001", probe.stdout + probe.stderr
    # apt-get is part of the Debian base; what must be absent are compilers, uv
    # and pip, and the local platform's `temporal` CLI (the `local` group).
    tools = subprocess.run(runner.argv(["sh", "-c", "for t in gcc cc uv pip temporal; do command -v $t; done; true"], {}),
                           capture_output=True, text=True, timeout=120)
    assert tools.stdout.strip() == "", tools.stdout


def test_migrate_api_and_worker_from_the_image_deploy(settings, runner, tmp_path):
    shared = runner.shared
    kubeconfig = shared / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(inline_kubeconfig(settings.effective_kubeconfig)))
    kubeconfig.chmod(0o600)
    os.chown(kubeconfig, 10001, 10001)
    database_url = f"sqlite:///{shared / 'conveyor.db'}"
    env = conveyor_env(settings, CONVEYOR_DATABASE_URL=database_url, CONVEYOR_KUBECONFIG=str(kubeconfig),
                       CONVEYOR_HOME=str(shared / "home"))

    migrate = subprocess.run(runner.argv(MIGRATE_COMMAND, env), capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    # Behaviour, not wording: the schema is at head, and a second run (as when
    # several migration Jobs start together) succeeds and leaves it there.
    assert current_revision(database_url) == head_revision()
    again = subprocess.run(runner.argv(MIGRATE_COMMAND, env), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert current_revision(database_url) == head_revision()
    with session_scope(database_url) as session:
        ensure_default_project(session, settings)
        token = tokens.create_token(session, "proj_default", "admin", "image-smoke")

    with api_and_worker(settings, env, tmp_path, start=runner) as base_url:
        assert httpx.get(f"{base_url}/healthz", timeout=5).json() == {"status": "ok"}
        api = Api(base_url, token, settings.registry)
        app = api.create_app(replicas=1)
        first = api.deployments(app["id"])[-1]
        deployment = api.wait_active(app["id"], first["id"], timeout=180)
        assert deployment["status"] == "active"
