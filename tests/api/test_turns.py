"""Whose turn it is to change an app, on the platform: an operation of an
idle app runs at once with no lane; operations that overlap run one at a
time, in the order they were asked for, through the app's lane; and a
holder terminated in the Temporal Web UI does not hold the app up."""

from __future__ import annotations

import asyncio

from kubernetes import client
from sqlalchemy import select, update
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from conveyor.clients.db.models import App, Deployment
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.clients.kubernetes import namespace_for
from conveyor.clients.temporal_client import connect
from tests.support.api_client import start_never_ready_deploy
from tests.support.waiting import eventually


async def described(settings, workflow_id: str):
    temporal = await connect(settings)
    try:
        return await temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def terminate(settings, workflow_id: str) -> None:
    temporal = await connect(settings)
    await temporal.get_workflow_handle(workflow_id).terminate(reason="terminated by the test, as from the Web UI")


def app_row(settings, app_id: str) -> App:
    with read_scope(settings.effective_database_url) as session:
        return session.get_one(App, app_id)


def deployment_rows(settings, app_id: str) -> list[Deployment]:
    with read_scope(settings.effective_database_url) as session:
        return list(session.scalars(select(Deployment).where(Deployment.app_id == app_id).order_by(Deployment.number)).all())


def replicas_in_the_cluster(kube_api, settings, app) -> int:
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(app["slug"], namespace_for(settings, "proj_default"))
    return deployment.spec.replicas


def test_a_lone_deploy_runs_without_a_lane_and_a_burst_runs_one_at_a_time_in_order(api, kube_api, settings, deployed_app):
    app, first = deployed_app
    # Nothing else was in flight: the release ran on its own, started by the API.
    assert asyncio.run(described(settings, f"app-{app['id']}")) is None
    release = asyncio.run(described(settings, deployment_rows(settings, app["id"])[0].workflow_id))
    assert release is not None and release.status == WorkflowExecutionStatus.COMPLETED and release.parent_id is None
    assert app_row(settings, app["id"]).turn is None

    # Four changes back to back: the first runs at once, the other three wait in the lane.
    asked = [api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"]]
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 3})
    asked += [api.call("POST", f"/apps/{app['id']}/deploy", 202).json()["id"] for _ in range(2)]
    for dep_id in asked:
        api.wait_finished(app["id"], dep_id, timeout=120)
    eventually(lambda: app_row(settings, app["id"]).turn is None, 30, what="the lane to give the app's turn back")

    rows = {row.id: row for row in deployment_rows(settings, app["id"])}
    ran = [rows[dep_id] for dep_id in asked]
    assert [row.status for row in ran] == ["superseded", "superseded", "active"]
    # One at a time, in the order asked for: each began after the one before it ended.
    for before, after in zip(ran, ran[1:], strict=False):
        assert before.finished_at is not None and after.started_at is not None and before.finished_at <= after.started_at
    # The scale ran in its place: the last release rolled out at the new count.
    assert replicas_in_the_cluster(kube_api, settings, app) == 3
    lane = asyncio.run(described(settings, f"app-{app['id']}"))
    assert lane is not None and lane.status == WorkflowExecutionStatus.COMPLETED
    row = app_row(settings, app["id"])
    assert (row.turn, row.lane_seq, row.lane_pending) == (None, 3, False)


def test_a_holder_terminated_in_the_web_ui_loses_the_turn_to_the_next_change(api, settings, deployed_app):
    app, _first = deployed_app
    stuck = start_never_ready_deploy(api, app)
    holder = deployment_rows(settings, app["id"])[-1].workflow_id
    assert app_row(settings, app["id"]).turn == holder
    asyncio.run(terminate(settings, holder))
    # It never records an outcome; the next change goes to the lane, which takes the turn from it.
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1", "progress_deadline_seconds": 120})
    dep_id = api.deployments(app["id"])[0]["id"]
    assert dep_id != stuck["id"]
    assert api.wait_finished(app["id"], dep_id, timeout=120)["status"] == "active"
    eventually(lambda: app_row(settings, app["id"]).turn is None, 30, what="the lane to give the app's turn back")


def test_a_holder_temporal_has_no_record_of_loses_the_turn_unless_its_hand_off_waits(api, kube_api, settings, deployed_app):
    app, _first = deployed_app
    # Its history is gone (past the namespace's retention, or Temporal's store was lost).
    with session_scope(settings.effective_database_url) as session:
        session.execute(update(App).where(App.id == app["id"]).values(turn="update-dep_lost_long_ago"))
    api.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 3})
    eventually(lambda: app_row(settings, app["id"]).turn is None, 60, what="the lane to take the turn, scale and give it back")
    assert replicas_in_the_cluster(kube_api, settings, app) == 3
    lane = asyncio.run(described(settings, f"app-{app['id']}"))
    assert lane is not None and lane.status == WorkflowExecutionStatus.COMPLETED
