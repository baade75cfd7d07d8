"""Delete an app: its Kubernetes objects first, then its records.

A delete that fails leaves the app `delete_failed` with the reason, so DELETE
can be tried again (a new attempt, a new workflow id)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from activities.records import RecordActivities
    from activities.schedules import ScheduleActivities
    from activities.workloads import KubeActivities
    from conveyor.domain.jobs import AppJobsInput
    from conveyor.domain.payloads import AppTarget, AppTargetInput, DeleteFailedInput, DeleteResourcesInput, Operation, RemoveAppInput
    from workflows.common import DB, failure_message, long_wait


@workflow.defn
class DeleteAppWorkflow:
    @workflow.run
    async def run(self, op: Operation) -> str:
        target: AppTarget | None = await workflow.execute_activity_method(
            RecordActivities.load_app_target, AppTargetInput(app_id=op.app_id), summary=f"load {op.app_id}", **DB
        )
        if target is None:
            return "already deleted"
        try:
            if workflow.patched("delete-schedules-and-jobs"):
                # Its Schedules first, so that no run starts while the app goes.
                jobs = AppJobsInput(app_id=op.app_id, namespace=target.namespace, timeout_seconds=target.delete_timeout_seconds)
                await workflow.execute_activity_method(
                    ScheduleActivities.delete_app_schedules, jobs, summary=f"delete {target.name}'s schedules", **DB
                )
                await workflow.execute_activity_method(
                    JobActivities.delete_app_jobs, jobs, summary=f"delete {target.name}'s Jobs", **long_wait(target.delete_timeout_seconds)
                )
            await workflow.execute_activity_method(
                KubeActivities.delete_app_resources,
                DeleteResourcesInput(
                    namespace=target.namespace, slug=target.slug, timeout_seconds=target.delete_timeout_seconds, app_id=target.app_id
                ),
                summary=f"delete {target.slug}'s Deployment, Service, Ingress, env Secret",
                **long_wait(target.delete_timeout_seconds),
            )
            await workflow.execute_activity_method(
                RecordActivities.remove_app, RemoveAppInput(app_id=op.app_id, user=op.user), summary=f"remove {target.name}", **DB
            )
        except ActivityError as err:
            reason = failure_message(err)
            await workflow.execute_activity_method(
                RecordActivities.record_delete_failed,
                DeleteFailedInput(app_id=op.app_id, workflow_id=workflow.info().workflow_id, reason=reason, user=op.user),
                summary=f"mark {target.name} delete_failed",
                **DB,
            )
            # Failed, not completed, in the Web UI; the app says why and can be deleted again.
            raise ApplicationError(f"deleting {target.name} failed: {reason}", non_retryable=True) from err
        return "deleted"
