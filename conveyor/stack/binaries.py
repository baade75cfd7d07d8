"""Build the local platform's Go binaries from their published modules.

Kubernetes and etcd replace their sibling modules with local folders, so
`go install module/cmd@version` refuses them. A generated wrapper module
requires the release and replaces each of those siblings with its published
version; the list of siblings is read from the release's own go.mod, never
hard-coded, so a version bump needs no other change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from conveyor.stack import versions

Progress = Callable[[str], None]

_LOCAL_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(\.{1,2}/\S+)\s*$")


def cache_root() -> Path:
    base = os.environ.get("CONVEYOR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "conveyor"
    )
    return Path(base) / versions.cache_key()


def bin_dir() -> Path:
    return cache_root() / "bin"


@dataclass(frozen=True)
class GoBinary:
    """One binary and the module release that provides it."""

    name: str
    module: str
    version: str
    package: str
    # How a local sibling replace is mapped to a published version.
    sibling_version: Callable[[str], str] | None = None
    ldflags: tuple[str, ...] = field(default_factory=tuple)
    # Folders of the module copied beside the binaries (manifests kwokctl reads).
    assets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def path(self) -> Path:
        return bin_dir() / self.name


def asset_dir(binary_name: str, folder: str) -> Path:
    return cache_root() / "assets" / binary_name / folder


def _kube_sibling_version(module: str) -> str:
    # Staging modules k8s.io/X are published as v0.<minor>.<patch> of the release.
    return "v0" + versions.KUBERNETES[versions.KUBERNETES.index(".") :]


def _kube_ldflags() -> tuple[str, ...]:
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    build_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = {
        "gitVersion": versions.KUBERNETES,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    return tuple(
        f"-X k8s.io/{pkg}/version.{k}={v}"
        for pkg in ("component-base", "client-go/pkg")
        for k, v in flags.items()
    )


def _etcd_sibling_version(module: str) -> str:
    return versions.ETCD


def _kube(name: str) -> GoBinary:
    return GoBinary(
        name=name,
        module="k8s.io/kubernetes",
        version=versions.KUBERNETES,
        package=f"k8s.io/kubernetes/cmd/{name}",
        sibling_version=_kube_sibling_version,
        ldflags=_kube_ldflags(),
    )


def all_binaries() -> list[GoBinary]:
    kwok = lambda name: GoBinary(  # noqa: E731
        name=name,
        module="sigs.k8s.io/kwok",
        version=versions.KWOK,
        package=f"sigs.k8s.io/kwok/cmd/{name}",
    )
    return [
        GoBinary(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=versions.ETCD,
            package="go.etcd.io/etcd/server/v3",
            sibling_version=_etcd_sibling_version,
        ),
        kwok("kwok"),
        kwok("kwokctl"),
        _kube("kube-apiserver"),
        _kube("kube-controller-manager"),
        _kube("kube-scheduler"),
        _kube("kubectl"),
        GoBinary(
            name="metrics-server",
            module="sigs.k8s.io/metrics-server",
            version=versions.METRICS_SERVER,
            package="sigs.k8s.io/metrics-server/cmd/metrics-server",
            ldflags=(f"-X k8s.io/client-go/pkg/version.gitVersion={versions.METRICS_SERVER}",),
            assets=("manifests/base",),
        ),
    ]


def temporal_ui() -> GoBinary:
    return GoBinary(
        name=f"temporal-ui-server-{versions.TEMPORAL_UI}",
        module="github.com/temporalio/ui-server/v2",
        version=versions.TEMPORAL_UI,
        package="github.com/temporalio/ui-server/v2/cmd/server",
    )


def missing(candidates: list[GoBinary] | None = None) -> list[GoBinary]:
    return [
        b
        for b in (all_binaries() if candidates is None else candidates)
        if not b.path.exists() or any(not asset_dir(b.name, a).is_dir() for a in b.assets)
    ]


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _run(cmd: list[str], cwd: Path, log: Path, progress: Progress, label: str) -> None:
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=_go_env(), stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                progress(f"    {label}: {time.monotonic() - started:.0f}s elapsed (log: {log})")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(
            f"{' '.join(cmd[:3])} failed (exit {proc.returncode}); last lines of {log}:\n" + "\n".join(tail)
        )


def local_replaces(go_mod_text: str) -> list[str]:
    """Module paths that a go.mod replaces with folders of its own repository."""
    mods: list[str] = []
    in_block = False
    for line in go_mod_text.splitlines():
        stripped = line.split("//", 1)[0].strip()
        if stripped.startswith("replace ("):
            in_block = True
            continue
        if in_block and stripped == ")":
            in_block = False
            continue
        if not (in_block or stripped.startswith("replace ")):
            continue
        m = _LOCAL_REPLACE.match(stripped)
        if m and "FORBIDDEN" not in m.group(2):
            mods.append(m.group(1))
    return mods


def wrapper_go_mod(binary: GoBinary, release_go_mod: str) -> str:
    lines = ["module conveyor.local/build/" + binary.name, "", "go 1.24", ""]
    lines.append(f"require {binary.module} {binary.version}")
    if binary.sibling_version is not None:
        lines.append("")
        lines.append("replace (")
        for mod in local_replaces(release_go_mod):
            lines.append(f"\t{mod} => {mod} {binary.sibling_version(mod)}")
        lines.append(")")
    return "\n".join(lines) + "\n"


def _module_download(binary: GoBinary, workdir: Path, log: Path) -> dict:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{binary.module}@{binary.version}"],
        cwd=workdir,
        env=_go_env(),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        log.write_text(out.stdout + out.stderr)
        raise RuntimeError(f"cannot download {binary.module}@{binary.version}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def build(binary: GoBinary, progress: Progress) -> None:
    root = cache_root()
    workdir = root / "src" / binary.name
    logdir = root / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    logdir.mkdir(parents=True, exist_ok=True)
    bin_dir().mkdir(parents=True, exist_ok=True)
    log = logdir / f"{binary.name}.log"
    log.write_text("")
    (workdir / "go.mod").write_text("module conveyor.local/build/probe\n\ngo 1.24\n")
    module = _module_download(binary, workdir, log)
    (workdir / "go.mod").write_text(wrapper_go_mod(binary, Path(module["GoMod"]).read_text()))
    for folder in binary.assets:
        target = asset_dir(binary.name, folder)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(module["Dir"]) / folder, target)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    (workdir / "go.sum").unlink(missing_ok=True)
    _run(["go", "get", f"{binary.package}@{binary.version}"], workdir, log, progress, f"fetching {binary.name} modules")
    tmp = binary.path.with_name(binary.path.name + ".partial")
    cmd = ["go", "build", "-trimpath", "-o", str(tmp)]
    if binary.ldflags:
        cmd += ["-ldflags", " ".join(("-s", "-w") + binary.ldflags)]
    else:
        cmd += ["-ldflags", "-s -w"]
    cmd.append(binary.package)
    _run(cmd, workdir, log, progress, f"compiling {binary.name}")
    tmp.rename(binary.path)


def ensure_binaries(progress: Progress = print, candidates: list[GoBinary] | None = None) -> Path:
    """Build every missing binary (of all, or of `candidates`) into the cache; return the bin directory."""
    todo = missing(candidates)
    if todo:
        progress(f"building {len(todo)} binaries into {bin_dir()} (first run only; this takes a while)")
    for i, binary in enumerate(todo, 1):
        started = time.monotonic()
        progress(f"[{i}/{len(todo)}] building {binary.name} from {binary.module}@{binary.version} ...")
        build(binary, progress)
        progress(f"[{i}/{len(todo)}] {binary.name} built in {time.monotonic() - started:.0f}s")
    return bin_dir()

