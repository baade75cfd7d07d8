"""Scale an app (a change of replicas alone is not a release)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.records import RecordActivities
    from activities.workloads import KubeActivities
    from conveyor.domain import manifests
    from conveyor.domain.payloads import AppTarget, AppTargetInput, Operation, RolloutInput, ScaleInput, ScaleRecordInput
    from workflows.common import DB, KUBE_WRITE, failure_message, long_wait


@workflow.defn
class ScaleWorkflow:
    @workflow.run
    async def run(self, op: Operation) -> str:
        target: AppTarget | None = await workflow.execute_activity_method(
            RecordActivities.load_app_target, AppTargetInput(app_id=op.app_id), summary=f"load {op.app_id}", **DB
        )
        if target is None:
            return "app gone"
        if op.process is not None:
            name = manifests.deployment_name(target.slug, op.process)
            replicas = target.processes.get(op.process, op.replicas or 0)
        else:
            name, replicas = target.slug, target.replicas if target.replicas is not None else (op.replicas or 0)
        record = ScaleRecordInput(
            app_id=op.app_id, replicas=replicas, previous_replicas=op.previous_replicas, user=op.user, outcome="done", process=op.process
        )
        try:
            await workflow.execute_activity_method(
                KubeActivities.scale_deployment,
                ScaleInput(namespace=target.namespace, name=name, replicas=replicas),
                summary=f"scale {name} to {replicas}",
                **KUBE_WRITE,
            )
            await workflow.execute_activity_method(
                KubeActivities.wait_for_rollout,
                RolloutInput(
                    namespace=target.namespace,
                    name=name,
                    deadline_seconds=target.progress_deadline_seconds,
                    stuck_seconds=target.progress_deadline_seconds,
                ),
                summary=f"wait for {name} ×{replicas}",
                **long_wait(target.progress_deadline_seconds),
            )
        except ActivityError as err:
            record.outcome, record.reason = "failed", failure_message(err)
        await workflow.execute_activity_method(RecordActivities.record_scale, record, summary=f"audit scale of {target.slug}", **DB)
        return record.outcome
