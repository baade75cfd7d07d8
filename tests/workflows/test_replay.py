"""Recorded histories of every workflow type replay on the current code.

A change that would break running executions fails here: guard it with
`workflow.patched` and record a new history beside the old ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from conveyor.clients.payload_codec import Keyring, PayloadKey, data_converter
from conveyor.settings import Settings
from worker import WORKFLOWS, worker_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_is_a_history_of_each_workflow_type():
    names = {path.stem for path in HISTORIES}
    assert {"deploy-first", "deploy-failed", "deploy-build", "deploy-cancelled", "lane", "lane-turns", "scale", "delete", "cron-run"} <= names


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "unsandboxed"])
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path, sandbox: bool):
    """On either runner a worker may run (CONVEYOR_WORKFLOW_SANDBOX)."""
    history = WorkflowHistory.from_json(f"replay-{path.stem}", await asyncio.to_thread(path.read_text))
    # The platform's converter: these histories were recorded in plaintext,
    # which the codec passes through.
    converter = data_converter(Keyring((PayloadKey("replay", b"\x00" * 32),)))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=converter, workflow_runner=worker_runner(Settings(workflow_sandbox=sandbox)))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
