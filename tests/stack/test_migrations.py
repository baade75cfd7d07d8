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


@pytest.fixture(scope="session")
def local_postgresql() -> str:
    """Debian's server, started (and installed if missing) as CI does, with a
    database made once for the session: each test takes a schema of its own,
    so no test has to drop a database another one is still connected to."""
    return subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "conveyor_migrations"], check=True, capture_output=True, text=True, timeout=600
    ).stdout.strip()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path):
    """An empty database: a new SQLite file, or a new schema in a PostgreSQL
    database (the one CONVEYOR_DATABASE_URL names, else a local one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = os.environ.get("CONVEYOR_DATABASE_URL", "")
    if is_sqlite(url) or not url:
        # The SQLite run still proves the advisory lock on a real PostgreSQL.
        url = request.getfixturevalue("local_postgresql")
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


def test_0014_seals_the_env_of_existing_rows_and_they_still_read(fresh_database):
    import base64
    import json

    from conveyor.clients.db import sealed
    from conveyor.clients.db.models import App, Deployment
    from conveyor.clients.db.session import read_scope, session_scope
    from conveyor.clients.payload_codec import parse_keys

    url = fresh_database
    secret = f"s3cret-{uuid.uuid4().hex}"
    env = {"API_TOKEN": secret, "GREETING": "hello"}
    command.upgrade(alembic_config(url), "0012")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, namespace, created_at) VALUES ('proj_m', 'm', 'conveyor-m', '2025-01-01 00:00:00')"))
        connection.execute(
            text(
                "INSERT INTO apps (id, project_id, name, slug, source_type, port, replicas, env, progress_deadline_seconds, status, "
                "delete_attempts, created_at, updated_at) VALUES ('app_m', 'proj_m', 'm', 'm', 'image', 8080, 1, :env, 600, 'running', 0, "
                "'2025-01-01 00:00:00', '2025-01-01 00:00:00')"
            ),
            {"env": json.dumps(env)},
        )
        connection.execute(
            text(
                "INSERT INTO deployments (id, app_id, number, operation, status, env, port, workflow_id, created_by, created_at) "
                "VALUES ('dep_m', 'app_m', 1, 'deploy', 'active', :env, 8080, 'deploy-dep_m', 'test', '2025-01-01 00:00:00')"
            ),
            {"env": json.dumps(env)},
        )
    keyring = parse_keys(f"mig:{base64.b64encode(os.urandom(32)).decode()}", "test")
    sealed.use_keyring(keyring)
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        # SQLite gives the JSON text, PostgreSQL the value.
        stored = [v if isinstance(v, str) else json.dumps(v) for v in connection.execute(text("SELECT env FROM apps UNION ALL SELECT env FROM deployments")).scalars()]
    assert len(stored) == 2 and all(secret not in v and "hello" not in v and "$sealed" in v and '"mig"' in v for v in stored), stored
    with read_scope(url) as session:
        assert session.get(App, "app_m").env == env and session.get(Deployment, "dep_m").env == env
    # A second run (or a row already sealed by a newer process) changes nothing; a write seals again.
    with engine.begin() as connection:
        assert sealed.seal_plaintext_rows(connection, "apps", "env", "env") == 0
    with session_scope(url) as session:
        session.get(App, "app_m").env = {**env, "MORE": "x"}
    with read_scope(url) as session:
        assert session.get(App, "app_m").env["MORE"] == "x"
    # The downgrade puts plaintext back.
    command.downgrade(alembic_config(url), "0012")
    with engine.connect() as connection:
        plain = connection.execute(text("SELECT env FROM deployments")).scalar_one()
        assert (json.loads(plain) if isinstance(plain, str) else plain) == env
    engine.dispose()


def test_payload_key_reseal_moves_every_sealed_value_to_the_newest_key(tmp_path):
    import base64
    import json

    from click.testing import CliRunner

    from conveyor.cli.main import cli
    from conveyor.clients.db import sealed
    from conveyor.clients.db.session import migrate
    from conveyor.clients.payload_codec import parse_keys, seal, unseal
    from conveyor.domain.certificates import certificate_context
    from conveyor.settings import get_settings

    url = f"sqlite:///{tmp_path / 'reseal.db'}"
    migrate(url)
    old = f"old:{base64.b64encode(os.urandom(32)).decode()}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, namespace, created_at) VALUES ('proj_r', 'r', 'conveyor-r', '2025-01-01 00:00:00')"))
        connection.execute(
            text("INSERT INTO registry_credentials (id, project_id, registry, username, password, created_by, created_at, updated_at) "
                 "VALUES ('rc_r', 'proj_r', 'ghcr.io', 'u', :pw, 'test', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"),
            {"pw": json.dumps(sealed.seal("hunter2", "registry-password", parse_keys(old, "test")))},
        )
        # An uploaded certificate's key, sealed bound to its app and domain.
        connection.execute(text(
            "INSERT INTO apps (id, project_id, name, slug, source_type, port, replicas, env, progress_deadline_seconds, status, created_at, updated_at, delete_attempts) "
            "VALUES ('app_r', 'proj_r', 'r', 'r', 'image', 8080, 1, '{}', 600, 'running', '2025-01-01 00:00:00', '2025-01-01 00:00:00', 0)"
        ))
        connection.execute(
            text("INSERT INTO app_certificates (app_id, domain, certificate, key_sealed, names, issuer, fingerprint, not_after, uploaded_by) "
                 "VALUES ('app_r', 'r.example.com', 'PEM', :key, '[]', 'ca', 'f', '2030-01-01 00:00:00', 'test')"),
            {"key": seal(parse_keys(old, "test"), b"PRIVATE KEY", certificate_context("app_r", "r.example.com"))},
        )
    new = f"new:{base64.b64encode(os.urandom(32)).decode()}"
    env = {"CONVEYOR_DATABASE_URL": url, "CONVEYOR_PAYLOAD_KEYS": f"{new},{old}", "CONVEYOR_HOME": str(tmp_path)}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["payload-key", "reseal"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0 and "resealed 2 values with key new" in result.output, result.output
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT password FROM registry_credentials")).scalar_one()
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["kid"] == "new" and sealed.open_sealed(stored, "registry-password", [parse_keys(new, "test")]) == "hunter2"
    with engine.connect() as connection:
        key_sealed = connection.execute(text("SELECT key_sealed FROM app_certificates")).scalar_one()
    assert key_sealed.startswith("new:") and unseal(parse_keys(new, "test"), key_sealed, certificate_context("app_r", "r.example.com")) == b"PRIVATE KEY"
    engine.dispose()
