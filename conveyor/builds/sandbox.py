"""The build sandbox: buildah runs unprivileged, cut off from the platform.

Every buildah command of a build runs in a new user namespace whose root is an
unprivileged subordinate uid of the host (from /etc/subuid), in new mount and
PID namespaces, inside a minimal root (pivot_root) that holds only the
system's read-only /usr and /etc and this build's own workspace and image
storage: a RUN step that escapes buildah's chroot still sees nothing of the
platform. The build itself gets a network namespace of its own: by default
(CONVEYOR_BUILD_NETWORK) a slirp4netns user-mode network that refuses the
host's loopback, every address of the host and the private ranges of
CONVEYOR_BUILD_NETWORK_DENY; with it off, no route to anything. CPU, memory and processes are bounded by a cgroup where
one can be created, file sizes and open files by rlimits, time by the
builder's deadline. Pulls and the push run buildah alone (no build steps), in
the same user namespace and root but on the host's network.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor.settings import Settings

IDS_NEEDED = 65536

# Runs as the namespace's root before buildah: builds the minimal root and
# pivots into it. $1 is the workspace, the rest is the command. bash, not sh:
# dash cannot name the descriptors of the network handshake (above 9).
ROOT_SCRIPT = r"""
set -eu
ws=$1; shift
if [ -n "${SANDBOX_READY_FD:-}" ]; then
  echo ready >&"$SANDBOX_READY_FD"
  read -r _ <&"$SANDBOX_GO_FD"
  for address in $SANDBOX_UNREACHABLE; do ip route add unreachable "$address"; done
fi
root=$ws/root
mkdir -p "$root"
mount -t tmpfs -o mode=755,size=16m sandbox-root "$root"
for dir in usr etc; do
  mkdir "$root/$dir"
  mount --rbind "/$dir" "$root/$dir"
  mount -o remount,bind,ro "$root/$dir" 2>/dev/null || true
done
for link in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$link" ]; then ln -s "$(readlink "/$link")" "$root/$link"; fi
done
mkdir -p "$root/proc" "$root/dev" "$root/sys" "$root/tmp" "$root/var/tmp" "$root/run" "$root$ws" "$root/.old"
chmod 1777 "$root/tmp" "$root/var/tmp"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount --bind "$ws" "$root$ws"
cd "$root"
pivot_root . .old
umount -l /.old
rmdir /.old
cd "$ws"
exec "$@"
"""

# Runs on the host as root: joins the build's cgroups, then becomes the sandbox.
JOIN_SCRIPT = 'for f do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be set up on this host; the message says how to fix it."""


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def subordinate_ids(path: Path, uid: int) -> IdRange | None:
    """The first range of at least IDS_NEEDED ids that `path` (/etc/subuid or
    /etc/subgid) gives the user `uid`."""
    try:
        names = {str(uid), pwd.getpwuid(uid).pw_name}
    except KeyError:
        names = {str(uid)}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit() and int(parts[2]) >= IDS_NEEDED:
            return IdRange(int(parts[1]), IDS_NEEDED)
    return None


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback (slirp4netns refuses that itself)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    addresses = []
    for line in out.splitlines():
        fields = line.split()
        address = fields[fields.index("inet") + 1].split("/")[0]
        if not address.startswith("127."):
            addresses.append(address)
    return addresses


class Cgroup:
    """A cgroup for one build (v1 controllers or a v2 group under the worker's
    own), or none when the hierarchy is not writable here."""

    BASE = Path("/sys/fs/cgroup")

    def __init__(self, name: str, memory_bytes: int, cpus: float, pids: int):
        self.dirs: list[Path] = []
        self.reason = ""
        period = 100_000
        own = self._own_paths()
        if (self.BASE / "cgroup.controllers").exists():
            plan = {"": {"memory.max": memory_bytes, "cpu.max": f"{int(cpus * period)} {period}", "pids.max": pids}}
        else:
            plan = {
                "memory": {"memory.limit_in_bytes": memory_bytes},
                "cpu": {"cpu.cfs_period_us": period, "cpu.cfs_quota_us": int(cpus * period)},
                "pids": {"pids.max": pids},
            }
        try:
            for controller, files in plan.items():
                directory = self.BASE / controller / own.get(controller, "").lstrip("/") / name
                directory.mkdir()
                self.dirs.append(directory)
                for file, value in files.items():
                    (directory / file).write_text(f"{value}\n")
        except OSError as exc:
            self.reason = f"{exc.strerror}: {getattr(exc, 'filename', '')}"
            self.remove()

    @staticmethod
    def _own_paths() -> dict[str, str]:
        paths = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
        return paths

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def remove(self) -> None:
        for directory in self.dirs:
            try:
                for pid in (directory / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for directory in self.dirs:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until its last process has exited
                    time.sleep(0.1)
        self.dirs = []


class BuildSandbox:
    """buildah for one build, confined to `workspace` (which it owns)."""

    def __init__(self, settings: Settings, workspace: Path, name: str):
        self.settings = settings
        self.workspace = workspace
        self.name = name
        uids = subordinate_ids(Path("/etc/subuid"), os.getuid())
        gids = subordinate_ids(Path("/etc/subgid"), os.getuid())
        if uids is None or gids is None:
            raise SandboxUnavailable(
                f"builds run as an unprivileged user namespace, which needs {IDS_NEEDED} subordinate ids for this user in "
                "/etc/subuid and /etc/subgid (scripts/system-deps.sh adds 100000-165535)"
            )
        if settings.build_network and shutil.which("slirp4netns") is None:
            raise SandboxUnavailable("CONVEYOR_BUILD_NETWORK is on but slirp4netns is not installed (scripts/system-deps.sh installs it)")
        self.uids, self.gids = uids, gids
        self.storage = workspace / "storage"
        self.home = workspace / "home"
        self.tmp = workspace / "tmp"
        self.slirp: subprocess.Popen | None = None
        self.cgroup: Cgroup | None = None
        self.runs = 0

    def prepare(self) -> None:
        """Hand the workspace to the sandbox's root (an unprivileged uid on the host)."""
        for directory in (self.storage, self.home, self.tmp):
            directory.mkdir(exist_ok=True)
        os.chmod(self.workspace, 0o700)
        for parent in self.workspace.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise SandboxUnavailable(f"the sandbox cannot reach its workspace: {parent} is not searchable by other users")
        for top, dirs, files in os.walk(self.workspace):
            for name in dirs + files:
                os.lchown(os.path.join(top, name), self.uids.start, self.gids.start)
        os.lchown(self.workspace, self.uids.start, self.gids.start)

    def env(self) -> dict[str, str]:
        # Only what buildah needs: build steps can read buildah's environment.
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "STORAGE_DRIVER": "vfs",
            "BUILDAH_ISOLATION": "chroot",
        }

    def buildah(self) -> list[str]:
        return ["buildah", "--root", str(self.storage / "root"), "--runroot", str(self.storage / "run"), "--storage-driver", "vfs"]

    def _namespaces(self, host_network: bool) -> list[str]:
        args = [
            "unshare",
            "--user",
            f"--map-users={self.uids.start},0,{self.uids.count}",
            f"--map-groups={self.gids.start},0,{self.gids.count}",
            "--setuid=0",
            "--setgid=0",
            "--mount",
            "--pid",
            "--mount-proc",
            "--fork",
            "--kill-child=SIGKILL",
        ]
        if not host_network:
            args.append("--net")
        return args + ["--", "bash", "-c", ROOT_SCRIPT, "sandbox", str(self.workspace)]

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """A buildah command that runs no build step (pull, push): on the host's network."""
        return subprocess.run(
            self._namespaces(host_network=True) + self.buildah() + args,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def popen_build(self, args: list[str]) -> tuple[subprocess.Popen, str]:
        """The build (`buildah bud …`) with its output on stdout, in its own
        network and bounded; returns the process and a line for the log. A
        second run (the build again) first ends the first's network and cgroup,
        and has a cgroup of its own name: one still busy cannot leave it unbounded."""
        s = self.settings
        self.close()
        self.runs += 1
        name = f"conveyor-{self.name}" + (f"-{self.runs}" if self.runs > 1 else "")
        self.cgroup = Cgroup(name, s.build_memory_mb * 1024 * 1024, s.build_cpus, s.build_max_processes)
        limits = [
            "prlimit",
            "--nofile=4096:4096",
            f"--fsize={s.build_max_file_mb * 1024 * 1024}",
            "--core=0",
            f"--nproc={s.build_max_processes * 4}",
            "--",
        ]
        command = ["sh", "-c", JOIN_SCRIPT, "join", *self.cgroup.procs_files, "--", *limits]
        env = self.env()
        fds: tuple[int, ...] = ()
        if s.build_network:
            ready_r, ready_w = os.pipe()
            go_r, go_w = os.pipe()
            env.update(SANDBOX_READY_FD=str(ready_w), SANDBOX_GO_FD=str(go_r), SANDBOX_UNREACHABLE=" ".join(host_addresses() + s.build_network_denied))
            fds = (ready_w, go_r)
        namespaces = self._namespaces(host_network=False)
        proc = subprocess.Popen(
            command + namespaces + self.buildah() + args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
            pass_fds=fds,
        )
        limits_line = (
            f"cgroup: {s.build_memory_mb} MiB, {s.build_cpus} CPU, {s.build_max_processes} processes"
            if self.cgroup.dirs
            else f"no cgroup ({self.cgroup.reason}); rlimits only"
        )
        network_line = "no network"
        if s.build_network:
            os.close(ready_w)
            os.close(go_r)
            try:
                self._start_network(proc, ready_r, go_w)
            finally:
                os.close(ready_r)
                os.close(go_w)
            network_line = "outbound network through slirp4netns, host addresses and private ranges unreachable"
        return proc, f"sandbox: unprivileged user namespace, own PID namespace, {network_line}, {limits_line}"

    def _start_network(self, proc: subprocess.Popen, ready_r: int, go_w: int) -> None:
        # The sandbox says it is inside its namespaces before slirp4netns
        # attaches to them: attaching earlier would configure the host's network.
        if os.read(ready_r, 16) != b"ready\n":
            raise SandboxUnavailable("the build sandbox exited before its network was set up")
        slirp_r, slirp_w = os.pipe()
        try:
            self.slirp = subprocess.Popen(
                ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
                 f"--ready-fd={slirp_w}", str(proc.pid), "tap0"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(slirp_w,),
                start_new_session=True,
            )
            os.close(slirp_w)
            if os.read(slirp_r, 1) != b"1":
                raise SandboxUnavailable("slirp4netns could not set up the build's network")
        finally:
            os.close(slirp_r)
        os.write(go_w, b"go\n")

    def close(self) -> None:
        if self.slirp is not None and self.slirp.poll() is None:
            self.slirp.kill()
            self.slirp.wait()
        self.slirp = None
        if self.cgroup is not None:
            self.cgroup.remove()
