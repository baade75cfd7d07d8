"""What a PATCH means, decided without a database or a cluster."""

from conveyor.domain.planning import AppFacts, ImageSource, merge_env, plan_update
from conveyor.domain.workload import Probe, Resources, Workload

APP = AppFacts(image_url="r/x:latest", port=8080, replicas=2, env={"A": "1", "B": "2"}, runs_pinned_image=True)


def test_env_is_merged_and_null_removes_a_key():
    assert merge_env({"A": "1", "B": "2"}, {"B": None, "C": "3"}) == {"A": "1", "C": "3"}


def test_a_config_change_releases_the_running_image():
    plan = plan_update(APP, {"env": {"A": "9"}})
    assert plan.release_from is ImageSource.RUNNING
    assert plan.release_summary == "Changed env (A)"
    assert plan.changes["env"] == {"A": "9", "B": "2"} and plan.scale is None


def test_a_port_change_is_a_release_of_the_running_image_too():
    assert plan_update(APP, {"port": 9090}).release_from is ImageSource.RUNNING


def test_a_new_image_resolves_the_source_again():
    plan = plan_update(APP, {"image_url": "r/x:v2"})
    assert plan.release_from is ImageSource.SOURCE and plan.changes["image_url"] == "r/x:v2"


def test_with_nothing_running_a_config_change_deploys_the_source():
    idle = AppFacts(image_url="r/x:v1", port=80, replicas=1, env={}, runs_pinned_image=False)
    assert plan_update(idle, {"env": {"A": "1"}}).release_from is ImageSource.SOURCE


def test_replicas_alone_is_a_scale_and_no_release():
    plan = plan_update(APP, {"replicas": 5})
    assert plan.release_from is None and plan.scale == (2, 5) and plan.recorded == ()


def test_the_same_values_change_nothing():
    plan = plan_update(APP, {"env": {"A": "1"}, "port": 8080, "replicas": 2})
    assert plan.release_from is None and plan.scale is None


def test_settings_without_a_rollout_are_recorded():
    plan = plan_update(APP, {"progress_deadline_seconds": 120})
    assert plan.release_from is None and plan.recorded == ("progress_deadline_seconds",)
    assert plan.changes["progress_deadline_seconds"] == 120


def test_a_health_check_or_resources_change_is_a_release_of_the_running_image():
    plan = plan_update(APP, {"healthcheck": {"type": "http", "path": "/healthz"}, "resources": {"cpu": "250m"}})
    assert plan.release_from is ImageSource.RUNNING
    assert plan.release_summary == "Changed healthcheck, resources"
    assert plan.changes["workload"]["healthcheck"]["path"] == "/healthz"
    assert plan.changes["workload"]["resources"] == {"cpu": "250m"}


def test_a_null_removes_a_health_check_and_the_same_one_changes_nothing():
    checked = AppFacts(
        image_url="r/x:v1", port=80, replicas=1, env={}, runs_pinned_image=True,
        workload=Workload(liveness=Probe(type="tcp"), resources=Resources(cpu="1")),
    )
    removed = plan_update(checked, {"liveness": None})
    assert removed.release_from is ImageSource.RUNNING and removed.changes["workload"] == {"resources": {"cpu": "1"}}
    same = plan_update(checked, {"liveness": {"type": "tcp"}, "resources": {"cpu": "1"}})
    assert same.release_from is None and "workload" not in same.changes
