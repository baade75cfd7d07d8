"""Background processes that the local platform starts and tracks by pid file.

Each process runs in its own session (so Ctrl-C in the terminal does not reach
it and a whole tree can be signalled at once) and writes its output to a log
file. A pid file records the pid and the command line, so a recycled pid is
never mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class PortInUse(RuntimeError):
    pass


@dataclass
class Tracked:
    name: str
    pid: int
    cmd: list[str]
    # Set only in the process that started it: the reliable way to see an early exit.
    popen: subprocess.Popen | None = None

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return alive(self.pid, self.cmd)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int, cmd: list[str] | None = None) -> bool:
    current = _cmdline(pid)
    if not current:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return cmd is None or Path(current[0]).name == Path(cmd[0]).name


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (those alive now)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        if p in found:
            continue
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found.append(p)
        stack.extend(int(c) for c in children)
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by a process and its descendants."""
    ticks = 0
    for p in process_tree(pid):
        try:
            # Fields after the command (which may hold spaces): utime and stime are 14 and 15.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ProcessTable:
    def __init__(self, run_dir: Path, log_dir: Path):
        self.run_dir = run_dir
        self.log_dir = log_dir

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def get(self, name: str) -> Tracked | None:
        try:
            data = json.loads(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        tracked = Tracked(name=name, pid=int(data["pid"]), cmd=list(data["cmd"]))
        if not alive(tracked.pid, tracked.cmd):
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
        tracked = Tracked(name=name, pid=proc.pid, cmd=cmd, popen=proc)
        self._pidfile(name).write_text(json.dumps({"pid": proc.pid, "cmd": cmd, "started": time.time()}))
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
        tracked = self.get(name)
        if tracked is None:
            return False
        try:
            os.killpg(tracked.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(tracked.pid):
            _reap(tracked.pid)
            time.sleep(0.1)
        if alive(tracked.pid):
            try:
                os.killpg(tracked.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(tracked.pid)
        self._pidfile(name).unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
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
