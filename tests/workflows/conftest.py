"""A Temporal dev server of the tests' own (in memory, started once per
session) and workers that run Conveyor's workflows against faked activities.
Nothing else of the platform is needed."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowRunner

from conveyor.clients.payload_codec import Keyring, PayloadKey, data_converter
from conveyor.stack.temporal import SEARCH_ATTRIBUTES, temporal_cli
from tests.workflows.fakes import Fakes
from worker import WORKFLOWS, workflow_runner


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    # The platform's converter (payloads encrypted), with a key of this session.
    converter = data_converter(Keyring((PayloadKey("test", os.urandom(32)),)))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=converter,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
    async with env:
        yield env


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def plain_client(temporal_env: WorkflowEnvironment) -> Client:
    """The plain pydantic converter: what the replay fixtures are recorded with
    (the replay test decodes with a dummy key, and the codec passes plaintext through)."""
    return Client(temporal_env.client.service_client, namespace=temporal_env.client.namespace, data_converter=pydantic_data_converter)


@pytest.fixture
def task_queue() -> str:
    return f"wf-test-{uuid.uuid4().hex}"


@asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, fakes: Fakes, runner: WorkflowRunner | None = None
) -> AsyncIterator[Worker]:
    """The real worker's workflows and sandbox, with `fakes` as the activities.
    Heartbeats go out at once (not throttled to 80% of the heartbeat timeout,
    as in production), so a cancel reaches a blocked fake in milliseconds."""
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=fakes.activities(),
        workflow_runner=runner or workflow_runner(),
        max_heartbeat_throttle_interval=timedelta(milliseconds=50),
        default_heartbeat_throttle_interval=timedelta(milliseconds=50),
    )
    async with worker:
        yield worker
