"""The rollout rules and stuck-pod reasons, on API objects as dicts."""

from __future__ import annotations

import time

from conveyor.domain.rollout import deployment_state, next_pod_look, stuck_pod_reason


def deployment(generation=2, observed=2, desired=3, **status) -> dict:
    return {"metadata": {"generation": generation}, "spec": {"replicas": desired}, "status": {"observedGeneration": observed, **status}}


def test_unobserved_generation_is_waiting():
    state = deployment_state(deployment(generation=3, observed=2, updatedReplicas=3, replicas=3, availableReplicas=3))
    assert not state.done and not state.failed and "observed" in state.message


def test_rollout_steps_follow_kubectl_rules():
    assert "1 of 3 new pods" in deployment_state(deployment(updatedReplicas=1, replicas=4)).message
    assert "old pods pending termination" in deployment_state(deployment(updatedReplicas=3, replicas=4)).message
    assert "2 of 3 updated pods available" in deployment_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=2)).message
    done = deployment_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=3, readyReplicas=3))
    assert done.done and done.ready == 3 and done.desired == 3


def test_scaled_to_zero_is_done():
    assert deployment_state(deployment(desired=0)).done


def test_progress_deadline_exceeded_fails():
    state = deployment_state(
        deployment(updatedReplicas=1, replicas=4, readyReplicas=3, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    )
    assert state.failed and "progress deadline" in state.message and "0 of 3 new pods ready" in state.message


def test_a_progress_deadline_exceeded_before_the_wait_began_is_an_earlier_rollouts():
    """A restore that takes back a ReplicaSet still there keeps the condition
    until it completes: the wait it started does not fail on it."""
    from datetime import UTC, datetime

    stale = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "lastUpdateTime": "2026-01-01T10:00:00Z"}
    pending = deployment(updatedReplicas=1, replicas=2, availableReplicas=1, desired=1, conditions=[stale])
    later = datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC)
    state = deployment_state(pending, since=later)
    assert not state.failed and "old pods pending termination" in state.message
    assert deployment_state(pending, since=datetime(2026, 1, 1, 9, 59, tzinfo=UTC)).failed
    assert deployment_state(pending).failed


def pod(state: dict, **extra) -> dict:
    return {"status": {"containerStatuses": [{"name": "app", "image": "r/web:v1", "restartCount": 4, "state": state, **extra}]}}


def test_crash_loop_reason_names_restarts_and_exit_code():
    reason, words = stuck_pod_reason(
        pod({"waiting": {"reason": "CrashLoopBackOff"}}, lastState={"terminated": {"exitCode": 3}})
    )
    assert reason == "CrashLoopBackOff" and "4 restarts" in words and "exit code 3" in words


def test_terminated_with_an_error_counts_as_crash_looping():
    reason, words = stuck_pod_reason(pod({"terminated": {"exitCode": 1, "reason": "Error"}}))
    assert reason == "CrashLoopBackOff" and "exit code 1" in words


def test_pull_failure_reason_names_the_image():
    reason, words = stuck_pod_reason(pod({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}))
    assert reason == "ImagePullBackOff" and "r/web:v1" in words


def test_running_or_creating_pods_are_not_stuck():
    assert stuck_pod_reason(pod({"running": {"startedAt": "now"}})) is None
    assert stuck_pod_reason(pod({"waiting": {"reason": "ContainerCreating"}})) is None
    assert stuck_pod_reason(pod({"terminated": {"exitCode": 0, "reason": "Completed"}})) is None


def test_ready_counts_the_new_pods_during_a_rolling_update():
    # 3 old pods available, 1 new one created and not ready yet: 0 of 3 new ready.
    surge = deployment_state(deployment(updatedReplicas=1, replicas=4, availableReplicas=3, readyReplicas=3))
    assert (surge.ready, surge.desired, surge.done) == (0, 3, False)
    # The new pod is ready, an old one not yet gone.
    one = deployment_state(deployment(updatedReplicas=1, replicas=4, availableReplicas=4, readyReplicas=4))
    assert one.ready == 1
    two = deployment_state(deployment(updatedReplicas=2, replicas=3, availableReplicas=3, readyReplicas=3))
    assert two.ready == 2


def test_pods_are_looked_at_a_sixth_of_the_stuck_window_apart_and_when_a_stuck_one_is_due():
    # The default window (30 s): every 5 s, not at every 2 s watch slice.
    assert next_pod_look(100.0, {}, 30, 2) == 105.0
    # A short window never looks more often than the watch slice.
    assert next_pod_look(100.0, {}, 6, 2) == 102.0
    # A pod first seen stuck at 98 is due at 128: looked at then, not at the next 5 s step past it.
    assert next_pod_look(126.0, {"web-1": 98.0, "web-2": 120.0}, 30, 2) == 128.0
    # One that is overdue is looked at straight away (the next slice).
    assert next_pod_look(131.0, {"web-1": 98.0}, 30, 2) == 128.0


def test_a_pod_seen_stuck_that_has_gone_is_no_longer_due(monkeypatch, tmp_path):
    """The rollout wait's look at the pods (the list answered here, no cluster):
    a pod first seen stuck that is gone since (scaled away on a restore,
    evicted) no longer brings the next look forward, or every event would list
    the pods; one still stuck keeps its first sighting."""
    from activities import workloads
    from conveyor.domain.payloads import RolloutInput
    from conveyor.settings import Settings

    crashing = {"metadata": {"name": "web-2"}, **pod({"waiting": {"reason": "CrashLoopBackOff"}})}
    monkeypatch.setattr(workloads, "read_raw", lambda *args, **kwargs: {"items": [crashing]})
    monkeypatch.setattr(workloads.KubeActivities, "api", None)
    kube = workloads.KubeActivities(Settings(home=tmp_path))
    request = RolloutInput(namespace="conveyor-default", name="web", deadline_seconds=600, stuck_seconds=30)
    now = time.monotonic()
    first_seen = {"web-1": now - 100, "web-2": now - 10}
    assert kube._stuck_pod(request, first_seen, 30) is None, "web-2 has been stuck 10 s of 30"
    assert first_seen == {"web-2": now - 10}
    # Next: 5 s on (web-2 is due in 20 s), not at once for the gone web-1.
    assert next_pod_look(now, first_seen, 30, 2) == now + 5
