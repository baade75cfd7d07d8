"""What a release does with each kind of failure (conveyor/domain/errors.py),
on a Temporal dev server with faked activities: a transient one is retried
until it passes, a permanent one fails the deployment at once and puts the
previous release back, and a deployment that has ended changes nothing."""

from __future__ import annotations

from conveyor.domain import errors
from tests.support.workflow_runs import PREVIOUS, deployment, finished, new_app, outcome, running_worker, start_deploy, step
from tests.workflows.fakes import Fail, Fakes
from workflows.deploy import DeployWorkflow

KEPT = f"the previous deployment {PREVIOUS} keeps serving"

RBAC_REFUSAL = (
    'applying Deployment web: missing RBAC permission: patch deployments (API group "apps") in namespace proj-wf '
    'for User "system:serviceaccount:conveyor:conveyor-worker"'
)


async def test_a_missing_rbac_grant_is_retried_until_it_is_granted(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("apply_manifests", Fail(errors.KubernetesForbidden(RBAC_REFUSAL)), Fail(errors.KubernetesForbidden(RBAC_REFUSAL)))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "active"

    assert [c.outcome for c in fakes.named("apply_manifests")] == ["failed", "failed", "returned"]
    assert finished(fakes, handle.id) == [("active", None)]


async def test_a_permanent_failure_is_tried_once_and_fails_the_deployment(client, task_queue):
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    fakes.script("resolve_image_digest", Fail(errors.RegistryRefused("image registry.test/web:2 was not found")))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "failed"
        progress = await handle.query(DeployWorkflow.progress)

    assert [c.outcome for c in fakes.named("resolve_image_digest")] == ["failed"]
    # Nothing reached the cluster, so nothing is restored.
    assert fakes.names() == ["begin_deployment", "resolve_image_digest", "finish_deployment"]
    assert finished(fakes, handle.id) == [("failed", f"image registry.test/web:2 was not found; {KEPT}")]
    assert step(progress, "resolve") == ("failed", "image registry.test/web:2 was not found")


async def test_a_deployment_that_has_ended_changes_nothing_and_keeps_its_reason(client, task_queue):
    """A workflow Reset re-ran a deployment that had ended: the apply refuses
    (DeploymentEnded), nothing is restored, and the reason is recorded as is."""
    fakes = Fakes()
    plan = deployment(new_app(fakes))
    ended = f"deployment {plan.deployment_id} has already ended (superseded); a re-run of its workflow changes nothing on the cluster"
    fakes.script("apply_manifests", Fail(errors.DeploymentEnded(ended)))
    async with running_worker(client, task_queue, fakes):
        handle = await start_deploy(client, task_queue, fakes, plan)
        assert await outcome(handle) == "failed"
        progress = await handle.query(DeployWorkflow.progress)

    assert fakes.names() == ["begin_deployment", "apply_manifests", "finish_deployment"]
    assert finished(fakes, handle.id) == [("failed", ended)]
    assert step(progress, "apply") == ("failed", ended)
