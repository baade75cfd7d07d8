"""Builds from source: resolve a branch head, reuse an image built for the same
commit, or build with buildah and push. The build log goes to the database as
the build runs (conveyor/builds/logs.py), so any API replica can stream it; an
uploaded source comes from the registry, so any worker can build it."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import CancelledError

from conveyor.builds import sandbox, sources
from conveyor.builds.buildah import Buildah, startup_fault
from conveyor.builds.cache import BuildCache, SharedCache, cache_repository, cache_tag, reused_image, tree_bytes
from conveyor.builds.git import failure_text as git_failure_text
from conveyor.builds.git import git_env, pinned_config
from conveyor.builds.logs import BuildLogWriter
from conveyor.builds.recipe import FromRule, base_images, default_dockerfile, mirrored, registry_name
from conveyor.clients.db.models import Build, Deployment
from conveyor.clients.db.session import session_scope
from conveyor.clients.oci_registry import fetch_source, list_tags, manifest_digest
from conveyor.domain import egress, images
from conveyor.domain.errors import (
    BuildFailed,
    BuildInterrupted,
    DeploymentGone,
    RegistryRefused,
    RegistryUnreachable,
    SourceRefused,
    SourceUnreachable,
)
from conveyor.domain.ids import utcnow
from conveyor.domain.payloads import BuildInput, BuiltImage, FindBuildInput, RecordBuildInput, ResolveCommitInput
from conveyor.domain.redact import mask_url_credentials
from conveyor.domain.vocabulary import BUILD_FINISHED, TERMINAL, BuildStatus, DeploymentStatus, SourceType
from conveyor.domain.workload import WEB, parse_procfile
from conveyor.settings import Settings

LOG_TAIL = 20


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# buildah's words for a pull or push the registry refused for good.
PERMANENT_REGISTRY_ANSWERS = ("manifest unknown", "name unknown", "not found", "unauthorized", "denied", "forbidden")
HEARTBEAT_SECONDS = 5.0
# Runs of `buildah bud` when buildah could not start a step (buildah.STARTUP_FAULTS).
BUILDER_STARTS = 3
# At most this long to pull the registry's layer cache, and again to share a build's.
CACHE_SECONDS = 120.0
# Writes one line to the build log (a BuildLogWriter).
Log = Callable[[str], None]


@contextmanager
def heartbeating(every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Heartbeat the activity the whole time, not only while build output
    streams: a quiet clone, pull or push must not look like a dead worker
    (Temporal would then start a second attempt beside this one)."""
    stop = threading.Event()
    context = contextvars.copy_context()  # the activity's context, for this thread

    def beat() -> None:
        while not stop.wait(every):
            context.run(activity.heartbeat)

    thread = threading.Thread(target=beat, name="build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _why(exc: Exception) -> str:
    """A cache failure for the build log: the platform's own words, or the kind of an unexpected error."""
    return str(exc) if isinstance(exc, (BuildFailed, BuildInterrupted, RegistryRefused, RegistryUnreachable)) else type(exc).__name__


def _read_digest(path: Path) -> str:
    """The pushed digest, from a file the sandbox could have replaced: no link followed, checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BuildFailed(f"the push left no digest ({exc.strerror})") from None
    with os.fdopen(fd) as f:
        digest = f.read(200).strip()
    if not DIGEST.fullmatch(digest):
        raise BuildFailed("the push left no valid sha256 digest")
    return digest


class BuilderActivities:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.effective_database_url
        self.buildah = Buildah(settings)
        self.cache = BuildCache(settings)
        self.shared = SharedCache(settings)

    @activity.defn(name="resolve_git_commit")
    def resolve_git_commit(self, request: ResolveCommitInput) -> str:
        try:
            sources.check_repo_url(request.repo_url, self.settings.repo_schemes)
        except sources.UnsafeSource as exc:
            raise SourceRefused(str(exc)) from exc
        try:
            pinned = pinned_config(self.settings, request.repo_url)
        except egress.OutboundRefused as exc:
            raise SourceRefused(f"the git host of {mask_url_credentials(request.repo_url)} {exc}") from None
        proc = subprocess.run(
            ["git", *pinned, "ls-remote", "--", request.repo_url, f"refs/heads/{request.branch}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=git_env(self.settings),
        )
        if proc.returncode != 0:
            if (uniform := git_failure_text(proc.stderr, request.repo_url)) is not None:
                raise SourceUnreachable(uniform)
            message = mask_url_credentials(proc.stderr.strip()[-500:], request.repo_url) or ""
            permanent = any(w in message.lower() for w in ("not found", "does not appear", "not a git repository", "denied"))
            failure = SourceRefused if permanent else SourceUnreachable
            raise failure(f"cannot read {mask_url_credentials(request.repo_url)}: {message}")
        line = proc.stdout.strip().splitlines()
        if not line:
            raise SourceRefused(f"branch {request.branch!r} does not exist in {mask_url_credentials(request.repo_url)}")
        return line[0].split()[0]

    @activity.defn(name="find_built_image")
    def find_built_image(self, request: FindBuildInput) -> BuiltImage | None:
        """An image already built for this app and commit, if the registry still has it."""
        with session_scope(self.url) as session:
            build = session.scalars(
                select(Build)
                .where(Build.app_id == request.app_id, Build.source_commit == request.commit, Build.status == BuildStatus.SUCCEEDED)
                .order_by(Build.created_at.desc())
            ).first()
            if build is None or not build.image_ref or not build.image_digest:
                return None
            reference, digest, procfile = build.image_ref, build.image_digest, dict(build.procfile or {})
        ref = images.parse(reference)
        if manifest_digest(self.settings, ref.repository, digest) != digest:
            return None
        return BuiltImage(image=reference.split("@", 1)[0], digest=digest, reference=reference, procfile=procfile)

    def _fetch(self, request: BuildInput, src: Path, log: Log) -> None:
        plan = request.plan
        if plan.source_type == SourceType.GIT:
            if not plan.repo_url or not plan.commit:
                raise BuildFailed("a git build needs its repository URL and commit")
            log(f"==> fetching {mask_url_credentials(plan.repo_url)} at {plan.commit}")
            try:
                pinned = pinned_config(self.settings, plan.repo_url)
            except egress.OutboundRefused as exc:
                raise BuildFailed(f"the git host {exc}") from None
            for args in (
                ["git", *pinned, "clone", "--quiet", "--no-tags", "--", plan.repo_url, str(src)],
                ["git", "-C", str(src), "checkout", "--quiet", "--detach", plan.commit],
            ):
                proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=git_env(self.settings))
                if proc.returncode != 0:
                    uniform = git_failure_text(proc.stderr, plan.repo_url)
                    log(uniform or mask_url_credentials(proc.stderr.strip(), plan.repo_url) or "")
                    raise BuildFailed(uniform or f"git {'clone' if 'clone' in args else 'checkout'} failed")
            shutil.rmtree(src / ".git", ignore_errors=True)
        else:
            log("==> unpacking the uploaded source")
            limits = sources.Limits(self.settings.upload_max_uncompressed_bytes, self.settings.upload_max_entries)
            tarball = Path(plan.upload_path or "")
            if plan.source_ref:
                tarball = src.with_name("source.tar")
                try:
                    # RegistryUnreachable (transient) goes up as it is: the attempt is retried.
                    fetch_source(self.settings, plan.source_ref, tarball, self.settings.upload_max_bytes)
                except RegistryRefused as exc:
                    raise BuildFailed(str(exc)) from exc
            try:
                sources.extract(tarball, src, limits)
            except sources.UnsafeSource as exc:
                raise BuildFailed(str(exc)) from exc

    def _run_streaming(self, proc: subprocess.Popen[str], log: Log, deadline: float) -> None:
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        last = ""
        try:
            while True:
                try:
                    line = lines.get(timeout=2.0)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log(line)
                    last = line
                activity.heartbeat(last)
                if activity.is_cancelled():
                    raise CancelledError("build cancelled")
                if time.monotonic() > deadline:
                    raise BuildFailed(f"the build took longer than {self.settings.build_timeout_seconds}s and was stopped")
            if proc.wait() != 0:
                raise BuildFailed(f"buildah bud exited with status {proc.returncode}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _bud(self, box: sandbox.BuildSandbox, args: list[str], log: Log, deadline: float) -> None:
        """`buildah bud` in the sandbox. When buildah could not start a step's
        runner (the step never ran), the build runs again: the steps it finished
        are in its layer store and are not run twice. Still so after
        BUILDER_STARTS runs, the build fails: a step's own output can say the
        same words, and must not make a build run without end."""
        faults: list[str] = []

        def seen(line: str) -> None:
            if startup_fault(line):
                faults.append(line.strip())
            log(line)

        for start in range(1, BUILDER_STARTS + 1):
            faults.clear()
            proc, description = box.popen_build(args)
            log(f"==> {description}")
            try:
                self._run_streaming(proc, seen, deadline)
                return
            except BuildFailed:
                if not faults:
                    raise
            if start == BUILDER_STARTS:
                raise BuildFailed(f"buildah could not start a build step in {BUILDER_STARTS} runs ({faults[-1]})")
            log(f"==> buildah could not start a build step ({faults[-1]}); the step did not run: building again ({start + 1} of {BUILDER_STARTS})")

    def _sandboxed(self, box: sandbox.BuildSandbox, args: list[str], what: str, log: Log, deadline: float) -> str:
        """A buildah command that runs no build step (pull, push), bounded by the deadline."""
        try:
            proc = box.run(args, timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"the build took longer than {self.settings.build_timeout_seconds}s and was stopped") from None
        if proc.returncode != 0:
            output = proc.stdout.strip() + proc.stderr.strip()
            log(output)
            # A missing image or refused access stays so; a registry away comes back.
            if any(words in output.lower() for words in PERMANENT_REGISTRY_ANSWERS):
                raise BuildFailed(f"{what} failed (the registry refused it)")
            raise BuildInterrupted(f"{what} failed")
        stdout: str = proc.stdout
        return stdout

    def _pull_bases(self, box: sandbox.BuildSandbox, dockerfile: Path, log: Log, deadline: float, project_id: str) -> None:
        """Pull every base image the Dockerfile names (the build itself never
        pulls), as the FROM rule allows, from a mirror where one is set."""
        s = self.settings
        rule = FromRule(s.registry, images.parse(s.build_base_image), s.from_registries)
        for base in base_images(dockerfile.read_text(errors="replace")):
            try:
                ref = images.parse(base)
            except images.InvalidImageReference:
                raise BuildFailed(f"FROM {base}: not an image reference this builder can pull") from None
            if (refused := rule.refusal(ref, project_id)) is not None:
                raise BuildFailed(f"FROM {base}: {refused}")
            source = mirrored(ref, s.mirrors) or base
            log(f"==> pulling {base}" + (f" from the mirror {source}" if source != base else ""))
            # Plain HTTP only to the platform's own registry, never to another.
            insecure = s.registry_insecure and images.parse(source).registry == s.registry
            args = ["pull", "--quiet"] + (["--tls-verify=false"] if insecure else []) + [source]
            self._sandboxed(box, args, f"pulling {base}", log, deadline)
            if source != base and not ref.digest:
                # The build finds it under the name its FROM line gives (one
                # pinned by digest is found by the digest, which the mirror keeps).
                names = [base, f"{registry_name(ref)}/{ref.repository}:{ref.tag or 'latest'}"]
                self._sandboxed(box, ["tag", source, *names], f"naming {base}", log, deadline)

    def _platform_tls(self) -> list[str]:
        """buildah's flag for the platform's own registry when it is plain HTTP."""
        return ["--tls-verify=false"] if self.settings.registry_insecure else []

    def _images(self, box: sandbox.BuildSandbox, log: Log, deadline: float) -> dict[str, list[str]]:
        """Every image in the build's store: its id and its names."""
        out = self._sandboxed(box, ["images", "--all", "--no-trunc", "--json"], "listing the build's images", log, deadline)
        return {str(image["id"]).removeprefix("sha256:"): list(image.get("names") or []) for image in json.loads(out or "null") or []}

    def _cached_layers(self, box: sandbox.BuildSandbox, request: BuildInput, took_local: bool, log: Log, deadline: float) -> set[str] | None:
        """The app's cached step images in the build's store: the host's (taken
        already) or, on a worker without them, the registry's, pulled here (an
        image whose id is not the one its tag names is dropped). None when the
        registry's cache is off or the store cannot be read: the build then
        shares nothing. Never fails the build."""
        if not self.shared.enabled:
            return None
        reference = self.shared.reference(request.project_id, request.app_id)
        if not took_local:
            try:
                tags = list_tags(self.settings, cache_repository(request.project_id, request.app_id))
                if tags:
                    until = min(deadline, time.monotonic() + CACHE_SECONDS)
                    self._sandboxed(box, ["pull", "--all-tags", "--quiet", *self._platform_tls(), f"docker://{reference}"], "pulling the layer cache", log, until)
                    log(f"==> layer cache: the layers of this app's last build come from the registry ({len(tags)} step images); unchanged steps are not run again")
            except Exception as exc:  # noqa: BLE001 - the cache is never the build's failure
                log(f"==> layer cache: not pulled from the registry ({_why(exc)}); building without it")
        try:
            listed = self._images(box, log, deadline)
            forged = {i for i, names in listed.items() for name in names if name.startswith(f"{reference}:") and name != f"{reference}:{cache_tag(i)}"}
            if forged:
                self._sandboxed(box, ["rmi", "--force", *sorted(forged)], "dropping cache images that are not what their tags name", log, deadline)
                log(f"==> layer cache: {len(forged)} images of the registry's cache were not what their tags name and are not used")
        except Exception as exc:  # noqa: BLE001 - the cache is never the build's failure
            log(f"==> layer cache: the build's images could not be listed ({_why(exc)}); its layers will not be shared")
            return None
        return set(listed) - forged

    def _share_layers(
        self, box: sandbox.BuildSandbox, request: BuildInput, before: set[str] | None, reused: set[str], size: int, log: Log, deadline: float
    ) -> None:
        """After a successful build: its step images (those it made, and those
        of the cache it reused) into the app's cache repository, the earlier
        build's tags out of it, so that the next build on any worker finds
        them. Within the activity's time; never fails the build."""
        if before is None:
            return
        if (over := self.cache.over_bound(size)) is not None:
            log(f"==> layer cache: not shared: {over}")
            return
        reference = self.shared.reference(request.project_id, request.app_id)
        until = min(deadline + 60, time.monotonic() + CACHE_SECONDS)
        try:
            chain = (set(self._images(box, log, until)) - before) | reused
            for image_id in sorted(chain):
                push = ["push", "--quiet", *self._platform_tls(), image_id, f"docker://{reference}:{cache_tag(image_id)}"]
                self._sandboxed(box, push, "sharing the layer cache", log, until)
        except Exception as exc:  # noqa: BLE001 - the cache is never the build's failure
            log(f"==> layer cache: not shared in the registry ({_why(exc)})")
            return
        log(f"==> layer cache: {len(chain)} step images shared in {reference} for the next build of this app on any worker")
        try:
            self.shared.drop_stale(request.project_id, request.app_id, {cache_tag(image_id) for image_id in chain})
        except Exception as exc:  # noqa: BLE001 - the cache is never the build's failure
            log(f"==> layer cache: the earlier build's step images stay in the registry ({_why(exc)})")
        self.shared.sweep_soon(self.url)

    @activity.defn(name="build_image")
    def build_image(self, request: BuildInput) -> BuiltImage:
        plan = request.plan
        workspaces = self.settings.home / "workspaces"
        workspaces.mkdir(parents=True, exist_ok=True)
        # The sandbox's uid must pass through, but not list other builds.
        workspaces.chmod(0o711)
        workspace = Path(tempfile.mkdtemp(prefix=f"{plan.build_id}-", dir=workspaces))
        image = f"{self.settings.registry}/{request.project_id}/{request.slug}:{plan.build_id}"
        deadline = time.monotonic() + plan.timeout_seconds
        box: sandbox.BuildSandbox | None = None
        with heartbeating(), BuildLogWriter(self.url, plan.build_id, LOG_TAIL) as log:
            try:
                src = workspace / "src"
                self._fetch(request, src, log)
                dockerfile = src / "Dockerfile"
                if dockerfile.is_symlink():
                    # It is read on the host (for its FROM lines), where a link could lead anywhere.
                    raise BuildFailed("the Dockerfile must be a regular file, not a symlink")
                procfile = src / "Procfile"
                # Bounded: a Procfile is a few lines, never a reason to read a huge file.
                lines = procfile.read_bytes()[:65536].decode(errors="replace") if procfile.is_file() and not procfile.is_symlink() else ""
                processes = parse_procfile(lines)
                start = processes.pop(WEB, None)
                if processes:
                    log(f"==> Procfile processes besides web: {', '.join(sorted(processes))}")
                if dockerfile.is_file():
                    log("==> building with the source's Dockerfile")
                else:
                    dockerfile = workspace / "Dockerfile.conveyor"
                    dockerfile.write_text(default_dockerfile(self.settings.build_base_image, plan.build_command, start))
                    log(f"==> no Dockerfile: building on {self.settings.build_base_image} with the default recipe")
                try:
                    box = sandbox.BuildSandbox(self.settings, workspace, plan.build_id)
                    box.prepare()
                except sandbox.SandboxUnavailable as exc:
                    raise BuildFailed(str(exc)) from exc
                took_local = self.cache.take(request.project_id, request.app_id, box.storage)
                if took_local:
                    log("==> layer cache: the layers of this app's last build are here; unchanged steps are not run again")
                cached = self._cached_layers(box, request, took_local, log, deadline)
                self._pull_bases(box, dockerfile, log, deadline, request.project_id)
                before = None
                if cached is not None:
                    with contextlib.suppress(BuildFailed, BuildInterrupted, ValueError):
                        before = set(self._images(box, log, deadline))
                # The cache's images the build says it reused (its output could
                # say so of any image: only the cache's own count).
                reused: set[str] = set()

                def watched(line: str) -> None:
                    if (image_id := reused_image(line)) is not None and cached is not None and image_id in cached:
                        reused.add(image_id)
                    log(line)

                self._bud(box, self.buildah.bud_args(src, image, dockerfile, pull=False), watched, deadline)
                log(f"==> pushing {image}")
                digest_file = box.tmp / "digest"
                push = ["push", "--quiet", "--digestfile", str(digest_file), *self._platform_tls()]
                self._sandboxed(box, push + [image, f"docker://{image}"], f"pushing {image}", log, deadline + 300)
                digest = _read_digest(digest_file)
                log(f"==> pushed {image}@{digest}")
                size = tree_bytes(box.storage)
                self._share_layers(box, request, before, reused, size, log, deadline)
                log(f"==> layer cache: {self.cache.keep(request.project_id, request.app_id, box.storage, size)}")
                return BuiltImage(image=image, digest=digest, reference=f"{image}@{digest}", procfile=processes)
            except (BuildFailed, BuildInterrupted) as exc:
                log(f"==> build failed: {exc}")
                # The same kind, with the log's last lines: what the deployment's reason shows.
                raise type(exc)(f"the build failed: {exc}\n{log.tail()}") from exc
            except CancelledError:
                log("==> build cancelled")
                raise
            finally:
                if box is not None:
                    box.close()
                shutil.rmtree(workspace, ignore_errors=True)

    @activity.defn(name="record_build")
    def record_build(self, request: RecordBuildInput) -> None:
        with session_scope(self.url) as session:
            build = session.get(Build, request.build_id)
            dep = session.get(Deployment, request.deployment_id)
            if build is None or dep is None:
                # Both are written before the workflow starts (the outbox): gone means deleted with the app.
                raise DeploymentGone(f"build {request.build_id} or deployment {request.deployment_id} no longer exists (its app was deleted)")
            if dep.status in TERMINAL:
                # A workflow Reset re-running an ended deployment: its outcome stands.
                return
            build.status = request.status
            if request.commit:
                build.source_commit = dep.source_commit = request.commit
            if request.reason:
                build.reason = request.reason
            if request.status == BuildStatus.BUILDING:
                dep.status = DeploymentStatus.BUILDING
            if request.image is not None:
                build.image_ref = request.image.reference
                build.image_digest = request.image.digest
                build.procfile = dep.procfile = request.image.procfile or None
                dep.image, dep.image_ref, dep.image_digest = request.image.image, request.image.reference, request.image.digest
                dep.status = DeploymentStatus.DEPLOYING
            if request.status in BUILD_FINISHED:
                build.finished_at = utcnow()
