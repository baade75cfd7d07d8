"""Pid files name our processes only: a process counts as ours while it has the
command line and the start time its pid file recorded, so a pid that has been
handed to someone else since is never signalled. Needs no platform."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from conveyor.settings import Settings
from conveyor.stack import cluster
from conveyor.stack.platform import Platform
from conveyor.stack.processes import ProcessTable, alive, wait_until

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def stranger():
    """Someone else's process, a python like our worker and API."""
    proc = subprocess.Popen(SLEEP, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def write_pid_file(home, name: str, pid: int, cmd: list[str], started: float) -> None:
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / f"{name}.json").write_text(json.dumps({"pid": pid, "cmd": cmd, "started": started}))


def table(home) -> ProcessTable:
    return ProcessTable(home / "run", home / "logs")


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_down_leaves_alone_a_stranger_that_got_the_pid_of_our_worker(tmp_path, stranger):
    # Our worker exited an hour ago; its pid now belongs to another python.
    write_pid_file(tmp_path, "worker", stranger.pid, [sys.executable, "-m", "worker"], time.time() - 3600)
    assert Platform(Settings(home=tmp_path), progress=lambda message: None).stop() == []
    time.sleep(0.3)
    assert stranger.poll() is None, "down signalled a process that is not ours"
    assert not (tmp_path / "run" / "worker.json").exists(), "the stale pid file should be gone"


def test_same_command_line_started_at_another_time_is_not_ours(tmp_path, stranger):
    write_pid_file(tmp_path, "api", stranger.pid, SLEEP, time.time() - 3600)
    assert not alive(stranger.pid, SLEEP, time.time() - 3600)
    assert table(tmp_path).get("api") is None
    assert table(tmp_path).stop("api") is False
    assert stranger.poll() is None


def test_other_command_line_with_the_right_start_time_is_not_ours(tmp_path, stranger):
    started = psutil.Process(stranger.pid).create_time()
    write_pid_file(tmp_path, "worker", stranger.pid, [sys.executable, "-m", "worker"], started)
    assert table(tmp_path).stop("worker") is False
    assert stranger.poll() is None


def test_down_from_another_process_stops_ours_and_its_children(tmp_path):
    spawns_a_child = [sys.executable, "-c", f"import subprocess, time; subprocess.Popen({SLEEP!r}); time.sleep(120)"]
    ours = table(tmp_path).start("worker", spawns_a_child)
    assert wait_until(lambda: psutil.Process(ours.pid).children(), 10, interval=0.1), "the child did not start"
    [child] = psutil.Process(ours.pid).children()

    # A fresh table, as `conveyor down` has: no Popen, only the pid file.
    found = table(tmp_path).get("worker")
    assert found is not None and found.pid == ours.pid and found.popen is None
    assert table(tmp_path).stop("worker") is True
    assert not ours.running()
    assert wait_until(lambda: gone(child), 10, interval=0.1), "the child should be stopped with its group"
    assert not (tmp_path / "run" / "worker.json").exists()


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    ready = tmp_path / "ready"
    stubborn = [
        sys.executable,
        "-c",
        f"import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path({str(ready)!r}).touch(); time.sleep(120)",
    ]
    ours = table(tmp_path).start("api", stubborn)
    assert wait_until(ready.exists, 10, interval=0.1), "the SIGTERM handler was not set"
    began = time.monotonic()
    assert table(tmp_path).stop("api", timeout=1.0) is True
    assert not ours.running()
    assert time.monotonic() - began < 8


def test_cluster_components_are_the_kwokctl_binaries_that_wrote_their_pid_files(tmp_path, stranger):
    settings = Settings(home=tmp_path)
    bin_dir, pids = cluster.cluster_dir(settings) / "bin", cluster.cluster_dir(settings) / "pids"
    bin_dir.mkdir(parents=True)
    pids.mkdir()
    shutil.copy(shutil.which("sleep"), bin_dir / "etcd")
    etcd = subprocess.Popen([str(bin_dir / "etcd"), "120"], start_new_session=True)
    try:
        (pids / "etcd.pid").write_text(str(etcd.pid))
        # kube-apiserver exited; a stranger has its pid now.
        (pids / "kube-apiserver.pid").write_text(str(stranger.pid))
        assert cluster.components(settings) == {"etcd": etcd.pid, "kube-apiserver": None}
        assert cluster.running_components(settings) == {"etcd": etcd.pid}

        # kwokctl kills whatever pid its files name: the stale one goes first.
        cluster.forget_exited(settings)
        assert sorted(p.name for p in pids.iterdir()) == ["etcd.pid"]
        assert stranger.poll() is None and etcd.poll() is None
    finally:
        etcd.kill()
        etcd.wait()
