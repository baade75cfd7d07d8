"""The layer cache between builds of one app (conveyor/builds/cache.py), on files."""

from __future__ import annotations

import os
import time

from conveyor.builds.cache import CACHE_REPOSITORY, BuildCache, cache_repository, reused_image, tree_bytes
from conveyor.builds.recipe import FromRule
from conveyor.domain import images
from conveyor.settings import Settings


def store(path, size: int = 10):
    (path / "root").mkdir(parents=True)
    (path / "root" / "layer").write_bytes(b"x" * size)
    (path / "run").mkdir()
    (path / "run" / "lock").write_text("held")


def test_a_kept_store_is_the_next_builds_and_belongs_to_one_build_at_a_time(tmp_path):
    cache = BuildCache(Settings(home=tmp_path))
    first = tmp_path / "ws1" / "storage"
    store(first)
    assert "kept" in cache.keep("proj_a", "app_1", first, tree_bytes(first)) and not first.exists()
    second, third = tmp_path / "ws2" / "storage", tmp_path / "ws3" / "storage"
    second.mkdir(parents=True)
    third.mkdir(parents=True)
    assert cache.take("proj_a", "app_1", second)
    assert (second / "root" / "layer").read_bytes() == b"x" * 10 and not (second / "run").exists()
    # Held by the second build: a third at once gets none, and an empty store.
    assert not cache.take("proj_a", "app_1", third) and third.is_dir() and not list(third.iterdir())
    # Never another app's or another project's.
    assert not cache.take("proj_b", "app_1", third) and not cache.take("proj_a", "app_2", third)


def test_a_store_over_the_bound_is_not_kept(tmp_path):
    cache = BuildCache(Settings(home=tmp_path, build_cache_max_mb=1))
    big = tmp_path / "ws" / "storage"
    store(big, size=2 * 1024 * 1024)
    assert "over the cache bound" in cache.keep("proj_a", "app_1", big, tree_bytes(big))
    assert not cache.place("proj_a", "app_1").exists()


def test_old_caches_go_and_the_least_recently_used_while_over_the_total(tmp_path):
    cache = BuildCache(Settings(home=tmp_path, build_cache_days=1, build_cache_total_mb=2))
    now = time.time()
    for app, age in (("old", 3 * 86400), ("lru", 3600), ("mid", 60)):
        path = tmp_path / app / "storage"
        store(path, size=600 * 1024)
        cache.keep("proj_a", app, path, tree_bytes(path))
        os.utime(cache.place("proj_a", app), (now - age, now - age))
    cache.sweep()
    # Unused for three days: gone; the rest fit in 2 MiB.
    assert not cache.place("proj_a", "old").exists()
    assert cache.place("proj_a", "lru").exists() and cache.place("proj_a", "mid").exists()
    # A fourth over the total: the least recently used goes.
    path = tmp_path / "new" / "storage"
    store(path, size=1024 * 1024)
    cache.keep("proj_a", "new", path, tree_bytes(path))
    assert not cache.place("proj_a", "lru").exists()
    assert cache.place("proj_a", "mid").exists() and cache.place("proj_a", "new").exists()


def test_the_cache_can_be_turned_off(tmp_path):
    cache = BuildCache(Settings(home=tmp_path, build_cache=False))
    path = tmp_path / "ws" / "storage"
    store(path)
    assert "off" in cache.keep("proj_a", "app_1", path, tree_bytes(path)) and path.exists()


def test_the_steps_a_build_reused_are_read_from_its_output():
    assert reused_image("--> Using cache " + "a" * 64) == "a" * 64
    assert reused_image("--> aaaaaaaaaaa") is None
    assert reused_image("--> Using cache " + "b" * 63) is None  # not an image id
    assert reused_image("STEP 2/3: RUN echo --> Using cache " + "c" * 64) is None
    # A step can print buildah's line itself: the builder counts only ids of the cache's own images.
    assert reused_image("--> Using cache " + "d" * 64 + "  ") == "d" * 64


def test_an_apps_registry_cache_is_its_projects_and_no_other_project_may_start_from_it():
    repository = cache_repository("proj_a", "app_1")
    assert repository == "proj_a/cache/app_1"
    rule = FromRule("127.0.0.1:5000", images.parse("127.0.0.1:5000/conveyor/base:busybox"), frozenset())
    ref = images.parse(f"127.0.0.1:5000/{repository}:c-{'a' * 64}")
    assert rule.refusal(ref, "proj_a") is None
    assert "another project's image" in (rule.refusal(ref, "proj_b") or "")


def test_the_sweep_reads_only_projects_cache_repositories():
    assert CACHE_REPOSITORY.match(cache_repository("proj_a", "app_0123abcd"))
    # A shared repository of no project that happens to be named so is not a cache.
    assert CACHE_REPOSITORY.match("tools/cache/node") is None
    assert CACHE_REPOSITORY.match("proj_a/cache/web") is None
