"""Transient failures on the real stack: a deploy outlives a kube-apiserver
outage longer than the old attempt budget, and one whose registry is away is
paused and reset with the `temporal` CLI and then completes. Recording
activities write their audit entry once, however often they run."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import uuid

from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from conveyor.clients.db.models import AuditEntry
from conveyor.clients.db.session import read_scope
from conveyor.clients.temporal_client import connect
from conveyor.domain.payloads import ScaleRecordInput
from conveyor.stack import cluster
from conveyor.stack.platform import Platform
from tests.support.waiting import eventually

# The old policies gave a Kubernetes write 8 attempts (about 1.5 minutes with
# backoff): the outage lasts longer than that.
OUTAGE_SECONDS = 100


def pending_activity(settings, workflow_id: str, activity_type: str):
    async def look():
        client = await connect(settings)
        description = await client.get_workflow_handle(workflow_id).describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == activity_type:
                return pending
        return None

    return asyncio.run(look())


def temporal_cli(settings, *args: str) -> str:
    temporal = f"{sys.prefix}/bin/temporal"
    proc = subprocess.run(
        [temporal, *args, "--address", settings.temporal_address], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_deploy_completes_after_a_kube_apiserver_outage(api, settings, platform):
    # kwokctl stops every cluster component (etcd, kube-apiserver, controllers,
    # KWOK): the API refuses connections, as a restarting control plane does.
    cluster.stop(settings)
    try:
        app = api.create_app(replicas=2)
        dep = api.deployments(app["id"])[0]
        stuck = eventually(
            lambda: (p := pending_activity(settings, dep["workflow_id"], "apply_manifests")) and p.attempt >= 3 and p,
            60,
            what="apply_manifests to be retrying",
        )
        assert stuck.HasField("last_failure"), stuck
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        # It keeps retrying however slowly the attempts come on this machine...
        during = eventually(
            lambda: (p := pending_activity(settings, dep["workflow_id"], "apply_manifests")) and p.attempt > 8 and p,
            3 * OUTAGE_SECONDS,
            interval=2,
            what="apply_manifests to keep retrying through the outage",
        )
        print(f"during the outage: attempt {during.attempt}, last failure: {during.last_failure.message[:120]}")
        # ... and the outage lasts at least OUTAGE_SECONDS.
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        assert api.deployment(app["id"], dep["id"])["status"] == "deploying"
    finally:
        cluster.start(settings)
    api.wait_active(app["id"], dep["id"], timeout=120)
    api.wait_ready(app["id"], 2, timeout=60)


def test_paused_and_reset_resolve_completes_when_the_registry_is_back(api, settings, platform):
    Platform(settings).stop(["registry"])
    try:
        app = api.create_app()
        dep = api.deployments(app["id"])[0]
        workflow_id = dep["workflow_id"]
        failing = eventually(
            lambda: (p := pending_activity(settings, workflow_id, "resolve_image_digest")) and p.attempt >= 2 and p,
            60,
            what="resolve_image_digest to be retrying",
        )
        # The Web UI shows this failure; its text is encrypted by the payload
        # codec (and summarised by the server when large), so only its presence is checked here.
        assert failing.HasField("last_failure"), failing
        temporal_cli(settings, "activity", "pause", "--workflow-id", workflow_id, "--activity-id", failing.activity_id)
        eventually(lambda: pending_activity(settings, workflow_id, "resolve_image_digest").paused, 30, what="the pause")
        temporal_cli(settings, "activity", "reset", "--workflow-id", workflow_id, "--activity-id", failing.activity_id)
        reset = eventually(
            lambda: (p := pending_activity(settings, workflow_id, "resolve_image_digest")) and not p.paused and p,
            30,
            what="the reset to unpause the activity",
        )
        print(f"after reset: attempt {reset.attempt}, paused {reset.paused}")
        assert api.deployment(app["id"], dep["id"])["status"] == "deploying"
    finally:
        Platform(settings).up()
    done = api.wait_active(app["id"], dep["id"], timeout=90)
    assert done["image_digest"]


def test_record_scale_twice_writes_one_audit_entry(api, settings, deployed_app):
    app, _ = deployed_app
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"scale-{app['id']}-{uuid.uuid4().hex[:8]}")
    record = ScaleRecordInput(app_id=app["id"], replicas=3, previous_replicas=2, user="tester", outcome="done")
    activities = RecordActivities(settings)
    # As Temporal does after a lost reply: the same call again.
    env.run(activities.record_scale, record)
    env.run(activities.record_scale, record)
    with read_scope(settings.effective_database_url) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.app_id == app["id"], AuditEntry.action == "scale")
        ).all()
    assert [(r.details, r.operation_key) for r in rows] == [("Scaled from 2 to 3 replicas", env.info.workflow_id)]
    entries = [e for e in api.call("GET", f"/apps/{app['id']}/audit", 200).json() if e["action"] == "scale"]
    assert len(entries) == 1, entries


def test_a_retrying_deploy_says_why_and_the_one_queued_behind_names_it(api, settings, platform):
    Platform(settings).stop(["registry"])
    try:
        app = api.create_app()
        dep = api.deployments(app["id"])[0]
        shown = eventually(
            lambda: (d := api.deployment(app["id"], dep["id"]))["reason"] and d["reason"].startswith("retrying: ") and d,
            30,
            what="the deployment to say it is retrying",
        )
        assert shown["status"] in ("pending", "deploying") and shown["reason"].startswith(f"retrying: registry {api.registry} unreachable (attempt ")
        assert "gives up at" in shown["reason"] and "Traceback" not in shown["reason"]
        queued = api.call("POST", f"/apps/{app['id']}/deploy", 202).json()
        behind = api.deployment(app["id"], queued["id"])
        assert behind["status"] == "queued" and behind["reason"].startswith(f"queued behind {dep['id']} ("), behind
    finally:
        Platform(settings).up()
    done = api.wait_active(app["id"], dep["id"], timeout=120)
    assert done["reason"] is None
    assert api.wait_active(app["id"], queued["id"], timeout=120)["reason"] is None
    api.call("DELETE", f"/apps/{app['id']}", 202)


def test_a_delete_of_an_app_whose_deploy_is_retrying_is_gone_in_seconds(api, kube_api, settings, platform):
    from kubernetes import client

    from conveyor.clients.kubernetes import namespace_for

    Platform(settings).stop(["registry"])
    try:
        app = api.create_app()
        dep = api.deployments(app["id"])[0]
        eventually(lambda: (api.deployment(app["id"], dep["id"])["reason"] or "").startswith("retrying: "), 30, what="the deploy to be retrying")
        api.call("DELETE", f"/apps/{app['id']}", 202)
        eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 30, what="the app to be gone")
    finally:
        Platform(settings).up()
    namespace = namespace_for(settings, "proj_default")
    assert not [d for d in client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items if d.metadata.name == app["slug"]]
    with read_scope(settings.effective_database_url) as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.app_id == app["id"], AuditEntry.action == "delete_requested")).all()
    assert f"cancelling v1 ({dep['id']}" in entry.details
