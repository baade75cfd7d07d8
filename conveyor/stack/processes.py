"""Background processes that the local platform starts and tracks by pid file.

Each process runs in its own session (so Ctrl-C in the terminal does not reach
it and a whole tree can be signalled at once) and writes its output to a log
file. A pid file records the pid, the command line and when it started; a pid
names our process only while the process with that pid has that command line
and was created then, so a recycled pid (a stranger now) is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class PortInUse(RuntimeError):
    pass


# How far a process's creation time may be from the time its pid file says it
# started: the pid file is written just after the start, and Linux gives the
# creation time relative to a boot time in whole seconds.
START_TIME_SLACK = 3.0


def find(pid: int, *, cmd: Sequence[str] | None = None, argv0: str | None = None, started: float | None = None) -> psutil.Process | None:
    """The live (not zombie) process `pid`, if it is the one described: its
    command line is `cmd` (or starts with `argv0`) and it was created at
    `started` (within START_TIME_SLACK)."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = process.cmdline()
            created = process.create_time()
    except (psutil.Error, ValueError):
        return None
    if cmd is not None and cmdline != list(cmd):
        return None
    if argv0 is not None and (not cmdline or cmdline[0] != argv0):
        return None
    if started is not None and abs(created - started) > START_TIME_SLACK:
        return None
    return process


def alive(pid: int, cmd: Sequence[str] | None = None, started: float | None = None) -> bool:
    return find(pid, cmd=cmd, started=started) is not None


@dataclass
class Tracked:
    name: str
    pid: int
    cmd: list[str]
    # When it started (time.time()), from the pid file; None in pid files of older Conveyors.
    started: float | None = None
    # Set only in the process that started it: the reliable way to see an early exit.
    popen: subprocess.Popen | None = None

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return alive(self.pid, self.cmd, self.started)


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (those alive now)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by a process and its descendants."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


class ProcessTable:
    def __init__(self, run_dir: Path, log_dir: Path):
        self.run_dir = run_dir
        self.log_dir = log_dir

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def get(self, name: str) -> Tracked | None:
        """The process of this name if it still runs; a pid file that names
        anything else (it exited, its pid may be a stranger's now) is removed."""
        try:
            data = json.loads(self._pidfile(name).read_text())
            tracked = Tracked(name=name, pid=int(data["pid"]), cmd=list(data["cmd"]), started=data.get("started"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not tracked.running():
            self._pidfile(name).unlink(missing_ok=True)
            return None
        return tracked

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Tracked:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name).open("ab")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        tracked = Tracked(name=name, pid=proc.pid, cmd=cmd, started=time.time(), popen=proc)
        self._pidfile(name).write_text(json.dumps({"pid": proc.pid, "cmd": cmd, "started": tracked.started}))
        return tracked

    def exited_early(self, name: str) -> str | None:
        """The tail of a process's log if it is no longer running."""
        if self.get(name) is not None:
            return None
        try:
            lines = self.log_path(name).read_text(errors="replace").splitlines()[-15:]
        except OSError:
            lines = []
        return "\n".join(lines)

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """SIGTERM to the process's group, SIGKILL to what is left after
        `timeout`. Only a process that is still the one the pid file names is
        signalled, with the group it leads."""
        tracked = self.get(name)
        process = find(tracked.pid, cmd=tracked.cmd, started=tracked.started) if tracked else None
        if tracked is None or process is None:
            return False
        # start_new_session: the process leads its own group, whose id is its
        # pid. While any member lives that id cannot be handed to a new process.
        group = tracked.pid
        members = _group(group)
        if process.pid in {m.pid for m in members}:
            _signal_group(group, signal.SIGTERM)
        else:  # it left its group: signal only the process itself
            members = [process]
            _signal(process, signal.SIGTERM)
        _, left = psutil.wait_procs(members, timeout=timeout)
        if left:
            if _group(group):
                _signal_group(group, signal.SIGKILL)
            for member in left:
                _signal(member, signal.SIGKILL)
            psutil.wait_procs(left, timeout=5)
        self._pidfile(name).unlink(missing_ok=True)
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal(process: psutil.Process, sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)  # psutil checks first that the pid is still this process
    except psutil.NoSuchProcess:
        pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def port_owner(port: int) -> str:
    """Best-effort description of who listens on a port (for error messages)."""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "another process"
    out = out.strip()
    if "users:((" in out:
        return out.split("users:((", 1)[1].split(")", 1)[0]
    return "another process"


def ensure_port_free(component: str, host: str, port: int, setting: str) -> None:
    if port_in_use(host, port):
        raise PortInUse(
            f"cannot start {component}: port {host}:{port} is already in use by {port_owner(port)}; "
            f"stop that process or choose another port with {setting}"
        )


def wait_until(check, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - a health check that raises means "not yet"
            pass
        time.sleep(interval)
    return False
