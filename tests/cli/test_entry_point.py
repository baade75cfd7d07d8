"""`conveyor db upgrade`, as the production migration Job runs it, loads
nothing of the local platform; the local platform's commands are still there."""

from __future__ import annotations

import os
import subprocess
import sys


def conveyor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "conveyor.cli.main", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )


def imported(done: subprocess.CompletedProcess) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_db_upgrade_never_imports_the_local_platform(tmp_path):
    env = {"CONVEYOR_HOME": str(tmp_path), "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'conveyor.sqlite'}"}
    done = conveyor("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "conveyor.sqlite").stat().st_size > 0
    modules = imported(done)
    assert "conveyor.cli.operator" in modules and "alembic" in modules
    assert not {m for m in modules if m.startswith("conveyor.stack") or m == "conveyor.cli.local"}

    local = conveyor("down", "--help", env=env)
    assert local.returncode == 0 and "--purge" in local.stdout
    assert "conveyor.stack.platform" in imported(local)
