"""Operate and observe: logs, events, metrics, live progress, cancel and retry,
pagination and the CLI, end to end on the real stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.temporal_client import connect
from conveyor.stack import cluster
from tests.support.api_client import start_never_ready_deploy
from tests.support.waiting import collect_until, eventually, sse_events, stream_lines


def test_logs_tail_and_follow_return_the_lines_kwok_serves(api, settings, deployed_app):
    app, first = deployed_app
    pods = sorted(p["name"] for p in api.status(app["id"])["pods"])
    text = api.call("GET", f"/apps/{app['id']}/logs", 200).text
    for pod in pods:
        for line in cluster.SAMPLE_LOG_LINES:
            assert f"[{pod}] {line}" in text

    tail = api.call("GET", f"/apps/{app['id']}/logs", 200, params={"tail": 1}).text.splitlines()
    assert len(tail) == len(pods) and {line.split("] ", 1)[0][1:] for line in tail} == set(pods)
    one = api.call("GET", f"/apps/{app['id']}/logs", 200, params={"pod": pods[0], "previous": "true"}).text.splitlines()
    assert one == [f"[{pods[0]}] {line}" for line in cluster.PREVIOUS_LOG_LINES]
    assert api.call("GET", f"/apps/{app['id']}/logs", params={"pod": "nope"}).status_code == 404
    assert api.call("GET", f"/apps/{app['id']}/logs", params={"since": "soon"}).status_code == 422

    sink = stream_lines(api, f"/apps/{app['id']}/logs", {"follow": "true", "tail": 1})
    collect_until(sink, lambda lines: len(lines) >= len(pods), timeout=30)
    marker = f"new line {uuid.uuid4().hex}"
    logs_file, _ = cluster.logs_files(settings)
    with logs_file.open("a") as f:
        f.write(cluster.cri_log_line(marker))
    lines = collect_until(sink, lambda lines: sum(marker in line for line in lines) >= len(pods), timeout=30)
    assert {line.split("] ", 1)[0][1:] for line in lines if marker in line} == set(pods)


def test_failed_deploy_shows_scaling_and_failure_events_newest_first(api, deployed_app):
    app, first = deployed_app
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1-crashloop", "progress_deadline_seconds": 10})
    bad = api.wait_finished(app["id"], api.deployments(app["id"])[0]["id"], timeout=120)
    assert bad["status"] == "failed"

    events = api.call("GET", f"/apps/{app['id']}/events", 200, params={"limit": 200}).json()
    reasons = {(e["object"].split("/")[0], e["reason"]) for e in events}
    assert ("Deployment", "ScalingReplicaSet") in reasons
    assert ("Pod", "BackOff") in reasons
    warnings = [e for e in events if e["type"] == "Warning"]
    assert warnings and all(e["count"] >= 1 and e["message"] for e in warnings)
    stamps = [e["last_seen"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert all(e["object"].split("/")[1].startswith(app["slug"]) for e in events)

    page = api.call("GET", f"/apps/{app['id']}/events", 200, params={"limit": 2})
    assert len(page.json()) == 2 and page.headers["X-Next-Cursor"]
    rest = api.call("GET", f"/apps/{app['id']}/events", 200, params={"limit": 200, "cursor": page.headers["X-Next-Cursor"]})
    assert page.json() + rest.json() == events


def test_metrics_are_numbers_or_unavailable_with_a_reason(api, deployed_app):
    app, first = deployed_app

    def filled():
        body = api.call("GET", f"/apps/{app['id']}/metrics", 200).json()
        return body if body["cpu"]["available"] and len(body["pods"]) == 2 and all(p["cpu_millicores"] for p in body["pods"]) else None

    body = eventually(filled, 90, interval=2, what="CPU and memory figures for both pods")
    assert body["cpu"]["unit"] == "millicores" and body["cpu"]["total"] > 0
    assert body["memory"]["unit"] == "bytes" and body["memory"]["total"] == sum(p["memory_bytes"] for p in body["pods"])
    for measure in ("disk", "network_rx", "network_tx"):
        figure = body[measure]
        if figure["available"]:
            assert figure["total"] is not None
        else:
            assert figure["reason"] and "stats/summary" in figure["reason"]
            assert all(p[f"{measure}_bytes"] is None for p in body["pods"])


def test_progress_stream_delivers_each_step_in_order(api, deployed_app):
    app, first = deployed_app
    dep = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    sink = stream_lines(api, f"/apps/{app['id']}/deployments/{dep['id']}/progress")
    lines = collect_until(sink, lambda lines: any(line.startswith("event: end") for line in lines) and lines[-1].startswith("data:"), 90)
    events = sse_events(lines)
    assert events[-1] == ("end", {"id": dep["id"], "status": "active", "reason": None})
    steps = [data for kind, data in events if kind == "step"]
    order = list(dict.fromkeys(step["name"] for step in steps))
    assert order == ["resolve", "apply", "rollout", "finalize"]
    # Each step's last state reached the reader before `end`.
    assert {step["name"]: step["state"] for step in steps} == dict.fromkeys(order, "done")
    rollout_done = [s for s in steps if s["name"] == "rollout" and s["state"] == "done"]
    assert rollout_done and rollout_done[-1]["detail"] == "2/2 ready"
    progress = api.deployment(app["id"], dep["id"])["progress"]
    assert [p["name"] for p in progress] == order


def assert_cancelled_and_restored(api, kube_api, settings, app, first, dep):
    from kubernetes import client

    done = api.wait_finished(app["id"], dep["id"], timeout=90)
    assert done["status"] == "cancelled", done
    assert first["id"] in done["reason"]
    assert api.deployment(app["id"], first["id"])["status"] == "active"
    image = (
        client.AppsV1Api(kube_api)
        .read_namespaced_deployment(app["slug"], namespace_for(settings, "proj_default"))
        .spec.template.spec.containers[0]
        .image
    )
    assert image == first["image_ref"]
    api.wait_ready(app["id"], 2)
    actions = [a["action"] for a in api.call("GET", f"/apps/{app['id']}/audit", 200).json()]
    assert "update_cancelled" in actions


def test_cancel_through_the_api_restores_the_previous_deployment(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    dep = start_never_ready_deploy(api, app)
    response = api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel", 202)
    assert response.json()["id"] == dep["id"]
    assert_cancelled_and_restored(api, kube_api, settings, app, first, dep)
    assert api.call("POST", f"/apps/{app['id']}/deployments/{dep['id']}/cancel").status_code == 409


def test_cancel_through_the_temporal_client_has_the_same_outcome(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    dep = start_never_ready_deploy(api, app)

    async def cancel():
        temporal = await connect(settings)
        await temporal.get_workflow_handle(dep["workflow_id"]).cancel()

    asyncio.run(cancel())
    assert_cancelled_and_restored(api, kube_api, settings, app, first, dep)


def test_cancel_of_a_queued_deployment_is_immediate(api, deployed_app):
    app, first = deployed_app
    # The one ahead never becomes ready, so the queued one cannot start
    # before its cancel arrives, however slow this machine is.
    running = start_never_ready_deploy(api, app)
    queued = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    assert queued["status"] == "queued"
    cancelled = api.call("POST", f"/apps/{app['id']}/deployments/{queued['id']}/cancel", 202).json()
    assert cancelled["status"] == "cancelled" and "before it started" in cancelled["reason"]
    api.call("POST", f"/apps/{app['id']}/deployments/{running['id']}/cancel", 202)
    assert api.wait_finished(app["id"], running["id"], timeout=90)["status"] == "cancelled"
    assert api.deployment(app["id"], queued["id"])["status"] == "cancelled"
    assert api.deployment(app["id"], first["id"])["status"] == "active"


def test_retry_of_a_failed_deployment_is_a_new_one_with_the_same_snapshot(api, deployed_app):
    app, first = deployed_app
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1-pullfail", "progress_deadline_seconds": 10})
    failed = api.wait_finished(app["id"], api.deployments(app["id"])[0]["id"], timeout=120)
    assert failed["status"] == "failed"
    retry = api.call("POST", f"/apps/{app['id']}/deployments/{failed['id']}/retry", 202).json()
    assert retry["id"] != failed["id"] and retry["retry_of"] == failed["id"]
    assert retry["image_ref"] == failed["image_ref"] and retry["env_keys"] == failed["env_keys"]
    assert api.wait_finished(app["id"], retry["id"], timeout=120)["status"] == "failed"
    assert api.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/retry").status_code == 409


def conveyor_cli(settings, token: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVEYOR_TOKEN": token, "CONVEYOR_API_URL": settings.api_url}
    return subprocess.run([sys.executable, "-m", "conveyor.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_deploys_follows_and_rolls_back(api, settings, make_token):
    token, name = make_token("admin")
    app = f"cli-{uuid.uuid4().hex[:6]}"
    created = conveyor_cli(settings, token, "apps", "create", app, "--image", f"{settings.registry}/demo/web:v1", "--replicas", "2")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "✓ rollout" in created.stdout and created.stdout.rstrip().endswith("active")

    conveyor_cli(settings, token, "apps", "scale", app, "3").check_returncode()
    redeploy = conveyor_cli(settings, token, "apps", "deploy", app)
    assert redeploy.returncode == 0 and "✓ finalize" in redeploy.stdout

    back = conveyor_cli(settings, token, "apps", "rollback", app)
    assert back.returncode == 0, back.stdout + back.stderr
    history = conveyor_cli(settings, token, "deployments", app)
    assert history.returncode == 0
    rows = history.stdout.splitlines()[1:]
    assert rows[0].split()[2:4] == ["rollback", "active"] and len(rows) == 3

    listed = conveyor_cli(settings, token, "apps", "list")
    assert app in listed.stdout
    logs = conveyor_cli(settings, token, "logs", app, "--tail", "1")
    assert logs.returncode == 0 and len(logs.stdout.splitlines()) == 3

    bad = conveyor_cli(
        settings, token, "apps", "create", f"{app}-bad", "--image", f"{settings.registry}/demo/web:v1-crashloop", "--progress-deadline", "10"
    )
    assert bad.returncode == 1 and "failed" in bad.stdout and "CrashLoopBackOff" in bad.stdout

    gone = conveyor_cli(settings, token, "apps", "delete", app)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert conveyor_cli(settings, token, "apps", "get", app).returncode == 2


def test_a_delete_supersedes_a_stuck_rollout_and_the_app_is_gone_in_seconds(api, kube_api, settings, deployed_app):
    from kubernetes import client
    from sqlalchemy import select

    from conveyor.clients.db.models import AuditEntry
    from conveyor.clients.db.session import read_scope

    app, first = deployed_app
    stuck = start_never_ready_deploy(api, app)  # its progress deadline is 300 s away
    queued = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    api.call("DELETE", f"/apps/{app['id']}", 202)
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 30, what="the app to be gone")
    namespace = namespace_for(settings, "proj_default")
    assert not [d for d in client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items if d.metadata.name == app["slug"]]
    assert not client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={app['slug']}").items
    with read_scope(settings.effective_database_url) as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.app_id == app["id"])).all()
    [requested] = [e for e in entries if e.action == "delete_requested"]
    assert f"cancelling v{stuck['number']} ({stuck['id']}" in requested.details and f"cancelled v{queued['number']} ({queued['id']})" in requested.details
    assert first["id"] not in requested.details


def test_a_delete_survives_a_kill_of_the_worker_between_its_cancel_and_its_cleanup(api, kube_api, settings, platform, deployed_app):
    import signal

    from kubernetes import client

    from conveyor.stack.platform import Platform
    from conveyor.stack.processes import ProcessTable

    app, _first = deployed_app
    stuck = start_never_ready_deploy(api, app)
    api.call("DELETE", f"/apps/{app['id']}", 202)
    # The lane has cancelled the stuck release (it records its end), and the delete has not finished yet.
    def cancelled_or_gone() -> bool:
        answer = api.call("GET", f"/apps/{app['id']}/deployments/{stuck['id']}")
        return answer.status_code == 404 or answer.json()["status"] == "cancelled"

    eventually(cancelled_or_gone, 30, what="the stuck release to be cancelled")
    worker = ProcessTable(settings.home / "run", settings.home / "logs").get("worker")
    assert worker is not None
    os.killpg(worker.pid, signal.SIGKILL)
    Platform(settings).up()
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 90, what="the app to be gone after the worker came back")
    namespace = namespace_for(settings, "proj_default")
    assert not client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={app['slug']}").items
