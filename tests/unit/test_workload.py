"""Health checks, resources and project limits (conveyor/domain/workload.py)
and how a release renders them (conveyor/domain/manifests.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from conveyor.domain import manifests
from conveyor.domain.payloads import ReleaseSpec
from conveyor.domain.workload import Autoscaling, Demand, Probe, ProjectLimits, Resources, Workload, over_quota, parse_quantity


def spec(**fields) -> ReleaseSpec:
    base = dict(
        app_id="app_1", project_id="proj_a", deployment_id="dep_1", name="web", slug="web",
        namespace="conveyor-a", image_ref="r/web@sha256:" + "a" * 64, port=8080, replicas=2,
    )
    return ReleaseSpec(**(base | fields))


def container(objects: list[dict]) -> dict:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", Decimal("0.25")), ("1", Decimal(1)), ("1.5", Decimal("1.5")), ("512Mi", Decimal(512 * 2**20)), ("2Gi", Decimal(2 * 2**30)), ("1k", Decimal(1000)), ("1e3", Decimal(1000)), (".5", Decimal("0.5"))],
)
def test_quantities_parse_as_kubernetes_reads_them(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1x", "Mi", "1.2.3", "1 Gi", "1e99", "١", "1" * 65, "1Mi\n"])
def test_what_is_not_a_quantity_is_refused(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_without_a_healthcheck_readiness_is_the_tcp_check_on_the_port_and_nothing_else():
    rendered = container(manifests.render(spec(), b"k"))
    assert rendered["readinessProbe"] == {"tcpSocket": {"port": 8080}, "periodSeconds": 5}
    assert "livenessProbe" not in rendered and "startupProbe" not in rendered
    assert rendered["resources"] == {}


def test_each_probe_renders_with_its_type_and_timings():
    release = spec(
        healthcheck=Probe(type="http", path="/healthz", period_seconds=3, failure_threshold=2),
        liveness=Probe(type="tcp", port=9000, initial_delay_seconds=10),
        startup=Probe(type="exec", command=["/bin/check", "--ready"], timeout_seconds=5),
    )
    rendered = container(manifests.render(release, b"k"))
    assert rendered["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 0, "periodSeconds": 3, "timeoutSeconds": 1, "failureThreshold": 2}
    assert rendered["livenessProbe"]["tcpSocket"] == {"port": 9000}
    assert rendered["livenessProbe"]["initialDelaySeconds"] == 10
    assert rendered["startupProbe"]["exec"] == {"command": ["/bin/check", "--ready"]}
    assert rendered["startupProbe"]["timeoutSeconds"] == 5


@pytest.mark.parametrize(
    "given",
    [
        {"type": "exec"},
        {"type": "http", "command": ["x"]},
        {"type": "tcp", "path": "/x"},
        {"type": "exec", "command": ["x"], "port": 80},
        {"type": "http", "path": "no-slash"},
        {"type": "http", "path": "/a\nb"},
        {"type": "grpc"},
        {"type": "http", "port": 0},
        {"type": "http", "period_seconds": 0},
        {"type": "exec", "command": []},
        {"type": "exec", "command": ["a\0b"]},
        {"type": "http", "surprise": 1},
    ],
)
def test_a_probe_of_the_wrong_shape_is_refused(given):
    with pytest.raises(ValidationError):
        Probe.model_validate(given)


def test_resources_render_as_requests_and_limits():
    release = spec(resources=Resources(cpu="250m", memory="256Mi", cpu_limit="1", memory_limit="512Mi"))
    assert container(manifests.render(release, b"k"))["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert Resources(memory_limit="1Gi").render() == {"limits": {"memory": "1Gi"}}


def test_a_limit_below_its_request_is_refused():
    with pytest.raises(ValidationError, match="cpu_limit"):
        Resources(cpu="2", cpu_limit="500m")
    with pytest.raises(ValidationError, match="memory_limit"):
        Resources(memory="1Gi", memory_limit="512Mi")


def test_the_workload_is_stored_as_what_is_set_and_read_back_whole():
    workload = Workload(healthcheck=Probe(type="http", path="/up"), resources=Resources(cpu="100m"))
    stored = workload.stored()
    assert set(stored) == {"healthcheck", "resources"}
    assert Workload.of(stored) == workload
    assert Workload().stored() is None and Workload.of(None) == Workload()


def test_project_limits_render_a_limit_range_and_a_quota_in_the_namespace():
    limits = ProjectLimits(default_cpu="100m", default_memory="128Mi", default_memory_limit="256Mi", quota_pods=20, quota_cpu="4", quota_memory="8Gi")
    objects = manifests.render(spec(limits=limits), b"k")
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["Namespace", "LimitRange", "ResourceQuota"]
    limit_range, quota = objects[1], objects[2]
    assert limit_range["metadata"]["namespace"] == quota["metadata"]["namespace"] == "conveyor-a"
    assert limit_range["spec"]["limits"] == [{"type": "Container", "defaultRequest": {"cpu": "100m", "memory": "128Mi"}, "default": {"memory": "256Mi"}}]
    assert quota["spec"]["hard"] == {"pods": "20", "requests.cpu": "4", "requests.memory": "8Gi"}
    # Nothing set: neither object.
    assert [o["kind"] for o in manifests.render(spec(limits=ProjectLimits()), b"k")][:2] == ["Namespace", "Secret"]


def test_a_cpu_or_memory_quota_needs_a_default_request():
    with pytest.raises(ValidationError, match="default_cpu"):
        ProjectLimits(quota_cpu="4")
    with pytest.raises(ValidationError, match="default_memory"):
        ProjectLimits(quota_memory="4Gi")


def test_a_project_overrides_the_settings_limits_field_by_field():
    everyone = ProjectLimits(default_cpu="100m", quota_pods=100, max_replicas_per_app=50)
    own = everyone.over({"quota_pods": 10, "quota_cpu": None})
    assert (own.default_cpu, own.quota_pods, own.max_replicas_per_app) == ("100m", 10, 50)


def test_the_quota_check_names_the_limit_it_breaks_and_counts_the_rollout_surge():
    limits = ProjectLimits(default_cpu="100m", default_memory="64Mi", quota_pods=10, quota_cpu="1", quota_memory="1Gi", max_replicas_per_app=20)
    assert over_quota(limits, Demand(replicas=1_000_000), [])[0] == "replicas"
    # 8 replicas + 2 surge = 10 pods: fits; 9 + 3 = 12 does not.
    assert over_quota(limits, Demand(replicas=8), []) is None
    field, message = over_quota(limits, Demand(replicas=9), [])
    assert field == "replicas" and "quota of 10" in message
    # Others count too.
    assert over_quota(limits, Demand(replicas=4), [Demand(replicas=5)]) is None
    assert over_quota(limits, Demand(replicas=5), [Demand(replicas=5)])[0] == "replicas"
    # CPU: 4 pods (3 + 1 surge) at 300m = 1.2 > 1.
    field, message = over_quota(limits, Demand(replicas=3, resources=Resources(cpu="300m")), [])
    assert field == "resources.cpu" and "1.2 CPU" in message and "300m" not in message
    # No request: the default request counts (4 × 100m fits); a limit alone counts as the request.
    assert over_quota(limits, Demand(replicas=3), []) is None
    assert over_quota(limits, Demand(replicas=3, resources=Resources(memory_limit="512Mi")), [])[0] == "resources.memory"


def test_autoscaling_renders_a_horizontal_pod_autoscaler_for_the_deployment():
    release = spec(autoscaling=Autoscaling(min_replicas=2, max_replicas=10, target_cpu_percent=70, scale_down_delay_seconds=30))
    objects = manifests.render(release, b"k")
    [scaler] = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert scaler["apiVersion"] == "autoscaling/v2" and scaler["metadata"]["name"] == "web"
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert (scaler["spec"]["minReplicas"], scaler["spec"]["maxReplicas"]) == (2, 10)
    assert scaler["spec"]["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert scaler["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert [o["kind"] for o in manifests.render(spec(), b"k")].count("HorizontalPodAutoscaler") == 0


def test_autoscaling_bounds_and_its_starting_count():
    with pytest.raises(ValidationError, match="max_replicas"):
        Autoscaling(min_replicas=5, max_replicas=2)
    scaling = Autoscaling(min_replicas=2, max_replicas=10)
    assert (scaling.starting(1), scaling.starting(4), scaling.starting(50)) == (2, 4, 10)


def test_with_autoscaling_the_quota_counts_the_most_pods_it_may_make():
    limits = ProjectLimits(quota_pods=10)
    scaled = Workload(autoscaling=Autoscaling(min_replicas=1, max_replicas=9))
    field, message = over_quota(limits, scaled.demand(1), [])
    assert field == "autoscaling.max_replicas" and "quota of 10" in message
    assert over_quota(limits, Workload(autoscaling=Autoscaling(min_replicas=1, max_replicas=8)).demand(1), []) is None


def live_copy(release: ReleaseSpec) -> dict:
    """The Deployment as the API server gives it back: defaults filled in,
    quantities canonical."""
    import copy

    [deployment] = [o for o in manifests.render(release, b"key") if o["kind"] == "Deployment"]
    live = copy.deepcopy(deployment)
    c = live["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in c:
            c[probe].setdefault("successThreshold", 1)
            c[probe].setdefault("timeoutSeconds", 1)
            if "httpGet" in c[probe]:
                c[probe]["httpGet"]["scheme"] = "HTTP"
    c["terminationMessagePath"] = "/dev/termination-log"
    c["resources"] = {"requests": {"cpu": "500m"}} if release.resources else {}
    return live


def test_drift_names_what_was_changed_by_hand_and_ignores_server_defaults():
    release = spec(healthcheck=Probe(type="http", path="/up"), resources=Resources(cpu="0.5"))
    live = live_copy(release)
    assert manifests.drift(release, live) == []
    live["spec"]["replicas"] = 7  # kubectl scale
    c = live["spec"]["template"]["spec"]["containers"][0]
    c["image"] = "other/web:hand-made"  # kubectl set image
    c["env"] = [{"name": "DEBUG", "value": "1"}]  # kubectl set env
    c["readinessProbe"]["httpGet"]["path"] = "/elsewhere"  # kubectl edit
    c["resources"] = {"requests": {"cpu": "2"}}
    assert manifests.drift(release, live) == ["replicas", "image", "env", "readinessProbe", "resources"]


def test_with_autoscaling_the_replica_count_is_not_drift():
    release = spec(autoscaling=Autoscaling(min_replicas=1, max_replicas=5))
    live = live_copy(release)
    live["spec"]["replicas"] = 4
    assert manifests.drift(release, live) == []
    live["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    assert manifests.drift(release, live) == ["livenessProbe"]


def test_a_change_that_asks_no_more_passes_even_over_a_quota_lowered_since():
    limits = ProjectLimits(default_cpu="100m", default_memory="64Mi", quota_pods=10, quota_cpu="1", quota_memory="1Gi")
    # 16 pods run where the quota now says 10: shrinking is let through, growing is not.
    assert over_quota(limits, Demand(replicas=4), [Demand(replicas=8)], before=Demand(replicas=8)) is None
    assert over_quota(limits, Demand(replicas=9), [Demand(replicas=8)], before=Demand(replicas=8))[0] == "replicas"
    # Fewer pods but more CPU in all is more.
    grown = over_quota(limits, Demand(replicas=2, resources=Resources(cpu="900m")), [], before=Demand(replicas=3))
    assert grown is not None and grown[0] == "resources.cpu"


def test_a_request_above_the_projects_default_limit_needs_a_limit_of_its_own():
    from conveyor.domain.workload import above_default_limits

    limits = ProjectLimits(default_cpu_limit="500m", default_memory_limit="512Mi")
    assert above_default_limits(limits, Resources(cpu="2"))[0] == "resources.cpu"
    assert above_default_limits(limits, Resources(memory="1Gi"))[0] == "resources.memory"
    assert above_default_limits(limits, Resources(cpu="2", cpu_limit="2")) is None
    assert above_default_limits(limits, Resources(cpu="250m")) is None


@pytest.mark.parametrize(("field", "value"), [("memory", "256m"), ("memory_limit", "1.5"), ("cpu", "0.1m"), ("cpu_limit", "1e-4")])
def test_memory_is_whole_bytes_and_cpu_whole_millicores(field, value):
    with pytest.raises(ValidationError, match=field):
        Resources(**{field: value})
    assert Resources(memory="1.5Gi", cpu="0.5").memory == "1.5Gi"
