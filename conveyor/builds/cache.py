"""Layers kept between builds of one app on a worker host.

A build's image storage (buildah's vfs store, with `--layers`) is kept after
a successful build as the app's cache, and moved into the next build of the
same app, so unchanged steps are not run again ("Using cache" in the log).
Moving, not copying: a cache belongs to one build at a time, so two builds of
one app at once never share a store (the second builds without a cache). A
cache is per app, never shared across apps or projects, and bounded: a store
larger than `CONVEYOR_BUILD_CACHE_MAX_MB` is not kept, caches unused for
`CONVEYOR_BUILD_CACHE_DAYS` are removed, and the least recently used go
first while all of them together exceed `CONVEYOR_BUILD_CACHE_TOTAL_MB`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from conveyor.settings import Settings

SIZE_FILE = ".conveyor-cache-bytes"


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

    def keep(self, project_id: str, app_id: str, storage: Path) -> str:
        """After a successful build: keep its store as the app's cache, if it
        is within the bound. Says what happened, for the build log."""
        if not self.settings.build_cache:
            return "the layer cache is off (CONVEYOR_BUILD_CACHE)"
        # The run root holds locks and mounts of this build only.
        shutil.rmtree(storage / "run", ignore_errors=True)
        size = tree_bytes(storage)
        bound = self.settings.build_cache_max_mb * 1024 * 1024
        if size > bound:
            return f"layers not kept: {size // 2**20} MiB is over the cache bound of {self.settings.build_cache_max_mb} MiB"
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
