"""The local Kubernetes cluster behaves like one: scheduling, rollouts,
failure reasons, pod logs and resource metrics, all through the real API."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from conveyor.domain import markers
from conveyor.stack import cluster
from conveyor.stack.platform import Platform
from tests.support.waiting import eventually

IMAGE = "127.0.0.1:5000/demo/web:v1"


def deployment(name: str, image: str, replicas: int, spread: bool = False) -> client.V1Deployment:
    labels = {"app": name}
    spec = client.V1PodSpec(containers=[client.V1Container(name="web", image=image)])
    if spread:
        spec.topology_spread_constraints = [
            client.V1TopologySpreadConstraint(
                max_skew=1,
                topology_key="kubernetes.io/hostname",
                when_unsatisfiable="DoNotSchedule",
                label_selector=client.V1LabelSelector(match_labels=labels),
            )
        ]
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=spec),
            progress_deadline_seconds=600,
        ),
    )


def available(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    dep = apps.read_namespaced_deployment(name, namespace)
    conditions = {c.type: c.status for c in (dep.status.conditions or [])}
    return conditions.get("Available") == "True" and (dep.status.available_replicas or 0) == dep.spec.replicas


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"app={app}").items


def test_nodes_are_registered_with_capacity(kube_api, settings):
    nodes = client.CoreV1Api(kube_api).list_node().items
    assert len(nodes) >= settings.nodes
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True"
        assert node.status.allocatable["cpu"] == settings.node_cpu
        assert node.status.allocatable["memory"] == settings.node_memory
        # Kubernetes writes quantities its own way ("1000" comes back as "1k").
        assert parse_quantity(node.status.allocatable["pods"]) == parse_quantity(settings.node_pods)


def test_three_replicas_become_available_spread_over_nodes(kube_api, namespace):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("web", IMAGE, 3, spread=True))

    eventually(lambda: available(apps, namespace, "web"), 60, what="Deployment web Available")

    pods = pods_of(core, namespace, "web")
    assert len(pods) == 3
    assert all(p.status.phase == "Running" for p in pods)
    assert all(all(cs.ready for cs in p.status.container_statuses) for p in pods)
    assert len({p.spec.node_name for p in pods}) == 3, "pods should land on three different KWOK nodes"


@pytest.mark.parametrize("marker", markers.ALL, ids=lambda m: m.suffix.lstrip("-"))
def test_failure_marker_gives_its_reason_and_never_becomes_available(kube_api, namespace, marker):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    # A tag@digest reference, as Conveyor deploys them: the marker must survive.
    image = f"127.0.0.1:5000/demo/web:v1{marker.suffix}@sha256:{'ab' * 32}"
    apps.create_namespaced_deployment(namespace, deployment("bad", image, 1))

    def container_status():
        pods = pods_of(core, namespace, "bad")
        if not pods or not pods[0].status.container_statuses:
            return None
        status = pods[0].status.container_statuses[0]
        if marker.reason is None:
            return status if status.state.running and not status.ready else None
        waiting = status.state.waiting
        return status if waiting and waiting.reason == marker.reason else None

    first = eventually(container_status, 30, interval=0.25, what=f"{marker.reason or 'running, not ready'}")
    assert not first.ready
    if marker is markers.CRASHLOOP:
        # The restart count keeps rising, as with a real crash loop.
        later = eventually(
            lambda: (s := container_status()) and s.restart_count > first.restart_count and s,
            30,
            interval=0.25,
            what="a rising restart count",
        )
        assert later.last_state.terminated.exit_code == 1
    # Long after a healthy pod would be ready, the Deployment is still not available.
    time.sleep(5)
    assert not available(apps, namespace, "bad")
    assert (apps.read_namespaced_deployment("bad", namespace).status.ready_replicas or 0) == 0


def test_marker_regex_matches_the_tag_only():
    assert markers.marker_of("127.0.0.1:5000/demo/web:v1-crashloop") is markers.CRASHLOOP
    assert markers.marker_of(f"127.0.0.1:5000/demo/web:v1-pullfail@sha256:{'0' * 64}") is markers.PULLFAIL
    assert markers.marker_of("demo/web:neverready") is None
    assert markers.marker_of("registry:5000/app-crashloop/web:v1") is None
    assert markers.marker_of("127.0.0.1:5000/demo/web-neverready") is None
    assert markers.marker_of("web:v1-neverready") is markers.NEVERREADY


def test_pod_logs_come_back_through_the_api(kube_api, namespace):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("logs", IMAGE, 1))
    eventually(lambda: available(apps, namespace, "logs"), 60, what="Deployment logs Available")
    pod = pods_of(core, namespace, "logs")[0]

    # Other tests append lines to the simulated log: the sample comes first.
    text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="web")
    assert text.splitlines()[: len(cluster.SAMPLE_LOG_LINES)] == cluster.SAMPLE_LOG_LINES
    tail = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="web", tail_lines=1)
    assert tail.splitlines() == text.splitlines()[-1:]
    previous = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="web", previous=True)
    assert previous.splitlines() == cluster.PREVIOUS_LOG_LINES


def test_resource_metrics_are_served_by_metrics_server(kube_api, namespace, settings):
    if not settings.metrics_server:
        pytest.fail("metrics-server is disabled (CONVEYOR_METRICS_SERVER=false); this test needs it")
    apps = client.AppsV1Api(kube_api)
    objects = client.CustomObjectsApi(kube_api)
    dep = deployment("metrics", IMAGE, 2)
    dep.spec.template.metadata.annotations = {"kwok.x-k8s.io/usage-cpu": "250m", "kwok.x-k8s.io/usage-memory": "64Mi"}
    apps.create_namespaced_deployment(namespace, dep)
    eventually(lambda: available(apps, namespace, "metrics"), 60, what="Deployment metrics Available")

    def pod_metrics():
        items = objects.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", namespace, "pods")["items"]
        return items if len(items) == 2 else None

    items = eventually(pod_metrics, 90, interval=2, what="PodMetrics for both pods")
    for item in items:
        usage = item["containers"][0]["usage"]
        assert parse_quantity(usage["memory"]) == 64 * 1024 * 1024
        cores = parse_quantity(usage["cpu"])
        assert 0.2 <= cores <= 0.3, f"cpu usage {usage['cpu']} should be about 250m"


def test_up_starts_the_cluster_again_when_metrics_server_has_exited(platform, settings):
    # metrics-server exits for good when it starts before the kube-apiserver
    # answers, and kwokctl restarts components only with the whole cluster.
    pid = cluster.running_components(settings)["metrics-server"]
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: "metrics-server" not in cluster.running_components(settings), 10, what="metrics-server to exit")
    said: list[str] = []
    Platform(settings, said.append).up()
    assert any("metrics-server exited" in line for line in said), said
    again = cluster.running_components(settings)["metrics-server"]
    assert again != pid
    assert cluster.metrics_healthy(settings)


def test_up_starts_the_cluster_again_when_etcd_was_killed(platform, settings):
    # The kube-apiserver outlives its etcd and keeps its port, so the cluster
    # does not answer and cannot be started as it is: `up` stops what is left
    # of it first.
    before = cluster.running_components(settings)
    os.kill(before["etcd"], signal.SIGKILL)
    eventually(lambda: "etcd" not in cluster.running_components(settings), 10, what="etcd to exit")
    eventually(lambda: not quietly_healthy(settings), 60, what="the kube-apiserver to miss its etcd")
    said: list[str] = []
    Platform(settings, said.append).up()
    assert any("etcd exited" in line for line in said), said
    after = cluster.running_components(settings)
    assert after["etcd"] != before["etcd"] and after["kube-apiserver"] != before["kube-apiserver"]
    assert cluster.healthy(settings) and cluster.nodes_ready(settings)


def quietly_healthy(settings) -> bool:
    try:
        return cluster.healthy(settings)
    except Exception:  # noqa: BLE001 - not answering is not healthy
        return False
