"""Rollout status by the `kubectl rollout status` rules, plus the pod states
that mean a rollout will not finish (pure: works on API objects as dicts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STUCK_REASONS = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}


@dataclass(frozen=True)
class RolloutState:
    done: bool
    failed: bool
    message: str
    ready: int
    desired: int


def _before(condition: dict[str, Any], since: datetime | None) -> bool:
    """Whether the condition was last set before `since` (a wait's start)."""
    stamp = condition.get("lastUpdateTime")
    if since is None or not stamp:
        return False
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) < since


def deployment_state(deployment: dict[str, Any], since: datetime | None = None) -> RolloutState:
    """Where the Deployment's rollout stands. A progress deadline exceeded
    before `since` is an earlier rollout's: a restore that takes back a
    ReplicaSet that is there already keeps that condition until it completes."""
    spec, status, meta = deployment.get("spec", {}), deployment.get("status", {}) or {}, deployment["metadata"]
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    # Pods of the new release that are ready: during a rolling update the old
    # ones still count in readyReplicas, and progress means the new ones.
    # The Deployment's status has no such count; with maxUnavailable 0 the old
    # pods stay available, so the new ready ones are the available ones beyond them.
    old = max(0, total - updated)
    ready = max(0, min(updated, available - old))

    def waiting(message: str) -> RolloutState:
        return RolloutState(False, False, message, ready, desired)

    if int(meta.get("generation", 0)) > int(status.get("observedGeneration") or 0):
        return waiting("waiting for the deployment spec update to be observed")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded" and not _before(condition, since):
            return RolloutState(
                False,
                True,
                f"the rollout did not finish within its progress deadline: {ready} of {desired} new pods ready",
                ready,
                desired,
            )
    if updated < desired:
        return waiting(f"{updated} of {desired} new pods created")
    if total > updated:
        return waiting(f"{total - updated} old pods pending termination")
    if available < updated:
        return waiting(f"{available} of {updated} updated pods available")
    return RolloutState(True, False, f"{ready} of {desired} pods ready", ready, desired)


# Pods are looked at this many times per stuck window (and never more often
# than the rollout wait's watch slice).
POD_LOOKS_PER_STUCK_WINDOW = 6


def next_pod_look(now: float, first_seen: dict[str, float], stuck_after: float, slice_seconds: float) -> float:
    """When the rollout wait next lists the pods: a sixth of the stuck
    window on, or sooner, the moment the pod seen stuck first has been stuck
    long enough. A pod is found stuck at most a sixth of the window late
    (`first_seen` is when a look first saw it), and a long wait lists its
    pods every 5 s by default, not at every 2 s watch slice."""
    at = now + max(slice_seconds, stuck_after / POD_LOOKS_PER_STUCK_WINDOW)
    if first_seen:
        at = min(at, min(first_seen.values()) + stuck_after)
    return at


def stuck_pod_reason(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, words a user can act on) when a pod's container cannot run."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            # Between two back-offs a crash-looping container shows as terminated.
            reason = "CrashLoopBackOff"
            status = {**status, "lastState": {"terminated": terminated}}
        if reason not in STUCK_REASONS:
            continue
        image = status.get("image", "")
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
            return reason, f"image {image} cannot be pulled ({reason}): {waiting.get('message') or 'pull failed'}"
        if reason == "CrashLoopBackOff":
            last = ((status.get("lastState") or {}).get("terminated")) or {}
            exit_code = last.get("exitCode")
            detail = f", last exit code {exit_code}" if exit_code is not None else ""
            return reason, (
                f"container {status.get('name')} keeps crashing (CrashLoopBackOff, "
                f"{status.get('restartCount', 0)} restarts{detail}); check the app's logs and start command"
            )
        return reason, f"container {status.get('name')} cannot start ({reason}): {waiting.get('message', '')}"
    return None
