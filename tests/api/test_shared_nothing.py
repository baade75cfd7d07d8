"""API replicas and workers share nothing but the database, Temporal, the
registry and the cluster: two APIs and two workers, each with its own
CONVEYOR_HOME, build an upload received by one API while the other API
streams the build log live."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from conveyor.clients import oci_registry
from conveyor.clients.db.models import Build
from conveyor.clients.db.session import read_scope
from conveyor.clients.temporal_client import connect
from tests.support.api_client import Api, tarball, upload, upload_app
from tests.support.waiting import collect_until, eventually, stream_closes, stream_lines

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replicas:
    """Extra API and worker processes on their own task queue (the stack's own
    worker polls the default one) and their own homes."""

    def __init__(self, settings, base: Path):
        self.settings, self.base = settings, base
        self.queue = f"shared-nothing-{uuid.uuid4().hex[:8]}"
        self.processes: list[subprocess.Popen] = []

    def env(self, name: str, **extra: str) -> dict[str, str]:
        home = self.base / name
        home.mkdir(parents=True)
        return {
            **os.environ,
            "CONVEYOR_HOME": str(home),
            "CONVEYOR_DATABASE_URL": self.settings.effective_database_url,
            "CONVEYOR_KUBECONFIG": str(self.settings.effective_kubeconfig),
            "CONVEYOR_PAYLOAD_KEY_FILE": str(self.settings.effective_payload_key_file),
            "CONVEYOR_TEMPORAL_TASK_QUEUE": self.queue,
            **extra,
        }

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen:
        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env(name, **extra), stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def worker(self, name: str) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "worker"])

    def api(self, name: str) -> str:
        port = _free_port()
        self.start(
            name,
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port", str(port)],
            CONVEYOR_API_PORT=str(port),
        )
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 90, what=f"{name} to be ready")
        return url

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def replicas(platform, settings):
    base = settings.home / "replicas" / uuid.uuid4().hex[:8]
    group = Replicas(settings, base)
    yield group
    group.stop()
    shutil.rmtree(base, ignore_errors=True)


def _build_image_identities(settings, workflow_id: str) -> list[str]:
    """The identities of the workers that ran `build_image` in a workflow's history."""

    async def read() -> list[str]:
        client = await connect(settings)
        scheduled: dict[int, str] = {}
        identities = []
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            if event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if scheduled.get(started.scheduled_event_id) == "build_image":
                    identities.append(started.identity)
        return identities

    return asyncio.run(read())


def test_upload_on_one_api_builds_on_any_worker_and_streams_live_from_the_other_api(replicas, settings, admin_token):
    workers = [replicas.worker("worker-a"), replicas.worker("worker-b")]
    receiving = Api(replicas.api("api-a"), admin_token, settings.registry)
    following = Api(replicas.api("api-b"), admin_token, settings.registry)

    app = upload_app(receiving)
    source = {"Dockerfile": f"FROM {settings.build_base_image}\nRUN echo step-one && sleep 4 && echo step-two\n"}
    data = tarball(source)
    dep = upload(receiving, app["id"], data).json()

    sink = stream_lines(following, f"/apps/{app['id']}/build-log", {"follow": "true", "build_id": dep["build_id"]})
    first = collect_until(sink, lambda lines: any("step-one" in line for line in lines), timeout=120)
    # Live: the other API has the first lines while the build still runs.
    assert following.deployment(app["id"], dep["id"])["status"] == "building"
    lines = first + collect_until(sink, lambda lines: any("==> pushed" in line for line in lines), timeout=180)
    assert any("step-two" in line for line in lines)
    assert any("unpacking the uploaded source" in line for line in lines)
    # The stream ends when the build does.
    assert stream_closes(sink, 60)
    done = following.wait_active(app["id"], dep["id"], timeout=120)

    # The source went through the registry, not a disk: the row names the
    # artifact, the registry holds the very bytes uploaded, and no API kept a file.
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with read_scope(settings.effective_database_url) as session:
        build = session.get(Build, dep["build_id"])
    assert build.upload_path is None and build.source_ref == f"conveyor/sources/proj-default@{digest}"
    base = oci_registry.base_url(settings)
    manifest = httpx.get(
        f"{base}/v2/conveyor/sources/proj-default/manifests/upload-{digest.removeprefix('sha256:')}",
        headers={"Accept": oci_registry.OCI_MANIFEST},
    ).json()
    assert manifest["config"]["mediaType"] == oci_registry.SOURCE_ARTIFACT_TYPE
    assert [layer["digest"] for layer in manifest["layers"]] == [digest]
    assert httpx.get(f"{base}/v2/conveyor/sources/proj-default/blobs/{digest}", follow_redirects=True).content == data
    assert not list(replicas.base.glob("api-*/uploads/*"))

    # One of the two extra workers ran the build (not the stack's own worker on another queue).
    identities = _build_image_identities(settings, done["workflow_id"])
    host = socket.gethostname()
    assert identities and identities[-1] in {f"{w.pid}@{host}" for w in workers}, identities
