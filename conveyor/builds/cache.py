"""Layers kept between builds of one app: on the worker host, and in the
platform's registry for every worker.

On the host: a build's image storage (buildah's vfs store, with `--layers`) is kept after
a successful build as the app's cache, and moved into the next build of the
same app, so unchanged steps are not run again ("Using cache" in the log).
Moving, not copying: a cache belongs to one build at a time, so two builds of
one app at once never share a store (the second builds without a cache). A
cache is per app, never shared across apps or projects, and bounded: a store
larger than `CONVEYOR_BUILD_CACHE_MAX_MB` is not kept, caches unused for
`CONVEYOR_BUILD_CACHE_DAYS` are removed, and the least recently used go
first while all of them together exceed `CONVEYOR_BUILD_CACHE_TOTAL_MB`.

In the registry (`SharedCache`): after a successful build, the images of
its steps (buildah's intermediate images, those it made and those it
reused) are pushed to the app's cache repository `<project>/cache/<app>`,
one tag per image (`c-<image id>`), and the tags of older steps are deleted,
so the repository holds the last build's chain only. A build on a worker
without the app's store pulls them first (all tags), and buildah's `--layers`
finds them as it finds its own: an unchanged step is not run again. The
repository is the project's (the FROM rule keeps other projects out of it);
it is not written when the store is over `CONVEYOR_BUILD_CACHE_MAX_MB`, and
the sweep deletes the caches of apps without a build for
`CONVEYOR_BUILD_CACHE_DAYS` (or deleted). Pulls and pushes run outside the
build's network, as the base images' pull and the image's push do.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from conveyor.clients import oci_registry
from conveyor.clients.db.models import App, Build
from conveyor.clients.db.session import read_scope
from conveyor.domain.errors import RegistryRefused, RegistryUnreachable
from conveyor.settings import Settings

log = logging.getLogger(__name__)

SIZE_FILE = ".conveyor-cache-bytes"
# buildah's line for a step it did not run again.
USING_CACHE = re.compile(r"^--> Using cache ([0-9a-f]{64})\s*$")
CACHE_TAG_PREFIX = "c-"
# `<project>/cache/<app>`: a cache repository (the sweep's catalog filter;
# a project's, never a shared repository that happens to be named `…/cache/…`).
CACHE_REPOSITORY = re.compile(r"^(?P<project>proj_[a-z0-9_-]+)/cache/(?P<app>app_[0-9a-f]+)$")
# How often one worker sweeps the registry's caches at most.
SWEEP_EVERY_SECONDS = 3600.0


def tree_bytes(path: Path) -> int:
    """The bytes of the files under `path` (links not followed)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


class BuildCache:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.home / "build-cache"

    def place(self, project_id: str, app_id: str) -> Path:
        return self.root / project_id / app_id

    def take(self, project_id: str, app_id: str, storage: Path) -> bool:
        """Move the app's cache into the build's (empty) `storage`; False
        when there is none, or another build of the app holds it."""
        if not self.settings.build_cache:
            return False
        source = self.place(project_id, app_id)
        # Claimed by renaming it beside the store first: of two builds at once only one gets it,
        # and the build's own (empty, sandbox-owned) store stays as it is until then.
        claimed = storage.with_name(storage.name + ".cache")
        try:
            os.rename(source, claimed)
        except OSError:
            return False
        storage.rmdir()
        os.rename(claimed, storage)
        (storage / SIZE_FILE).unlink(missing_ok=True)
        return True

    def over_bound(self, size: int) -> str | None:
        """Why a store of `size` bytes is not kept (nor shared); None when it may be."""
        if size > self.settings.build_cache_max_mb * 1024 * 1024:
            return f"{size // 2**20} MiB is over the cache bound of {self.settings.build_cache_max_mb} MiB"
        return None

    def keep(self, project_id: str, app_id: str, storage: Path, size: int) -> str:
        """After a successful build: keep its store (`size` bytes) as the
        app's cache, if it is within the bound. Says what happened, for the
        build log."""
        if not self.settings.build_cache:
            return "the layer cache is off (CONVEYOR_BUILD_CACHE)"
        # The run root holds locks and mounts of this build only.
        shutil.rmtree(storage / "run", ignore_errors=True)
        if (over := self.over_bound(size)) is not None:
            return f"layers not kept: {over}"
        (storage / SIZE_FILE).write_text(str(size))
        target = self.place(project_id, app_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(storage, target)
        except OSError:
            # Another build of the app kept its layers meanwhile: the later one wins next time.
            return "layers not kept: another build of this app kept its own"
        os.utime(target)
        self.sweep()
        return f"layers kept for the next build of this app ({size // 2**20} MiB)"

    def sweep(self) -> None:
        """Remove caches unused for too long, then the least recently used
        while all of them together are over the total bound."""
        if not self.root.is_dir():
            return
        entries: list[tuple[float, int, Path]] = []
        oldest = time.time() - self.settings.build_cache_days * 86400
        for project in self.root.iterdir():
            for place in project.iterdir() if project.is_dir() else []:
                used = place.stat().st_mtime
                if used < oldest:
                    shutil.rmtree(place, ignore_errors=True)
                    continue
                try:
                    size = int((place / SIZE_FILE).read_text())
                except (OSError, ValueError):
                    size = tree_bytes(place)
                entries.append((used, size, place))
        total = sum(size for _used, size, _place in entries)
        bound = self.settings.build_cache_total_mb * 1024 * 1024
        for _used, size, place in sorted(entries):
            if total <= bound:
                break
            shutil.rmtree(place, ignore_errors=True)
            total -= size


def cache_repository(project_id: str, app_id: str) -> str:
    """The app's cache repository in the platform's registry: under its
    project's own prefix, so that only that project's builds may name it."""
    return f"{project_id}/cache/{app_id}".lower()


def cache_tag(image_id: str) -> str:
    return f"{CACHE_TAG_PREFIX}{image_id}"


def reused_image(line: str) -> str | None:
    """The id of the image a line of the build's output says it reused
    ("Using cache"). A step's own output can print such a line too: callers
    count only the ids of the cache's own images."""
    found = USING_CACHE.match(line)
    return found.group(1) if found else None


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


class SharedCache:
    """The app's layers in the platform's registry (see the module's text).
    Every failure here is the cache's, never the build's: callers log it and
    build without."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._swept_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.settings.build_cache and self.settings.build_cache_shared

    def reference(self, project_id: str, app_id: str) -> str:
        return f"{self.settings.registry}/{cache_repository(project_id, app_id)}"

    def drop_stale(self, project_id: str, app_id: str, keep: set[str]) -> int:
        """Delete the cache tags that are not `keep` (an earlier build's
        steps); returns how many went."""
        repository = cache_repository(project_id, app_id)
        stale = [t for t in oci_registry.list_tags(self.settings, repository) if t.startswith(CACHE_TAG_PREFIX) and t not in keep]
        for tag in stale:
            oci_registry.delete_tag(self.settings, repository, tag)
        return len(stale)

    def sweep(self, url: str) -> int:
        """Delete the caches of apps that were deleted or have had no build
        for CONVEYOR_BUILD_CACHE_DAYS (only the cache's `c-` tags). Returns
        how many apps' caches went."""
        found = {m.group("app"): name for name in oci_registry.catalog(self.settings) if (m := CACHE_REPOSITORY.match(name))}
        if not found:
            return 0
        with read_scope(url) as session:
            apps = set(session.scalars(select(App.id).where(App.id.in_(found))))
            latest = select(Build.app_id, func.max(Build.created_at)).where(Build.app_id.in_(found)).group_by(Build.app_id)
            last = {app_id: built for app_id, built in session.execute(latest).all()}
        oldest = _naive_utc(datetime.now(UTC) - timedelta(days=self.settings.build_cache_days))
        dropped = 0
        for app_id, repository in found.items():
            built = last.get(app_id)
            if app_id in apps and built is not None and _naive_utc(built) >= oldest:
                continue
            try:
                for tag in oci_registry.list_tags(self.settings, repository):
                    if tag.startswith(CACHE_TAG_PREFIX):
                        oci_registry.delete_tag(self.settings, repository, tag)
            except (RegistryRefused, RegistryUnreachable):
                continue
            dropped += 1
        return dropped

    def sweep_soon(self, url: str) -> None:
        """The sweep in a thread of its own, at most once an hour per worker:
        it is not the build's work, nor bounded by the build's time."""
        now = time.monotonic()
        if self._swept_at and now - self._swept_at < SWEEP_EVERY_SECONDS:
            return
        self._swept_at = now

        def sweep() -> None:
            try:
                if dropped := self.sweep(url):
                    log.info("removed the registry's layer caches of %d apps deleted or without a build for %d days", dropped, self.settings.build_cache_days)
            except Exception:
                log.exception("the sweep of the registry's layer caches stopped")

        threading.Thread(target=sweep, name="layer-cache-sweep", daemon=True).start()
