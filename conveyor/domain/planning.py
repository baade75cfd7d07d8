"""What a change to an app means: a release, a scale, a record, or nothing.

Pure: the API's service calls it with the app as it is and the fields the
request set, then writes what the plan says. Unit tests call it directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from conveyor.domain.workload import Process, Workload, at_counts

# Fields a PATCH may set on the app besides env.
SETTABLE = ("image_url", "port", "repo_branch", "build_command", "progress_deadline_seconds", "replicas")


class ImageSource(StrEnum):
    # The image the active deployment runs, pinned by digest: a config change.
    RUNNING = "running"
    # The app's source, resolved (or built) again: a new image_url, or nothing runs yet.
    SOURCE = "source"


@dataclass(frozen=True)
class AppFacts:
    image_url: str | None
    port: int
    replicas: int
    env: Mapping[str, str]
    # The app has an active deployment whose image is pinned by digest.
    runs_pinned_image: bool
    # Health checks and resources as the app holds them.
    workload: Workload = field(default_factory=Workload)


@dataclass(frozen=True)
class UpdatePlan:
    # Attribute → value to set on the app (env included).
    changes: dict[str, Any] = field(default_factory=dict)
    # A release is asked for, and where its image comes from.
    release_from: ImageSource | None = None
    # What the audit entry of a release says changed.
    release_summary: str = ""
    # Settings changed that need no rollout (recorded in the audit log).
    recorded: tuple[str, ...] = ()
    # (from, to) when the replica count changes: a scale, unless a release
    # runs anyway (a release always runs at the app's current size).
    scale: tuple[int, int] | None = None
    # (process, from, to) for each other process whose count changes: the same.
    process_scales: tuple[tuple[str, int, int], ...] = ()


def merge_env(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """A PATCH's env is merged: a key set to null is removed."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def only_counts(patch: Mapping[str, Any] | None) -> bool:
    """Whether a PATCH of `processes` only sets replica counts (a scale)."""
    return all(isinstance(given, Mapping) and set(given) == {"replicas"} for given in (patch or {}).values())


def merge_processes(current: Mapping[str, Process] | None, patch: Mapping[str, Any]) -> dict[str, Process] | None:
    """A PATCH of `processes` is merged by name: null removes a process, an
    object of `replicas` alone scales it (a Procfile's process too), any other
    object replaces its definition (keeping its count unless it gives one)."""
    merged = dict(current or {})
    for name, given in patch.items():
        if given is None:
            merged.pop(name, None)
            continue
        kept = merged.get(name)
        if set(given) == {"replicas"}:
            merged[name] = (kept or Process()).model_copy(update={"replicas": given["replicas"]})
        else:
            merged[name] = Process.model_validate({"replicas": kept.replicas if kept else 1} | dict(given))
    return merged or None


# An entry that holds a count alone, as a release renders it: nothing.
COUNT_ONLY = Process().definition()


def definitions(workload: Workload) -> dict[str, Process]:
    """Each process as a release renders it: without its count. An entry
    that holds only a count (a Procfile's process, scaled) defines nothing."""
    return {name: p.definition() for name, p in (workload.processes or {}).items() if p.definition() != COUNT_ONLY}



def keeping_counts(restored: Workload, current: Workload) -> Workload:
    """A revert's or retry's workload: the other release's, at the app's
    process counts now (as web keeps its `replicas`)."""
    return restored.model_copy(update={"processes": at_counts(restored.processes, current)})


def merge_workload(current: Workload, given: Mapping[str, Any]) -> Workload:
    """A PATCH replaces each health check and `resources` it names whole; null
    removes one. `processes` is merged by name (`merge_processes`)."""
    named = {name: given[name] for name in Workload.FIELDS if name in given and name != "processes"}
    merged = current.model_dump() | named
    if "processes" in given:
        merged["processes"] = merge_processes(current.processes, given["processes"] or {})
    return Workload.model_validate(merged)


def plan_update(app: AppFacts, given: Mapping[str, Any]) -> UpdatePlan:
    """The plan for a PATCH whose set fields are `given` (nulls of port and
    replicas are refused before this; a null health check or `resources`
    removes it)."""
    env = merge_env(app.env, given.get("env") or {})
    changes: dict[str, Any] = {name: given[name] for name in SETTABLE if given.get(name) is not None}
    changes["env"] = env
    workload = merge_workload(app.workload, given)
    workload_changed = [name for name in Workload.FIELDS if name != "processes" and getattr(workload, name) != getattr(app.workload, name)]
    if definitions(workload) != definitions(app.workload):
        workload_changed.append("processes")
    before = {name: p.replicas for name, p in (app.workload.processes or {}).items()}
    process_scales = tuple(
        (name, before.get(name, 1), p.replicas) for name, p in sorted((workload.processes or {}).items()) if p.replicas != before.get(name, 1)
    )
    if workload != app.workload:
        changes["workload"] = workload.stored()
    image_changed = "image_url" in given and given["image_url"] != app.image_url
    port_changed = "port" in given and given["port"] != app.port
    env_keys = sorted(k for k in set(env) | set(app.env) if env.get(k) != app.env.get(k))
    release_from = None
    summary = ""
    if image_changed or port_changed or env_keys or workload_changed:
        release_from = ImageSource.RUNNING if app.runs_pinned_image and not image_changed else ImageSource.SOURCE
        parts = [f"env ({', '.join(env_keys)})"] if env_keys else []
        parts += [f"{name}={given[name]}" for name in ("image_url", "port") if name in given]
        parts += workload_changed
        summary = "Changed " + ", ".join(parts)
    recorded = tuple(sorted(set(given) - {"replicas"} - ({"processes"} if only_counts(given.get("processes")) else set())))
    replicas = given.get("replicas")
    scale = (app.replicas, replicas) if replicas is not None and replicas != app.replicas else None
    return UpdatePlan(
        changes=changes, release_from=release_from, release_summary=summary, recorded=recorded, scale=scale, process_scales=process_scales
    )
