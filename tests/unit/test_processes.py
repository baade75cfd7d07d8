"""Processes besides web: how a release renders them (one Deployment each,
only web served), how a Procfile fills them in, and how a PATCH of them is
planned (conveyor/domain/manifests.py, workload.py, planning.py)."""

from __future__ import annotations

from conveyor.domain import manifests
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.planning import AppFacts, keeping_counts, plan_update
from conveyor.domain.workload import Autoscaling, Demand, Probe, Process, ProjectLimits, Resources, Workload, over_quota, with_procfile

WORKER = Process(command=["python", "worker.py"], replicas=3, resources=Resources(cpu="100m"))
CLOCK = Process(command="python clock.py", autoscaling=Autoscaling(min_replicas=1, max_replicas=4), resources=Resources(cpu="50m"))


def spec(**fields) -> ReleaseSpec:
    base = dict(
        app_id="app_1", project_id="proj_a", deployment_id="dep_1", name="shop", slug="shop",
        namespace="conveyor-a", image_ref="r/shop@sha256:" + "a" * 64, port=8080, replicas=2,
    )
    return ReleaseSpec(**(base | fields))


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_each_process_is_a_deployment_and_only_web_is_served():
    objects = manifests.render(spec(processes={"worker": WORKER, "clock": CLOCK}), b"k")
    deployments = by_kind(objects, "Deployment")
    assert sorted(deployments) == ["shop", "shop-clock", "shop-worker"]
    web, worker, clock = deployments["shop"], deployments["shop-worker"], deployments["shop-clock"]
    # Web keeps the selector it always had; each process selects only its own pods.
    assert web["spec"]["selector"]["matchLabels"] == {manifests.LABEL_APP: "shop"}
    assert worker["spec"]["selector"]["matchLabels"] == {manifests.LABEL_APP: "shop-worker"}
    assert worker["spec"]["template"]["metadata"]["labels"][manifests.LABEL_PROCESS] == "worker"
    assert worker["spec"]["template"]["metadata"]["labels"][manifests.LABEL_APP_ID] == "app_1"
    [service] = by_kind(objects, "Service").values()
    assert service["spec"]["selector"] == {manifests.LABEL_APP: "shop"}
    assert by_kind(objects, "Ingress")["shop"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "shop"
    # A worker runs its command, has no port and no readiness check of a port; web has both.
    web_c, worker_c, clock_c = (d["spec"]["template"]["spec"]["containers"][0] for d in (web, worker, clock))
    assert "command" not in web_c and web_c["ports"][0]["containerPort"] == 8080 and "tcpSocket" in web_c["readinessProbe"]
    assert worker_c["command"] == ["python", "worker.py"] and "ports" not in worker_c and "readinessProbe" not in worker_c
    assert clock_c["command"] == ["/bin/sh", "-c", "python clock.py"]
    assert worker["spec"]["replicas"] == 3 and worker_c["resources"] == {"requests": {"cpu": "100m"}}
    # The same image and env for all.
    assert {c["image"] for c in (web_c, worker_c, clock_c)} == {spec().image_ref}
    assert worker_c["envFrom"] == web_c["envFrom"]
    # An autoscaler for the process that asks for one, aimed at its Deployment.
    scalers = by_kind(objects, "HorizontalPodAutoscaler")
    assert list(scalers) == ["shop-clock"] and scalers["shop-clock"]["spec"]["scaleTargetRef"]["name"] == "shop-clock"


def test_a_process_check_uses_its_own_port():
    checked = Process(command=["w"], healthcheck=Probe(type="http", path="/ready", port=9000), liveness=Probe(type="exec", command=["true"]))
    [worker] = [o for o in manifests.render(spec(processes={"worker": checked}), b"k") if o["metadata"]["name"] == "shop-worker"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert container["livenessProbe"]["exec"] == {"command": ["true"]}


def test_drift_is_read_per_process():
    release = spec(processes={"worker": WORKER})
    [live] = [o for o in manifests.render(release, b"k") if o["metadata"]["name"] == "shop-worker"]
    assert manifests.drift(release, live, "worker") == []
    live["spec"]["replicas"] = 9
    live["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh"]
    assert manifests.drift(release, live, "worker") == ["replicas", "command"]


def test_a_procfile_fills_in_processes():
    declared = {"worker": Process(replicas=4), "extra": Process(command=["e"])}
    merged = with_procfile(declared, {"worker": "python w.py", "clock": "python c.py"})
    assert merged is not None
    assert merged["worker"].command == "python w.py" and merged["worker"].replicas == 4
    assert merged["clock"].command == "python c.py" and merged["clock"].replicas == 1
    assert merged["extra"].command == ["e"]
    # A declared command wins over the Procfile's line.
    assert with_procfile({"worker": WORKER}, {"worker": "other"})["worker"].command == ["python", "worker.py"]  # type: ignore[index]
    assert with_procfile(None, None) is None


FACTS = AppFacts(image_url="r/shop:1", port=8080, replicas=2, env={}, runs_pinned_image=True, workload=Workload(processes={"worker": WORKER}))


def test_a_count_alone_is_a_scale_and_a_definition_a_release():
    scale = plan_update(FACTS, {"processes": {"worker": {"replicas": 5}}})
    assert scale.release_from is None and scale.process_scales == (("worker", 3, 5),) and scale.recorded == ()
    release = plan_update(FACTS, {"processes": {"worker": {"command": ["python", "w2.py"]}}})
    assert release.release_from is not None and "processes" in release.release_summary
    assert Workload.of(release.changes["workload"]).processes["worker"].replicas == 3  # type: ignore[index]
    removed = plan_update(FACTS, {"processes": {"worker": None}})
    assert removed.release_from is not None and Workload.of(removed.changes["workload"]).processes is None
    same = plan_update(FACTS, {"processes": {"worker": {"replicas": 3}}})
    assert same.release_from is None and same.process_scales == () and "workload" not in same.changes


def test_a_count_for_a_procfile_process_is_a_scale():
    """An app whose worker comes from its Procfile: a count for it is recorded and scaled, not released."""
    facts = AppFacts(image_url=None, port=8080, replicas=1, env={}, runs_pinned_image=True, workload=Workload())
    plan = plan_update(facts, {"processes": {"worker": {"replicas": 3}}})
    assert plan.release_from is None and plan.process_scales == (("worker", 1, 3),)
    assert Workload.of(plan.changes["workload"]).processes["worker"].replicas == 3  # type: ignore[index]


def test_a_revert_keeps_todays_counts():
    restored = keeping_counts(Workload(processes={"worker": WORKER, "old": Process(command=["o"], replicas=2)}), Workload(processes={"worker": Process(command=["x"], replicas=7)}))
    assert restored.processes is not None
    assert restored.processes["worker"].replicas == 7 and restored.processes["worker"].command == ["python", "worker.py"]
    assert restored.processes["old"].replicas == 2


def test_every_process_counts_against_a_quota_and_a_refusal_names_the_one_that_grew():
    limits = ProjectLimits(quota_pods=10)
    before = Workload(processes={"worker": WORKER}).demands(2)
    grown = Workload(processes={"worker": WORKER.model_copy(update={"replicas": 6})}).demands(2)
    # web 2 (+1) and worker 6 (+2) = 11 pods.
    field, message = over_quota(limits, grown, [], before)  # type: ignore[misc]
    assert field == "processes.worker.replicas" and "11 pods" in message
    assert over_quota(limits, before, [Demand(replicas=2)]) is None
