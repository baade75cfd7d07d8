"""A workflow runs on the local Temporal dev server and is found by the
search attributes Conveyor's workflows use."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from conveyor.clients.temporal_client import connect
from conveyor.stack import temporal
from tests.stack.sample_workflow import GreetingWorkflow, greet


async def test_workflow_with_activity_runs_and_is_listed_by_search_attributes(platform, settings):
    client = await connect(settings)
    task_queue = f"test-{uuid.uuid4().hex}"
    app_id = f"app_{uuid.uuid4().hex[:8]}"
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in zip(temporal.SEARCH_ATTRIBUTES, (app_id, "proj_default", "dep_test", "deploy"), strict=True)
        ]
    )
    async with Worker(client, task_queue=task_queue, workflows=[GreetingWorkflow], activities=[greet]):
        result = await client.execute_workflow(
            GreetingWorkflow.run,
            "conveyor",
            id=f"greet-{uuid.uuid4().hex}",
            task_queue=task_queue,
            search_attributes=attributes,
        )
    assert result == "hello conveyor"

    async def listed():
        for _ in range(40):
            found = [w async for w in client.list_workflows(f"AppId = '{app_id}' AND Operation = 'deploy'")]
            if found:
                return found
            await asyncio.sleep(0.25)
        return []

    found = await listed()
    assert len(found) == 1
    assert found[0].status.name == "COMPLETED"
    assert found[0].typed_search_attributes.get(SearchAttributeKey.for_keyword("ProjectId")) == "proj_default"


def test_the_dev_server_keeps_its_state_in_a_write_ahead_log(platform, settings):
    """`conveyor up` starts Temporal with its SQLite file in WAL mode, synced
    at checkpoints (README: Temporal): the running server was given both
    pragmas (the journal mode alone would also be the file's own from an
    earlier start), and the file is in WAL mode with its log beside it."""
    pid = next(part["pid"] for part in platform.status()["parts"] if part["name"] == "temporal")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    pragmas = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--sqlite-pragma"]
    assert pragmas == ["journal_mode=wal", "synchronous=normal"], argv
    path = settings.home / "temporal.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.with_name("temporal.db-wal").exists()
