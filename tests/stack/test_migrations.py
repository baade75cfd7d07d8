"""Migrations are one step (`conveyor db upgrade`): concurrent runs serialize,
and the API and the worker refuse an older schema instead of migrating it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from conveyor.clients.db.session import alembic_config, current_revision, head_revision, is_sqlite

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path):
    """An empty database: a new SQLite file, or a new schema in a PostgreSQL
    database (the one CONVEYOR_DATABASE_URL names, else a local one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = os.environ.get("CONVEYOR_DATABASE_URL", "")
    if is_sqlite(url) or not url:
        # The SQLite run still proves the advisory lock on a real PostgreSQL:
        # Debian's server, started (and installed if missing) as CI does.
        url = subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), "conveyor_migrations"], check=True, capture_output=True, text=True, timeout=600
        ).stdout.strip()
    schema = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "CONVEYOR_DATABASE_URL": url, **extra}


def test_concurrent_db_upgrades_all_succeed_and_reach_head(fresh_database):
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli.main", "db", "upgrade"],
            cwd=ROOT,
            env=_env(fresh_database),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=180)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    assert current_revision(fresh_database) == head_revision()
    # Exactly one run migrated; the others waited and found the schema current.
    assert sum("(already current)" in out for out in outputs) == 3, outputs
    tables = set(inspect(create_engine(fresh_database)).get_table_names())
    assert {"apps", "deployments", "builds", "build_log_chunks", "handoffs", "alembic_version"} <= tables


def _one_revision_behind(url: str) -> str:
    head = head_revision()
    script = alembic_config(url)
    from alembic.script import ScriptDirectory

    previous = ScriptDirectory.from_config(script).get_revision(head).down_revision
    command.upgrade(script, str(previous))
    return str(previous)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port", "0"],
        [sys.executable, "-m", "worker"],
    ],
    ids=["api", "worker"],
)
def test_api_and_worker_exit_on_a_schema_one_revision_behind_naming_conveyor_db_upgrade(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    previous = _one_revision_behind(url)
    started = subprocess.run(
        command, cwd=ROOT, env=_env(url, CONVEYOR_HOME=str(tmp_path / "home")), capture_output=True, text=True, timeout=120
    )
    assert started.returncode != 0
    assert "conveyor db upgrade" in started.stderr and f"revision {previous}" in started.stderr, started.stderr[-2000:]
    # It did not migrate on its own.
    assert current_revision(url) == previous


def test_build_logs_written_as_files_before_0007_are_read_from_rows_after_it(tmp_path):
    from conveyor.builds import logs
    from conveyor.clients.db.session import migrate, read_scope

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0004")
    log = tmp_path / "bld_old.log"
    log.write_text("==> unpacking the uploaded source\nstep one\n==> pushed x@sha256:00\n")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO builds (id, app_id, source_type, upload_path, status, log_path, created_at) "
                "VALUES ('bld_old', 'app_old', 'upload', '/gone/src.tar', 'succeeded', :log, '2025-01-01 00:00:00')"
            ),
            {"log": str(log)},
        )
    engine.dispose()
    migrate(url)
    log.unlink()  # the rows are what is read now
    with read_scope(url) as session:
        chunks = logs.chunks_after(session, "bld_old", -1)
    assert "".join(text for _, text in chunks) == "==> unpacking the uploaded source\nstep one\n==> pushed x@sha256:00\n"
