"""Delete an app: its Kubernetes objects first, then its records."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conveyor.payloads import AppTarget, AppTargetInput, DeleteResourcesInput, Operation, RemoveAppInput
    from workflows.common import DB, long_wait


@workflow.defn
class DeleteAppWorkflow:
    @workflow.run
    async def run(self, op: Operation) -> str:
        target: AppTarget | None = await workflow.execute_activity(
            "load_app_target", AppTargetInput(app_id=op.app_id), result_type=AppTarget, summary=f"load {op.app_id}", **DB
        )
        if target is None:
            return "already deleted"
        await workflow.execute_activity(
            "delete_app_resources",
            DeleteResourcesInput(namespace=target.namespace, slug=target.slug, timeout_seconds=120),
            summary=f"delete {target.slug}'s Deployment, Service, Ingress, env Secret",
            **long_wait(120),
        )
        await workflow.execute_activity(
            "remove_app", RemoveAppInput(app_id=op.app_id, user=op.user), summary=f"remove {target.name}", **DB
        )
        return "deleted"
