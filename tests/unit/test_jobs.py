"""An app's Jobs, pure: the Job and its Secret as rendered from a run, the
names (deterministic, within Kubernetes' limits), how a Job's state and its
container's exit are read, what a failure says, the cron fields' rules, the
KWOK markers, and the Temporal Schedule of a cron entry."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import yaml
from pydantic import ValidationError
from temporalio.client import ScheduleOverlapPolicy

from activities.schedules import schedule_of
from conveyor.domain import jobs, manifests, markers
from conveyor.domain.commands import CronEntry, as_argv, check_schedule, check_timezone
from conveyor.domain.jobs import JobKind, JobRunStatus, JobSpec, SyncSchedulesInput
from conveyor.domain.workload import Resources, Workload
from conveyor.settings import Settings

SLUG = "a-rather-long-application-name-that-goes-on-and-on"


def job(**fields) -> JobSpec:
    base = {
        "kind": JobKind.RELEASE,
        "app_id": "app_0123456789ab",
        "project_id": "proj_default",
        "slug": "shop",
        "namespace": "conveyor-default",
        "job_name": jobs.release_job_name("shop", "dep_0123456789ab"),
        "name": "release",
        "image_ref": "registry.test/shop:v2@sha256:" + "a" * 64,
        "argv": ["/bin/sh", "-c", "python manage.py migrate"],
        "env": {"DATABASE_URL": "postgres://u:p@db/shop", "MODE": "prod"},
        "resources": Resources(cpu="100m", memory="128Mi"),
        "deadline_seconds": 600,
        "deployment_id": "dep_0123456789ab",
    }
    return JobSpec(**(base | fields))


def test_a_job_runs_the_release_image_once_with_env_from_its_own_secret():
    secret, manifest = jobs.render(job())
    assert manifest["kind"] == "Job" and manifest["metadata"]["name"] == "shop-release-0123456789ab"
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # A private image is pulled with the project's credentials, as the Deployments' are.
    assert pod["imagePullSecrets"] == [{"name": manifests.PULL_SECRET}]
    [container] = pod["containers"]
    assert container["name"] == jobs.CONTAINER
    assert container["image"] == job().image_ref and container["command"] == ["/bin/sh", "-c", "python manage.py migrate"]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    # The env is in the Job's own Secret, never inline, and never the app's live Secret.
    assert "env" not in container
    assert container["envFrom"] == [{"secretRef": {"name": "shop-release-0123456789ab-env"}}]
    assert secret["metadata"]["name"] == "shop-release-0123456789ab-env" != manifests.env_secret_name("shop")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == job().env
    assert "postgres://" not in yaml.safe_dump(manifest)


def test_a_jobs_pod_is_no_pod_of_the_apps_deployment_or_service():
    _secret, manifest = jobs.render(job())
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert manifests.LABEL_APP not in labels
    assert labels[manifests.LABEL_APP_ID] == "app_0123456789ab" and labels[jobs.LABEL_JOB_KIND] == "release"
    assert manifests.ANNOTATION_DEPLOYMENT not in manifest["spec"]["template"]["metadata"]["annotations"]
    cron = jobs.render(job(kind=JobKind.CRON, name="nightly", job_name="shop-nightly-0123456789"))[1]
    assert cron["metadata"]["labels"][jobs.LABEL_CRON] == "nightly"


def test_the_secret_is_owned_by_the_job_so_it_goes_with_it():
    secret, _manifest = jobs.render(job())
    owned = jobs.owned_by(secret, "uid-1", "shop-release-0123456789ab")
    assert owned["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "shop-release-0123456789ab", "uid": "uid-1", "blockOwnerDeletion": False}
    ]
    assert "ownerReferences" not in secret["metadata"]


def test_job_names_are_deterministic_and_fit_a_label_value():
    release = jobs.release_job_name(SLUG, "dep_0123456789ab")
    assert release == jobs.release_job_name(SLUG, "dep_0123456789ab") and len(release) <= 63
    assert release.endswith("-release-0123456789ab") and "--" not in release
    run = jobs.cron_job_name(SLUG, "a" * 40, "cron-app_1-nightly-2026-01-01T03:00:00Z")
    assert run == jobs.cron_job_name(SLUG, "a" * 40, "cron-app_1-nightly-2026-01-01T03:00:00Z") and len(run) <= 63
    assert run != jobs.cron_job_name(SLUG, "a" * 40, "cron-app_1-nightly-2026-01-02T03:00:00Z")
    assert len(jobs.env_secret_name(run)) <= 253
    assert jobs.schedule_id("app_1", "nightly") == "cron-app_1-nightly"


@pytest.mark.parametrize(
    ("conditions", "state"),
    [
        ([], (JobRunStatus.RUNNING, None)),
        ([{"type": "Complete", "status": "True"}], (JobRunStatus.SUCCEEDED, None)),
        ([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "False"}], (JobRunStatus.SUCCEEDED, None)),
        ([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}],
         (JobRunStatus.FAILED, "DeadlineExceeded: Job was active longer than specified deadline")),
        ([{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}], (JobRunStatus.FAILED, "BackoffLimitExceeded")),
        ([{"type": "Failed", "status": "False"}], (JobRunStatus.RUNNING, None)),
    ],
)
def test_a_jobs_state_is_read_from_its_conditions(conditions, state):
    assert jobs.job_state({"status": {"conditions": conditions}}) == state


def test_the_exit_of_the_jobs_container_and_the_failure_with_its_last_lines():
    pod = {"status": {"containerStatuses": [{"name": jobs.CONTAINER, "state": {"terminated": {"exitCode": 3, "message": "boom"}}}]}}
    assert jobs.container_exit(pod) == (3, "boom")
    assert jobs.container_exit({"status": {}}) == (None, None)
    output = "\n".join(f"line {i}" for i in range(10))
    reason = jobs.failure_reason("the release command", 3, "boom", output)
    assert reason.startswith("the release command failed (exit code 3: boom); its last lines:\n")
    assert reason.endswith("line 5\nline 6\nline 7\nline 8\nline 9") and "line 4" not in reason
    assert jobs.failure_reason("the release command", None, "DeadlineExceeded", "") == "the release command failed (DeadlineExceeded); it wrote no output"


def test_the_output_kept_is_the_end_of_the_log_in_whole_lines():
    log = "\n".join(f"{i:06d}" for i in range(5000))
    kept = jobs.tail(log)
    assert kept.splitlines()[-1] == "004999" and len(kept.splitlines()) == jobs.OUTPUT_LINES
    big = "\n".join("x" * 1000 for _ in range(200))
    assert len(jobs.tail(big).encode()) <= jobs.OUTPUT_BYTES and jobs.tail(big).startswith("x")


def test_a_command_string_runs_through_the_shell():
    assert as_argv("python manage.py migrate && echo done") == ["/bin/sh", "-c", "python manage.py migrate && echo done"]
    assert as_argv(["python", "manage.py", "migrate"]) == ["python", "manage.py", "migrate"]


@pytest.mark.parametrize("good", ["0 3 * * *", "*/5 * * * *", "0 9-17/2 * * 1-5", "15 4 1,15 jan-jun mon", "@daily", "@HOURLY", "0 0 * * 7"])
def test_cron_expressions_temporal_takes(good):
    assert check_schedule(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("0 3 * *", "five fields"),
        ("0 3 * * * *", "five fields"),
        ("60 * * * *", "minute field must be within 0-59"),
        ("0 24 * * *", "hour field"),
        ("0 0 0 * *", "day of month field"),
        ("0 0 * 13 *", "month field"),
        ("0 0 * * 8", "day of week field"),
        ("*/0 * * * *", "step of 0"),
        ("5-1 * * * *", "ends before it starts"),
        ("0 0 * * funday", "day of week field must hold numbers"),
        ("@reboot", "five fields"),
        ("x" * 201, "at most 200"),
    ],
)
def test_bad_cron_expressions_say_what_is_wrong_without_repeating_them(bad, says):
    with pytest.raises(ValueError) as caught:
        check_schedule(bad)
    assert says in str(caught.value) and bad not in str(caught.value)


def test_time_zones_are_iana_names():
    assert check_timezone("Europe/Berlin") == "Europe/Berlin" and check_timezone("UTC") == "UTC"
    for bad in ("Mars/Olympus", "../etc/passwd", "", "Europe/Berlin/"):
        with pytest.raises(ValueError, match="IANA time zone"):
            check_timezone(bad)


def test_cron_entries_have_defaults_unique_names_and_no_empty_list_is_stored():
    entry = CronEntry(name="nightly", schedule="0 3 * * *", command="./nightly")
    assert (entry.timezone, entry.deadline_seconds, entry.argv) == ("UTC", 3600, ["/bin/sh", "-c", "./nightly"])
    with pytest.raises(ValidationError) as caught:
        Workload.model_validate({"cron": [entry.model_dump(), entry.model_dump()]})
    assert "unique" in str(caught.value)
    assert Workload.model_validate({"cron": []}).stored() is None
    assert Workload.model_validate({"release_command": "migrate"}).stored() == {"release_command": "migrate"}


def test_the_job_markers_are_words_of_the_command():
    assert markers.job_marker_of(["/bin/sh", "-c", "migrate kwok-job-fail"]) is markers.JOB_FAIL
    assert markers.job_marker_of(["migrate", "kwok-job-slow"]) is markers.JOB_SLOW
    assert markers.job_marker_of(["migrate", "not-kwok-job-fail-really"]) is None
    assert markers.job_marker_of(["migrate"]) is None


def test_the_schedule_of_a_cron_entry_skips_overlaps_and_bounds_its_runs():
    entry = CronEntry(name="nightly", schedule="0 3 * * *", command=["python", "nightly.py"], timezone="Europe/Berlin", deadline_seconds=900)
    request = SyncSchedulesInput(app_id="app_1", project_id="proj_default", app_name="shop", deployment_id="dep_1", entries=[entry])
    schedule = schedule_of(Settings(), request, entry)
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP and schedule.policy.catchup_window == timedelta(minutes=15)
    assert schedule.spec.cron_expressions == ["0 3 * * *"] and schedule.spec.time_zone_name == "Europe/Berlin"
    action = schedule.action
    assert action.workflow == "CronRunWorkflow" and action.id == "cron-app_1-nightly"
    assert action.execution_timeout == timedelta(seconds=900) + timedelta(minutes=10)
    assert [arg.name for arg in action.args] == ["nightly"]
    assert {pair.key.name: pair.value for pair in action.typed_search_attributes} == {"AppId": "app_1", "ProjectId": "proj_default", "Operation": "cron"}
    # Stored in the clear by Temporal: names the entry, never its command (which may carry a secret).
    assert schedule.state.note == "shop cron nightly at '0 3 * * *' (release dep_1)"
    assert "nightly.py" not in schedule.state.note and "nightly.py" not in (action.static_summary or "")
