"""Whose turn it is to change an app (conveyor/clients/db/turns.py), through
the API in process and the worker's own activities, on the real database.

An operation of an app with nothing in flight is handed off to run at once;
one that overlaps goes to the app's lane with its place; the holder's
outcome gives the turn to the lane, and the lane gives it back once it has
run all it was handed. A crowd routing at once gets one holder."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, select
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from activities.turns import TurnActivities
from conveyor.clients.db import turns
from conveyor.clients.db.models import App, Handoff
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.payloads import BeginDeploymentInput, FinishDeploymentInput, Operation, ScaleRecordInput, TurnInput
from conveyor.domain.vocabulary import DeploymentStatus
from tests.support.in_process import fail_delete


def run_as(workflow_id: str, fn, request):
    """A worker's activity, run for the workflow `workflow_id`."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env.run(fn, request)


def turn_of(settings, app_id: str) -> tuple[str | None, int, bool]:
    with read_scope(settings.effective_database_url) as session:
        app = session.get_one(App, app_id)
        return app.turn, app.lane_seq, app.lane_pending


def handed(settings, app_id: str) -> dict[str, Operation]:
    """The operations waiting in the outbox (Temporal is away here), by workflow id."""
    with read_scope(settings.effective_database_url) as session:
        found = session.scalars(select(Handoff).where(Handoff.app_id == app_id)).all()
        return {row.workflow_id: Operation.model_validate(row.operation) for row in found}


def test_an_idle_apps_operation_runs_at_once_and_those_that_overlap_go_to_the_lane_in_order(local, project):
    settings = local.settings
    app = project.admin.create_app()
    [first] = project.admin.deployments(app["id"])
    creating = f"deploy-{first['id']}"
    assert handed(settings, app["id"])[creating].direct
    assert turn_of(settings, app["id"]) == (creating, 0, False)

    # Three more while the first runs: each has its place in the lane.
    second = project.deployer.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 3})
    third = project.deployer.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    ops = handed(settings, app["id"])
    queued = sorted((op for op in ops.values() if not op.direct), key=lambda op: op.lane_seq)
    assert [op.lane_seq for op in queued] == [1, 2, 3]
    assert queued[0].workflow_id == f"deploy-{second['id']}" and queued[-1].workflow_id == f"deploy-{third['id']}"
    assert turn_of(settings, app["id"]) == (creating, 3, True)

    # The first records its outcome: the turn goes to the lane, which has operations waiting.
    records = RecordActivities(settings)
    finish = FinishDeploymentInput(deployment_id=first["id"], status=DeploymentStatus.FAILED, reason="test")
    run_as(creating, records.finish_deployment, finish)
    assert turn_of(settings, app["id"]) == ("lane", 3, True)

    # The lane holds it, and gives it back only once it has received the last place.
    lanes = TurnActivities(settings, None)
    assert run_as(f"app-{app['id']}", lanes.release_turn, TurnInput(app_id=app["id"], seq=2)) is False
    assert turn_of(settings, app["id"])[0] == "lane"
    assert run_as(f"app-{app['id']}", lanes.release_turn, TurnInput(app_id=app["id"], seq=3)) is True
    assert turn_of(settings, app["id"]) == (None, 3, False)

    # Idle again: the next runs at once.
    again = project.deployer.call("POST", f"/apps/{app['id']}/deploy", 202).json()
    assert handed(settings, app["id"])[f"deploy-{again['id']}"].direct
    assert turn_of(settings, app["id"])[0] == f"deploy-{again['id']}"


def test_a_release_cancelled_before_it_began_gives_the_turn_on(local, project):
    settings = local.settings
    app = project.admin.create_app()
    [first] = project.admin.deployments(app["id"])
    project.deployer.call("POST", f"/apps/{app['id']}/deployments/{first['id']}/cancel", 202)
    plan = run_as(f"deploy-{first['id']}", RecordActivities(settings).begin_deployment, BeginDeploymentInput(deployment_id=first["id"]))
    assert plan.status == DeploymentStatus.CANCELLED
    assert turn_of(settings, app["id"])[0] is None


def test_only_the_holder_gives_the_turn_away_and_the_lane_takes_it_from_one_that_ended(local, project):
    settings = local.settings
    app = project.admin.create_app()
    [first] = project.admin.deployments(app["id"])
    holder = f"deploy-{first['id']}"
    with session_scope(settings.effective_database_url) as session:
        # Another workflow's outcome (a retried activity of an older run, say) changes nothing.
        assert not turns.release(session, app["id"], "deploy-dep_someone_else")
        assert not turns.take_for_lane(session, app["id"])
        assert turns.holder(session, app["id"]) == holder
    with session_scope(settings.effective_database_url) as session:
        # Unknown to Temporal because its hand-off still waits in the outbox: it keeps the turn.
        assert not turns.take_for_lane(session, app["id"], ended_holder=holder)
        session.execute(delete(Handoff).where(Handoff.workflow_id == holder))
    with session_scope(settings.effective_database_url) as session:
        # Handed off, and its workflow ended without a word (terminated in the Web UI): the lane takes it.
        assert turns.take_for_lane(session, app["id"], ended_holder=holder)
    with session_scope(settings.effective_database_url) as session:
        # The old holder's late outcome does not take it back from the lane.
        assert not turns.release(session, app["id"], holder)
        assert turns.holder(session, app["id"]) == "lane"


@pytest.mark.parametrize("crowd", [24])
def test_a_crowd_routing_at_once_gets_one_holder_and_distinct_places(local, project, crowd):
    settings = local.settings
    app = project.admin.create_app()
    with session_scope(settings.effective_database_url) as session:
        session.execute(App.__table__.update().where(App.id == app["id"]).values(turn=None, lane_seq=0, lane_pending=False))
    start = threading.Barrier(crowd)

    def route(i: int) -> int | None:
        start.wait()
        with session_scope(settings.effective_database_url) as session:
            return turns.route(session, app["id"], f"op-{i}")

    with ThreadPoolExecutor(crowd) as pool:
        places = list(pool.map(route, range(crowd)))
    assert places.count(None) == 1
    assert sorted(p for p in places if p is not None) == list(range(1, crowd))
    holder = f"op-{places.index(None)}"
    assert turn_of(settings, app["id"]) == (holder, crowd - 1, True)


def free_turn(settings, app_id: str) -> None:
    """As if the app's first release had ended: nothing in flight."""
    with session_scope(settings.effective_database_url) as session:
        session.execute(App.__table__.update().where(App.id == app_id).values(turn=None, lane_seq=0, lane_pending=False))


def test_a_scale_and_a_failed_delete_give_the_turn_on_with_their_records(local, project):
    settings = local.settings
    app = project.admin.create_app()
    free_turn(settings, app["id"])
    project.admin.call("PATCH", f"/apps/{app['id']}", 202, json={"replicas": 2})
    [scale] = [op for op in handed(settings, app["id"]).values() if op.kind == "scale"]
    assert scale.direct and turn_of(settings, app["id"])[0] == scale.workflow_id
    record = ScaleRecordInput(app_id=app["id"], replicas=2, previous_replicas=1, user="test", outcome="done")
    run_as(scale.workflow_id, RecordActivities(settings).record_scale, record)
    assert turn_of(settings, app["id"])[0] is None

    project.admin.call("DELETE", f"/apps/{app['id']}", 202)
    [removal] = [op for op in handed(settings, app["id"]).values() if op.kind == "delete"]
    assert removal.direct and turn_of(settings, app["id"])[0] == removal.workflow_id
    fail_delete(settings, app["id"], "the test says no")
    assert turn_of(settings, app["id"])[0] is None


def test_the_lane_leaves_the_turn_to_a_holder_whose_hand_off_waits_and_asks_temporal_nothing(local, project):
    """Its workflow may be starting this very moment: Temporal not knowing it
    yet must not count as its end, and a delete has nothing to cancel yet.
    (The activity has no Temporal client here: asking would fail.)"""
    settings = local.settings
    app = project.admin.create_app()
    [first] = project.admin.deployments(app["id"])
    lanes = TurnActivities(settings, None)
    for supersede in (False, True):
        assert asyncio.run(run_as(f"app-{app['id']}", lanes.take_turn, TurnInput(app_id=app["id"], supersede=supersede))) is False
    assert turn_of(settings, app["id"])[0] == f"deploy-{first['id']}"
