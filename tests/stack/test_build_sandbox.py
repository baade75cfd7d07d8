"""The build sandbox on its own, with real buildah, unshare and slirp4netns:
build steps see neither the platform's ports nor the host's processes and files,
with the network on (the default) and off."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.builder import BUILDER_STARTS, BuilderActivities
from conveyor.builds import sandbox
from conveyor.builds.buildah import startup_fault
from conveyor.domain.errors import BuildFailed
from conveyor.settings import Settings

PROBE = """
for target in {targets}; do
  if nc -w 3 ${{target%:*}} ${{target#*:}} </dev/null >/dev/null 2>&1; then echo "probe $target=reached"; else echo "probe $target=unreachable"; fi
done
echo "probe pid1=$(tr '\\0' ' ' < /proc/1/cmdline)"
if cat /etc/shadow >/dev/null 2>&1; then echo "probe shadow=read"; else echo "probe shadow=denied"; fi
if ls /proc/1/root/ >/dev/null 2>&1; then echo "probe buildah-root=listed"; else echo "probe buildah-root=denied"; fi
echo "probe route-delete=$(ip route del 169.254.0.0/16 2>&1 | tr '\\n' ' ')"
echo "probe routes=$(ip route | tr '\\n' ';')"
"""


@pytest.fixture
def listeners():
    """Two ports of the host, as the platform's are: one on loopback, one on every address."""
    sockets, stop = [], threading.Event()
    for host in ("127.0.0.1", "0.0.0.0"):
        s = socket.socket()
        s.bind((host, 0))
        s.listen()
        s.settimeout(0.5)
        sockets.append(s)

    def accept(s):
        while not stop.is_set():
            try:
                s.accept()[0].close()
            except OSError:
                pass

    for s in sockets:
        threading.Thread(target=accept, args=(s,), daemon=True).start()
    yield [s.getsockname()[1] for s in sockets]
    stop.set()
    for s in sockets:
        s.close()


@pytest.fixture
def home():
    """Not under pytest's tmp_path: its folders are 0700, and the sandbox's
    unprivileged uid must pass through every parent of its workspace."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-sandbox-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def source(home: Path, targets: list[str], run: str) -> tuple[Path, Path]:
    """A workspace with a one-step source: busybox, the probe script, `RUN run`."""
    workspace = Path(tempfile.mkdtemp(dir=home))
    src = workspace / "src"
    (src / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", src / "bin" / "busybox")
    for applet in ("sh", "nc", "cat", "tr", "ls", "ip", "echo", "dd"):
        (src / "bin" / applet).symlink_to("busybox")
    (src / "probe.sh").write_text(PROBE.format(targets=" ".join(targets)))
    (src / "Dockerfile").write_text(f"FROM scratch\nCOPY bin /bin\nCOPY probe.sh /probe.sh\nRUN {run}\n")
    return workspace, src


def bud_args(src: Path) -> list[str]:
    return ["bud", "--isolation", "chroot", "--pull=never", "-f", str(src / "Dockerfile"), "-t", "localhost/probe:1", str(src)]


def build(home: Path, targets: list[str], run: str = "/bin/sh /probe.sh", **settings_fields) -> tuple[int, str]:
    """The build in the sandbox, run again as the build activity does when
    buildah could not start the step (test_a_step_buildah_could_not_start_runs_again)."""
    settings = Settings(home=home, **settings_fields)
    workspace, src = source(home, targets, run)
    box = sandbox.BuildSandbox(settings, workspace, workspace.name)
    try:
        box.prepare()
        for _ in range(BUILDER_STARTS):
            proc, description = box.popen_build(bud_args(src))
            output, _ = proc.communicate(timeout=300)
            if not any(startup_fault(line) for line in output.splitlines()):
                break
    finally:
        box.close()
        shutil.rmtree(workspace)
    assert box.cgroup is not None and box.cgroup.dirs == [], "the build's cgroup is removed"
    return proc.returncode, description + "\n" + output


def probes(output: str) -> dict[str, str]:
    return dict(line.removeprefix("probe ").split("=", 1) for line in output.splitlines() if line.startswith("probe "))


@pytest.mark.parametrize("network", [False, True], ids=["network-off", "network-on"])
def test_build_steps_reach_neither_platform_ports_nor_host_processes(home, listeners, network):
    loopback_port, any_port = listeners
    host_ips = sandbox.host_addresses()
    targets = [f"127.0.0.1:{loopback_port}", f"127.0.0.1:{any_port}", f"10.0.2.2:{any_port}"] + [f"{ip}:{any_port}" for ip in host_ips]
    # The probe must be able to succeed: the same targets are reachable from the host.
    for target in targets[:2] + targets[3:]:
        host, port = target.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=3).close()
    status, output = build(home, targets, build_network=network)
    assert status == 0, output
    seen = probes(output)
    assert {t: seen[t] for t in targets} == {t: "unreachable" for t in targets}, output
    host_init = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    assert seen["pid1"].startswith("buildah") and host_init not in seen["pid1"]
    assert seen["shadow"] == "denied", "build steps are not root on the host"
    assert seen["buildah-root"] == "denied"
    if network:
        assert "default via 10.0.2.2" in seen["routes"] and "outbound network" in output
        # Private, shared and link-local ranges (the cluster, cloud metadata) lead nowhere either.
        routes = set(seen["routes"].split(";"))
        assert {f"unreachable {net}" for net in Settings().build_network_denied} <= {r.strip() for r in routes}, seen["routes"]
        # Nor can a step take those routes away.
        assert "not permitted" in seen["route-delete"], output
    else:
        assert seen["routes"] == "" and "no network" in output
    assert "unprivileged user namespace" in output


def test_network_setting_refuses_to_turn_on_without_slirp4netns(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "slirp4netns" else "/usr/bin/" + name)
    with pytest.raises(sandbox.SandboxUnavailable, match="slirp4netns is not installed"):
        sandbox.BuildSandbox(Settings(home=tmp_path, build_network=True), tmp_path, "x")


def test_a_step_over_its_memory_bound_fails_the_build(home):
    probe = sandbox.Cgroup("conveyor-probe", 1 << 30, 1.0, 100)
    writable = bool(probe.dirs)
    probe.remove()
    assert writable, f"no writable cgroup here ({probe.reason}): the memory bound cannot be shown"
    status, output = build(home, [], run="dd if=/dev/zero of=/dev/null bs=400M count=1 && echo allocated", build_memory_mb=200)
    assert "cgroup: 200 MiB" in output
    assert status != 0 and "Killed" in output and "allocated" not in output.splitlines(), output
    status, output = build(home, [], run="dd if=/dev/zero of=/dev/null bs=20M count=1 && echo allocated", build_memory_mb=200)
    assert status == 0 and "allocated" in output.splitlines(), output


# Stands in for buildah failing to start a step's runner (a kernel refusal that
# cannot be caused on demand): the first N runs print buildah's words for it and
# exit 1 before buildah starts; later runs are the real buildah.
REFUSE_FIRST_RUNS = (
    'n=$(cat "$TMPDIR/runs" 2>/dev/null || echo 0); echo $((n + 1)) > "$TMPDIR/runs"; '
    'if [ "$n" -lt "$REFUSALS" ]; then echo "Close_Fd sealing memfd copy: Device or resource busy"; exit 1; fi; exec "$@"'
)


@pytest.mark.parametrize(
    ("refusals", "run", "outcome"),
    [(1, "echo built", "built"), (0, "exit 3", BuildFailed), (BUILDER_STARTS, "echo built", BuildFailed)],
    ids=["refused-once-then-built", "the-step-itself-failed", "refused-every-run"],
)
def test_a_step_buildah_could_not_start_runs_again(home, refusals, run, outcome):
    """The build activity's run of `buildah bud`: buildah's own failure to start
    a step runs the build again, in a fresh sandbox as bounded as the first; a
    step that failed on its own is the build's failure, not run again; a
    builder that never starts fails the build after BUILDER_STARTS runs (a
    step can print buildah's words itself: never a build without end)."""
    settings = Settings(home=home, build_memory_mb=300)
    workspace, src = source(home, [], run)
    box = sandbox.BuildSandbox(settings, workspace, workspace.name)
    real = box.buildah
    box.buildah = lambda: ["env", f"REFUSALS={refusals}", "sh", "-c", REFUSE_FIRST_RUNS, "refuse", *real()]  # type: ignore[method-assign]
    lines: list[str] = []
    try:
        box.prepare()
        run_bud = BuilderActivities(settings)._bud
        if isinstance(outcome, str):
            ActivityEnvironment().run(run_bud, box, bud_args(src), lines.append, time.monotonic() + 300)
        else:
            with pytest.raises(outcome) as raised:
                ActivityEnvironment().run(run_bud, box, bud_args(src), lines.append, time.monotonic() + 300)
    finally:
        box.close()
        shutil.rmtree(workspace)
    runs = [line for line in lines if line.startswith("==> sandbox:")]
    # Every run in its own cgroup with the bound: a second run must not lose it.
    assert len(runs) == min(refusals + 1, BUILDER_STARTS) and all("cgroup: 300 MiB" in line for line in runs), lines
    again = [line for line in lines if "building again" in line]
    assert len(again) == min(refusals, BUILDER_STARTS - 1), lines
    if outcome == "built":
        assert "built" in lines and "(2 of 3)" in again[0]
    elif refusals == 0:
        assert "exited with status" in str(raised.value)
    else:
        assert f"in {BUILDER_STARTS} runs" in str(raised.value) and "sealing memfd copy" in str(raised.value)
    assert box.cgroup is not None and box.cgroup.dirs == []
