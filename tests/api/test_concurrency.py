"""A crowd at once: concurrent writers never stall the API or each other, and
the hand-off from the database to Temporal survives an API that cannot reach
Temporal (the operation is committed, and another API process delivers it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from conveyor.clients.db.models import Deployment, Handoff
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.ids import utcnow
from conveyor.domain.payloads import Operation
from tests.support.api_client import DEMO_IMAGE
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
CREATES = 24
IMAGE = f"{DEMO_IMAGE}:v1"


async def _crowd(base: str, token: str, names: list[str]) -> tuple[list[httpx.Response], list[httpx.Response], list[float]]:
    """Creates and reads in parallel, while /healthz is asked every 50 ms."""
    headers = {"Authorization": f"Bearer {token}"}
    health_latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        done = asyncio.Event()

        async def probe_health() -> None:
            while not done.is_set():
                started = time.monotonic()
                response = await http.get("/healthz", timeout=30)
                assert response.status_code == 200
                health_latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        async def create(name: str) -> httpx.Response:
            return await http.post("/api/v1/apps", json={"name": name, "image_url": IMAGE, "port": 8080})

        async def read(i: int) -> httpx.Response:
            await asyncio.sleep(0.01 * i)
            return await http.get("/api/v1/apps", params={"limit": 20})

        prober = asyncio.create_task(probe_health())
        creates, reads = await asyncio.gather(
            asyncio.gather(*(create(n) for n in names)), asyncio.gather(*(read(i) for i in range(CREATES)))
        )
        done.set()
        await prober
    return list(creates), list(reads), health_latencies


def test_concurrent_creates_and_reads_all_succeed_while_healthz_answers(api, settings, admin_token):
    names = [f"crowd-{uuid.uuid4().hex[:8]}" for _ in range(CREATES)]
    creates, reads, health = asyncio.run(_crowd(settings.api_url, admin_token, names))

    assert [r.status_code for r in creates] == [201] * CREATES, [r.text for r in creates if r.status_code != 201]
    assert [r.status_code for r in reads] == [200] * CREATES, [r.text for r in reads if r.status_code != 200]
    # Correctness, not speed (the benchmark measures its latency): every
    # /healthz asked during the run was answered 200 (each within the
    # client's timeout), while the writers were busy.
    assert health, "healthz was never answered during the run"

    # Every app was written once, and every first deployment runs.
    apps = {a["name"]: a for a in api.call("GET", "/apps", 200).json()}
    assert set(names) <= set(apps)
    for name in names:
        deps = api.deployments(apps[name]["id"])
        assert len(deps) == 1
        api.wait_active(apps[name]["id"], deps[0]["id"], timeout=180)
    for name in names:
        api.call("DELETE", f"/apps/{apps[name]['id']}", 202)


def test_concurrent_creates_of_one_name_give_one_app_and_clean_conflicts(api, settings, admin_token):
    name = f"twin-{uuid.uuid4().hex[:8]}"

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as http:
            return await asyncio.gather(
                *(http.post("/api/v1/apps", json={"name": name, "image_url": IMAGE, "port": 8080}) for _ in range(12))
            )

    codes = sorted(r.status_code for r in asyncio.run(run()))
    assert codes == [201] + [409] * 11, codes
    same = [a for a in api.call("GET", "/apps", 200).json() if a["name"] == name]
    assert len(same) == 1
    assert len(api.deployments(same[0]["id"])) == 1
    api.call("DELETE", f"/apps/{same[0]['id']}", 202)


def test_concurrent_repeats_of_one_idempotency_key_start_one_deployment(api, deployed_app, settings, admin_token):
    app, _first = deployed_app
    key = f"ci-{uuid.uuid4().hex}"

    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {admin_token}", "Idempotency-Key": key}
        async with httpx.AsyncClient(base_url=settings.api_url, headers=headers, timeout=60) as http:
            return await asyncio.gather(*(http.post(f"/api/v1/apps/{app['id']}/restart") for _ in range(10)))

    responses = asyncio.run(run())
    assert all(r.status_code in (202, 409) for r in responses), [r.text for r in responses]
    started = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(started) == 1, started
    restarts = [d for d in api.deployments(app["id"]) if d["operation"] == "restart"]
    assert [d["id"] for d in restarts] == list(started)
    api.wait_active(app["id"], restarts[0]["id"])


@pytest.fixture
def api_without_temporal(platform, settings):
    """A second API process on the same database whose Temporal address leads nowhere:
    it commits operations but cannot hand them off, like an API that died right
    after its commit."""
    port = settings.api_port + 7
    env = {
        **os.environ,
        "CONVEYOR_HOME": str(settings.home),
        "CONVEYOR_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "CONVEYOR_API_PORT": str(port),
        # This one must never deliver: its reconciler only ever fails.
        "CONVEYOR_HANDOFF_INTERVAL_SECONDS": "3600",
    }
    if settings.database_url:
        env["CONVEYOR_DATABASE_URL"] = settings.database_url
    log = (settings.home / "logs" / "api-without-temporal.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, what="the second API")
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_an_operation_committed_but_not_handed_off_is_delivered_by_another_api(api, api_without_temporal, settings, admin_token):
    http = httpx.Client(base_url=f"{api_without_temporal}/api/v1", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    created = http.post("/apps", json={"name": f"orphan-{uuid.uuid4().hex[:8]}", "image_url": IMAGE, "port": 8080, "replicas": 2})
    # Committed: the answer says so, and the operation waits for its hand-off.
    assert created.status_code == 201, created.text
    app = created.json()
    deps = api.deployments(app["id"])
    assert [d["status"] for d in deps] == ["pending"]
    with read_scope(settings.effective_database_url) as session:
        waiting = session.scalars(select(Handoff).where(Handoff.app_id == app["id"])).all()
        assert [h.workflow_id for h in waiting] == [deps[0]["workflow_id"]]
        assert waiting[0].attempts >= 1 and waiting[0].last_error

    # The platform's own API hands it off after the grace period, exactly once.
    done = api.wait_active(app["id"], deps[0]["id"], timeout=90)
    assert done["status"] == "active"
    with read_scope(settings.effective_database_url) as session:
        assert session.scalars(select(Handoff).where(Handoff.app_id == app["id"])).all() == []
    api.wait_ready(app["id"], 2)
    api.call("DELETE", f"/apps/{app['id']}", 202)


def test_a_lost_crossing_off_does_not_run_an_operation_twice(api, deployed_app, settings):
    """Fault injected in the database (the real API cannot be stopped between
    its hand-off and the crossing-off): the outbox row of a deployment that ran
    reappears. The reconciler must see its workflow and only cross it off."""
    app, first = deployed_app
    with read_scope(settings.effective_database_url) as session:
        dep = session.get(Deployment, first["id"])
        workflow_id = dep.workflow_id
    op = Operation(
        kind="deploy", app_id=app["id"], project_id=app["project_id"], workflow_id=workflow_id, deployment_id=first["id"], summary="replayed"
    )
    with session_scope(settings.effective_database_url) as session:
        session.add(
            Handoff(workflow_id=workflow_id, app_id=app["id"], operation=op.model_dump(), created_at=utcnow() - timedelta(minutes=5))
        )

    def crossed_off() -> bool:
        with read_scope(settings.effective_database_url) as session:
            return session.get(Handoff, workflow_id) is None

    eventually(crossed_off, 30, what="the reconciler to cross the row off")
    deps = api.deployments(app["id"])
    assert [(d["id"], d["status"]) for d in deps] == [(first["id"], "active")]
    audit = api.call("GET", f"/apps/{app['id']}/audit", 200).json()
    assert sum(1 for e in audit if e["action"] == "deploy") == 1


def test_concurrent_changes_of_one_app_each_keep_their_part(api, deployed_app, settings, admin_token):
    """Ten PATCHes of one app at once, each adding its own env key: none is
    lost (each change reads the app as the one before it left it), and each is
    one numbered deployment."""
    app, _first = deployed_app

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as http:
            return await asyncio.gather(
                *(http.patch(f"/api/v1/apps/{app['id']}", json={"env": {f"KEY_{i}": str(i)}}) for i in range(10))
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses if r.status_code != 202]
    env = api.call("GET", f"/apps/{app['id']}", 200).json()["env"]
    assert {f"KEY_{i}" for i in range(10)} <= set(env)
    numbers = [d["number"] for d in api.deployments(app["id"])]
    assert sorted(numbers) == list(range(1, 12))
