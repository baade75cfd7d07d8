"""Fixtures of the in-process suite: one API app for the session (the real
`create_app`, over a SQLite file, Temporal unreachable) and a project of its
own, with a token of each role, for every test (tests/support/in_process.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import in_process


@pytest.fixture(scope="session")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[in_process.Local]:
    with in_process.running_app(tmp_path_factory.mktemp("conveyor")) as running:
        yield running


@pytest.fixture
def project(local: in_process.Local) -> in_process.Project:
    return in_process.new_project(local.settings, local.app)
