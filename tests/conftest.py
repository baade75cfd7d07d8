"""Session fixtures on the real local platform.

`platform` reuses a running stack (from `conveyor up`) or starts one, and at
the end stops only what it started itself (CONVEYOR_KEEP_STACK=1 keeps it).
"""

from __future__ import annotations

import os
import uuid

import pytest
from kubernetes import client, config

from conveyor.settings import Settings  # noqa: E402
from conveyor.stack.platform import Platform  # noqa: E402

# The platform the tests start runs workflow code in Temporal's sandbox, so
# that a clock, random or I/O call in it fails the tests (a production worker
# runs it unsandboxed by default: README, "The workflow sandbox").
os.environ.setdefault("CONVEYOR_WORKFLOW_SANDBOX", "1")

# tests/image needs the image `make image` builds; it runs there, not in `make test`.
collect_ignore = [] if os.environ.get("CONVEYOR_IMAGE_UNDER_TEST") else ["image"]


def _progress(message: str) -> None:
    print(f"[stack] {message}", flush=True)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def platform(settings: Settings):
    stack = Platform(settings, _progress)
    stack.up()
    yield stack
    if stack.started and os.environ.get("CONVEYOR_KEEP_STACK") != "1":
        stack.stop(stack.started)


@pytest.fixture(scope="session")
def kube_api(platform: Platform, settings: Settings) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(settings.effective_kubeconfig))


@pytest.fixture
def namespace(kube_api: client.ApiClient):
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
