"""One run of a scheduled job: started by the cron entry's Temporal Schedule
(on its schedule, or triggered from the API or the Web UI).

load the entry from the app's active release → run its Job → done. The run
uses the image and env active when it starts; a run whose entry the active
release no longer has runs nothing. A failed Job fails the workflow, so the
Web UI shows each run as it went.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from conveyor.domain import errors
    from conveyor.domain.jobs import CronRunInput, JobOutcome, LoadCronJobInput, RunJobInput
    from workflows.common import DB, failure_message, job_wait


@workflow.defn
class CronRunWorkflow:
    @workflow.run
    async def run(self, request: CronRunInput) -> str:
        try:
            run: RunJobInput = await workflow.execute_activity_method(
                JobActivities.load_cron_job,
                LoadCronJobInput(app_id=request.app_id, name=request.name),
                summary=f"load {request.name} of {request.app_id}",
                **DB,
            )
        except ActivityError as err:
            if errors.is_kind(err, errors.JobNotRunnable):
                workflow.set_current_details(f"skipped: {failure_message(err)}")
                return f"skipped: {failure_message(err)}"
            raise
        job = run.job
        workflow.set_current_details(f"running {job.job_name} from {job.image_ref}")
        try:
            outcome: JobOutcome = await workflow.execute_activity_method(
                JobActivities.run_job,
                run,
                summary=f"run {job.name}: {' '.join(job.argv)[:80]}",
                **job_wait(job.deadline_seconds + int(timedelta(minutes=1).total_seconds())),
            )
        except ActivityError as err:
            if errors.is_kind(err, errors.JobFailed):
                workflow.set_current_details(failure_message(err))
                raise ApplicationError(failure_message(err), type="JobFailed", non_retryable=True) from err
            raise
        workflow.set_current_details(f"{job.name} succeeded ({outcome.run_id})")
        return f"succeeded: {outcome.run_id}"
