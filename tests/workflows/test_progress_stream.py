"""The progress stream (`api.streams.progress_events`) over the real deploy
workflow on a Temporal dev server, with faked activities and the deployment
rows in memory.

A row ends (the workflow's `finish_deployment` writes it) before the
workflow has recorded the steps after that activity. These tests make a poll
land exactly in that gap, or come long after the workflow has run, and check
that every step's last state still reaches the reader before `end`. Nothing
here waits for a time: the test says when the hub polls.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace

from temporalio.client import WorkflowExecutionStatus

from api import streams
from api.streams import ProgressHub, Snapshot, progress_events
from conveyor.domain import errors
from conveyor.domain.payloads import DeploymentPlan, FinishDeploymentInput, ResolvedImage
from conveyor.settings import Settings
from tests.support.workflow_runs import deployment, new_app, outcome, running_worker, start_deploy
from tests.workflows.fakes import Block, Fakes, digest_of

STEPS = ["resolve", "apply", "rollout", "finalize"]


class Rows:
    """The deployments' (status, reason) as the hub reads them; the fakes'
    `finish_deployment` writes them as the real one writes the row. Without
    `with_steps`, as rows from before the steps were recorded with the
    outcome (the stream then waits for the workflow to close)."""

    def __init__(self, with_steps: bool = False) -> None:
        self.rows: dict[str, tuple[str, str | None] | streams.RowNow] = {}
        self.with_steps = with_steps

    async def __call__(self, deployment_id: str) -> tuple[str, str | None] | streams.RowNow | None:
        return self.rows.get(deployment_id)

    async def write(self, request: FinishDeploymentInput) -> str:
        steps = request.steps if self.with_steps else None
        self.rows[request.deployment_id] = streams.RowNow(request.status, request.reason, progress=steps)
        return request.status


class SteppedHub(ProgressHub):
    """A hub that polls once at the start and then only when the test says
    so, and keeps every snapshot it took."""

    def __init__(self, rows: Rows) -> None:
        super().__init__(Settings(), status_of=rows)
        self.snapshots: list[Snapshot] = []
        self._turns: asyncio.Queue[None] = asyncio.Queue()
        self._taken = asyncio.Condition()

    async def snapshot(self, temporal, dep, waited: float = 0.0) -> Snapshot:
        taken = await super().snapshot(temporal, dep, waited)
        async with self._taken:
            self.snapshots.append(taken)
            self._taken.notify_all()
        return taken

    async def pause(self, changes=None) -> None:
        await self._turns.get()

    async def taken(self, count: int) -> Snapshot:
        """Wait until `count` snapshots have been taken; the last of them."""
        async with self._taken:
            await asyncio.wait_for(self._taken.wait_for(lambda: len(self.snapshots) >= count), 10)
        return self.snapshots[count - 1]

    async def poll(self) -> Snapshot:
        """Let the hub poll once more; the snapshot it took."""
        count = len(self.snapshots) + 1
        self._turns.put_nowait(None)
        return await self.taken(count)


def followed(plan: DeploymentPlan) -> SimpleNamespace:
    """What the route hands the stream: the deployment's row as it was read."""
    return SimpleNamespace(id=plan.deployment_id, workflow_id=f"{plan.operation}-{plan.deployment_id}", status="deploying")


async def read_stream(hub: ProgressHub, client, plan: DeploymentPlan) -> list[tuple[str, dict]]:
    events = []
    async for event in progress_events(followed(plan), Settings(), client, hub, ping=60):
        if event.event is not None:
            events.append((event.event, event.data))
    return events


def state(steps: list[dict], name: str) -> str | None:
    return next((s["state"] for s in steps if s["name"] == name), None)


def assert_whole(events: list[tuple[str, dict]], plan: DeploymentPlan) -> None:
    """Each step in order, each one's last state `done`, then one `end`."""
    kinds = [kind for kind, _ in events]
    assert kinds.count("end") == 1 and kinds[-1] == "end", kinds
    assert events[-1][1] == {"id": plan.deployment_id, "status": "active", "reason": None}
    steps = [data for kind, data in events if kind == "step"]
    assert list(dict.fromkeys(s["name"] for s in steps)) == STEPS
    last = {s["name"]: s["state"] for s in steps}
    assert last == dict.fromkeys(STEPS, "done"), events


def gated_release(client) -> tuple[Fakes, Rows, DeploymentPlan, Block]:
    """A release whose begin_deployment waits for the gate, and whose
    finish_deployment writes its row as the real one does."""
    fakes, rows = Fakes(client), Rows()
    plan = deployment(new_app(fakes))
    rows.rows[plan.deployment_id] = ("deploying", None)
    gate = Block()
    fakes.script("begin_deployment", gate)
    fakes.script("finish_deployment", rows.write)
    return fakes, rows, plan, gate


def finish_until_released(fakes: Fakes, rows: Rows, ended: asyncio.Event, gate: asyncio.Event) -> None:
    """finish_deployment writes the row as the real one does; then it stays
    on until `gate`, with the row ended and the workflow's finalize running."""

    async def finish(request: FinishDeploymentInput) -> str:
        status = await rows.write(request)
        ended.set()
        await gate.wait()
        return status

    fakes.script("finish_deployment", finish)


def held_at_finish(client, rows: Rows) -> tuple[Fakes, DeploymentPlan, asyncio.Event, asyncio.Event]:
    """A release whose finish_deployment writes its row, sets `ended`, then
    holds the workflow until `gate`."""
    fakes = Fakes(client)
    plan = deployment(new_app(fakes))
    rows.rows[plan.deployment_id] = ("deploying", None)
    ended, gate = asyncio.Event(), asyncio.Event()
    finish_until_released(fakes, rows, ended, gate)
    return fakes, plan, ended, gate


async def test_polls_between_the_row_and_the_workflow_end_do_not_end_the_stream(client, task_queue):
    rows = Rows()
    fakes, plan, ended, gate = held_at_finish(client, rows)
    hub = SteppedHub(rows)
    async with running_worker(client, task_queue, fakes):
        reader = asyncio.create_task(read_stream(hub, client, plan))
        await hub.taken(1)
        handle = await start_deploy(client, task_queue, fakes, plan)
        await asyncio.wait_for(ended.wait(), 10)
        for _ in range(3):
            seen = await hub.poll()
            # The row has ended, the workflow has not recorded finalize done yet.
            assert (seen.status, state(seen.steps, "finalize"), seen.ended) == ("active", "running", False)
        assert not reader.done()
        gate.set()
        assert await outcome(handle) == "active"
        while not (await hub.poll()).ended:
            pass
        events = await asyncio.wait_for(reader, 10)
    assert_whole(events, plan)


async def test_the_steps_recorded_with_the_outcome_end_the_stream_before_the_workflow_closes(client, task_queue):
    """finish_deployment keeps the workflow's steps with the outcome (finalize
    done among them): the first poll that reads the ended row sends every
    step's last state and `end`, with no query of the workflow, which is
    still running."""
    rows = Rows(with_steps=True)
    fakes, plan, ended, gate = held_at_finish(client, rows)
    hub = SteppedHub(rows)
    async with running_worker(client, task_queue, fakes):
        reader = asyncio.create_task(read_stream(hub, client, plan))
        await hub.taken(1)
        handle = await start_deploy(client, task_queue, fakes, plan)
        await asyncio.wait_for(ended.wait(), 10)
        seen = await hub.poll()
        assert (seen.status, state(seen.steps, "finalize"), seen.ended) == ("active", "done", True)
        events = await asyncio.wait_for(reader, 10)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        gate.set()
        assert await outcome(handle) == "active"
    assert_whole(events, plan)
    [finish] = fakes.named("finish_deployment")
    assert [step["name"] for step in finish.input.steps] == STEPS


async def test_a_release_that_runs_between_two_polls_is_sent_whole(client, task_queue):
    fakes, rows, plan, gate = gated_release(client)
    hub = SteppedHub(rows)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        reader = asyncio.create_task(read_stream(hub, client, plan))
        first = await hub.taken(1)
        assert first.status == "deploying" and not first.steps
        gate.release()
        # The whole release runs before the hub polls again.
        assert await outcome(handle) == "active"
        assert (await hub.poll()).ended
        events = await asyncio.wait_for(reader, 10)
    assert_whole(events, plan)


async def test_an_ended_row_whose_workflow_no_worker_runs_ends_after_the_final_wait(client, task_queue, monkeypatch):
    monkeypatch.setattr(streams, "FINAL_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(streams, "QUERY_TIMEOUT", timedelta(seconds=1))
    fakes, rows = Fakes(client), Rows()
    plan = deployment(new_app(fakes))
    rows.rows[plan.deployment_id] = ("failed", "the worker went away")
    # Started on a queue that no worker polls: it stays running.
    handle = await start_deploy(client, f"{task_queue}-nobody", fakes, plan)
    try:
        hub = ProgressHub(Settings(), status_of=rows, poll_seconds=0.05)
        events = await asyncio.wait_for(read_stream(hub, client, plan), 20)
        assert events == [("end", {"id": plan.deployment_id, "status": "failed", "reason": "the worker went away"})]
        assert hub.polls >= 2, "the stream waited for the workflow before it ended"
    finally:
        await handle.terminate()


async def test_changes_are_pushed_by_the_workflows_history_not_a_timed_poll(client, task_queue, monkeypatch):
    """With the timed poll minutes away, every step and the end still arrive:
    the hub wakes at each workflow task the history shows, and at its close."""
    monkeypatch.setattr(streams, "WATCHED_POLL_SECONDS", 600.0)
    fakes, rows, plan, gate = gated_release(client)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        # Until the history is watched (it is as soon as the workflow exists), the short poll runs.
        hub = ProgressHub(Settings(), status_of=rows, poll_seconds=0.05)
        reader = asyncio.create_task(read_stream(hub, client, plan))
        await asyncio.sleep(0.5)
        polls_while_blocked = hub.polls
        await asyncio.sleep(1.0)
        # Nothing happens in the workflow meanwhile: no poll either.
        assert hub.polls == polls_while_blocked, "the hub polled with nothing new in the history"
        gate.release()
        assert await outcome(handle) == "active"
        events = await asyncio.wait_for(reader, 10)
    assert_whole(events, plan)


async def test_a_deployment_that_never_started_ends_at_once(client):
    rows = Rows()
    plan = deployment(f"app_{uuid.uuid4().hex[:10]}")
    rows.rows[plan.deployment_id] = ("cancelled", "cancelled while queued")
    hub = ProgressHub(Settings(), status_of=rows, poll_seconds=0.05)
    events = await asyncio.wait_for(read_stream(hub, client, plan), 10)
    assert events == [("end", {"id": plan.deployment_id, "status": "cancelled", "reason": "cancelled while queued"})]


async def test_a_deleted_deployment_ends_the_stream(client):
    rows = Rows()
    plan = deployment(f"app_{uuid.uuid4().hex[:10]}")
    hub = ProgressHub(Settings(), status_of=rows, poll_seconds=0.05)
    events = await asyncio.wait_for(read_stream(hub, client, plan), 10)
    assert events == [("end", {"id": plan.deployment_id, "status": "deleted", "reason": "the deployment or its app was deleted"})]


# --- what a deployment waits for -----------------------------------------------------------


async def test_a_retried_step_says_why_until_it_passes_and_a_queued_one_names_it(client, task_queue):
    fakes = Fakes(client)
    plan = deployment(new_app(fakes), image="registry.test:5000/web:2")
    internal = "connect to 10.1.2.3:5000 refused (urllib3 pool)"
    gate = asyncio.Event()

    async def unreachable_until_gate(request):
        if not gate.is_set():
            raise errors.RegistryUnreachable(internal)
        digest = digest_of(request.image)
        return ResolvedImage(image=request.image, digest=digest, reference=f"{request.image}@{digest}")

    fakes.script("resolve_image_digest", *([unreachable_until_gate] * 50))
    rows = Rows()
    queued_id = f"dep_{uuid.uuid4().hex[:10]}"
    rows.rows[plan.deployment_id] = streams.RowNow("deploying", None, image_host="registry.test:5000")
    rows.rows[queued_id] = streams.RowNow("queued", None, ahead=streams.Ahead(plan.deployment_id, "deploying", f"deploy-{plan.deployment_id}"), image_host="registry.test:5000")
    hub = ProgressHub(Settings(), status_of=rows)
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)

        async def reason() -> str | None:
            return (await hub.snapshot(client, followed(plan))).reason

        # The first attempt has failed: from then on until it passes, the reason says so.
        await fakes.wait_for(lambda: any(c.outcome == "failed" for c in fakes.named("resolve_image_digest")), 10)
        retrying = await reason()
        assert retrying is not None and retrying.startswith("retrying: registry registry.test:5000 unreachable (attempt "), retrying
        assert "next in" in retrying and "gives up at" in retrying and "10.1.2.3" not in retrying and "urllib3" not in retrying
        now = await hub.snapshot(client, followed(plan))
        assert next(s for s in now.steps if s["name"] == "resolve")["detail"].startswith("retrying: registry registry.test:5000 unreachable")
        # The one queued behind it names it, and why it is not done.
        behind = await hub.snapshot(client, SimpleNamespace(id=queued_id, workflow_id=f"deploy-{queued_id}", status="queued"))
        assert behind.reason.startswith(f"queued behind {plan.deployment_id} (deploying, retrying: registry "), behind.reason
        gate.set()
        assert await outcome(handle) == "active"
        rows.rows[plan.deployment_id] = streams.RowNow("deploying", None, image_host="registry.test:5000")
    assert "retrying" not in str([s["detail"] for s in (await hub.snapshot(client, followed(plan))).steps])
