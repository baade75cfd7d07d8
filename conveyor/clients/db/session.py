"""Engines, sessions and migrations.

Two kinds of session, so that readers never wait for writers:

- `read_scope`: plain reads. On SQLite (WAL) a SELECT reads the last
  committed snapshot and never takes the write lock.
- `session_scope`: one short write transaction. On SQLite it starts with
  `BEGIN IMMEDIATE`, so concurrent writers queue for the lock when they begin
  (in their own thread, inside SQLite's busy handler) instead of failing with
  "database is locked" when a reading transaction tries to become a writer.

Neither may be held across a network call: open one, do the database work,
leave it, then talk to Temporal or Kubernetes.

PostgreSQL gets one connection pool, sized by `configure_pool`.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).parent / "migrations"
# How long a SQLite writer waits for the write lock (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
_pool = {"pool_size": 10, "max_overflow": 20, "pool_timeout": 30.0}


def configure_pool(pool_size: int, max_overflow: int, pool_timeout: float = 30.0) -> None:
    """Size the PostgreSQL pool; call once at process start, before any session."""
    _pool.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


@lru_cache(maxsize=8)
def engine_for(url: str, writer: bool = True) -> Engine:
    if not is_sqlite(url):
        # One pool per process serves readers and writers alike.
        return _postgres_engine(url)
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        if writer:
            # The driver must not open transactions on its own; we say how.
            dbapi_connection.isolation_level = None

    if writer:

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@lru_cache(maxsize=4)
def _postgres_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, **_pool)


@lru_cache(maxsize=8)
def session_factory(url: str, writer: bool = True) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url, writer), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One write transaction: committed on success, rolled back on error."""
    session = session_factory(url, True)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """Reads only; what it loads stays usable (detached) after the scope ends."""
    session = session_factory(url, False)()
    try:
        yield session
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# The key of the PostgreSQL advisory lock that serializes `conveyor db upgrade` runs.
MIGRATION_LOCK_KEY = 0x636F6E76  # "conv"


class SchemaOutdated(RuntimeError):
    """The database is older than this code: the API and the worker refuse to run on it."""


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(url: str) -> str | None:
    engine = engine_for(url, writer=False)
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(url: str) -> str | None:
    """Bring the schema to head and return the revision it was at. Concurrent
    runs (several `conveyor db upgrade`s, or the local platform's) wait for
    each other, and the later ones find nothing to do. PostgreSQL: a
    session-level advisory lock; SQLite: an exclusive lock on a file next to
    the database."""
    if is_sqlite(url):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                before = current_revision(url)
                command.upgrade(alembic_config(url), "head")
                return before
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    locker = create_engine(url, poolclass=NullPool)
    try:
        with locker.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                before = MigrationContext.configure(connection).get_current_revision()
                connection.commit()
                command.upgrade(alembic_config(url), "head")
                return before
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
    finally:
        locker.dispose()


def check_schema(url: str) -> str:
    """Refuse an older schema (raise SchemaOutdated naming the command that
    upgrades it); return the revision. A newer one (a later release migrated
    first, during a rolling upgrade) is accepted: migrations only add."""
    current, head = current_revision(url), head_revision()
    script = ScriptDirectory.from_config(alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}
    if current == head or (current is not None and current not in known):
        return current or ""
    raise SchemaOutdated(
        f"the database schema is at revision {current or 'none (empty database)'}, this Conveyor needs {head}: "
        "run `conveyor db upgrade` (with the same CONVEYOR_DATABASE_URL) first, then start the API and the worker again"
    )
