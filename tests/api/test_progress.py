"""Live progress on the real stack: the rollout step moves as pods become
ready (workflow query and SSE stream), pings keep an idle stream open, and a
stream ends when its deployment is deleted."""

from __future__ import annotations

from kubernetes import client

from conveyor.clients.kubernetes import namespace_for
from conveyor.domain import rollout
from tests.support.waiting import collect_until, eventually, sse_events, stream_closes, stream_lines

# The KWOK pod-ready stage (conveyor/stack/kwok/cluster.yaml) takes a pod's
# ready delay from this annotation.
READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"
READY_JITTER = "pod-ready.stage.kwok.x-k8s.io/jitter"


def slow_down_pods(kube_api, settings, slug: str, seconds: float) -> None:
    """Give the app's pods a ready delay. Set by another field manager, the
    annotation survives Conveyor's server-side applies; the rollout it causes
    is awaited here."""
    apps = client.AppsV1Api(kube_api)
    namespace = namespace_for(settings, "proj_default")
    patch = {"spec": {"template": {"metadata": {"annotations": {READY_DELAY: f"{int(seconds * 1000)}ms", READY_JITTER: f"{int(seconds * 1000) + 500}ms"}}}}}
    apps.patch_namespaced_deployment(slug, namespace, patch, field_manager="conveyor-tests")

    def rolled_out():
        obj = kube_api.sanitize_for_serialization(apps.read_namespaced_deployment(slug, namespace))
        return rollout.deployment_state(obj).done

    eventually(rolled_out, 60 + 4 * seconds, what="the slowed-down pods to roll out")


# Asked for by the stream itself, so the test holds whatever the platform's default is.
PING_SECONDS = 2


def rollout_details(steps: list[dict]) -> list[str]:
    return [s["detail"] for s in steps if s["name"] == "rollout"]


def test_rollout_progress_moves_as_pods_become_ready(api, kube_api, settings):
    app = api.create_app(replicas=3)
    api.wait_active(app["id"], api.deployments(app["id"])[-1]["id"])
    # Each new pod takes longer than a ping interval: a rolling update of 3
    # (one new pod at a time) stays quiet long enough for pings.
    per_pod = PING_SECONDS + 2
    slow_down_pods(kube_api, settings, app["slug"], per_pod)

    api.call("PATCH", f"/apps/{app['id']}", 202, json={"env": {"PROGRESS": "visible"}})
    dep = api.deployments(app["id"])[0]
    sink = stream_lines(api, f"/apps/{app['id']}/deployments/{dep['id']}/progress", params={"ping": PING_SECONDS})

    queried: list[str] = []

    def query_shows_intermediate():
        steps = api.deployment(app["id"], dep["id"])["progress"] or []
        queried.extend(rollout_details(steps))
        return any(d in ("1/3 ready", "2/3 ready") for d in queried)

    eventually(query_shows_intermediate, 6 * per_pod, interval=0.3, what="the progress query to show n/3 ready")
    lines = collect_until(sink, lambda ls: any(line.startswith("event: end") for line in ls) and ls[-1].startswith("data:"), 8 * per_pod)
    events = sse_events(lines)
    assert events[-1] == ("end", {"id": dep["id"], "status": "active", "reason": None})
    streamed = rollout_details([data for kind, data in events if kind == "step"])
    print("streamed rollout details:", streamed, "queried:", sorted(set(queried)))
    assert streamed[0] in ("0/3", "0/3 ready") and streamed[-1] == "3/3 ready"
    assert {"1/3 ready", "2/3 ready"} <= set(streamed), streamed
    pings = [line for line in lines if line.startswith(": ping")]
    assert pings, [(line[:60]) for line in lines if not line.startswith("data")] + [line[:90] for line in lines if "rollout" in line]


def test_progress_stream_ends_when_the_app_is_deleted(api, kube_api, settings):
    app = api.create_app(replicas=1)
    api.wait_active(app["id"], api.deployments(app["id"])[-1]["id"])
    # Never ready: the deployment runs until its progress deadline, and the
    # delete waits its turn in the app's lane behind it.
    api.call(
        "PATCH", f"/apps/{app['id']}", 202, json={"image_url": f"{api.registry}/demo/web:v1-neverready", "progress_deadline_seconds": 20}
    )
    dep = api.deployments(app["id"])[0]
    sink = stream_lines(api, f"/apps/{app['id']}/deployments/{dep['id']}/progress")
    collect_until(sink, lambda ls: any('"name": "rollout"' in line for line in ls), 60)
    api.call("DELETE", f"/apps/{app['id']}", 202)
    lines = collect_until(sink, lambda ls: any(line.startswith("event: end") for line in ls) and ls[-1].startswith("data:"), 120)
    end = sse_events(lines)[-1]
    assert end[0] == "end" and end[1]["status"] in ("deleted", "cancelled", "failed"), end
    # The stream is closed, not left hanging.
    assert stream_closes(sink, 10)
    # Once the app is gone, a new stream is a 404, not a crash.
    eventually(lambda: api.call("GET", f"/apps/{app['id']}").status_code == 404, 60, what="the app to be deleted")
    assert api.call("GET", f"/apps/{app['id']}/deployments/{dep['id']}/progress").status_code == 404


