"""A Temporal dev server of the tests' own (in memory, started once per
session) and clients of it; the workers that run Conveyor's workflows against
faked activities are in tests/support/workflow_runs.py. Nothing else of the
platform is needed."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from conveyor.clients.payload_codec import Keyring, PayloadKey, data_converter
from conveyor.stack.temporal import SEARCH_ATTRIBUTES, temporal_cli


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
