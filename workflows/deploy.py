"""A release: deploy, update, restart or rollback of one app.

resolve the image → apply the manifests → wait for the rollout → record.
A failed or cancelled rollout puts the previous release back, so the app
keeps serving what it served before.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.builder import BuilderActivities
    from activities.digests import RegistryActivities
    from activities.jobs import JobActivities
    from activities.records import RecordActivities
    from activities.schedules import ScheduleActivities
    from activities.workloads import KubeActivities
    from conveyor.domain import errors, jobs, manifests
    from conveyor.domain.commands import as_argv
    from conveyor.domain.payloads import (
        ApplyInput,
        AppTargetInput,
        BeginDeploymentInput,
        BuildInput,
        BuiltImage,
        DeploymentPlan,
        FindBuildInput,
        FinishDeploymentInput,
        Operation,
        RecordBuildInput,
        RecordImageInput,
        ReleaseSpec,
        ResolveCommitInput,
        ResolvedImage,
        ResolveImageInput,
        RolloutInput,
        RolloutProgress,
        RolloutResult,
        ScaleInput,
    )
    from conveyor.domain.redact import mask_url_credentials
    from conveyor.domain.vocabulary import TERMINAL, BuildStatus, DeploymentStatus, OperationKind, SourceType
    from conveyor.domain.workload import with_procfile
    from workflows.common import (
        CLEANUP_GRACE,
        DB,
        KUBE_WRITE,
        REGISTRY,
        ActivityOptions,
        all_of,
        cancelled,
        failure_message,
        job_wait,
        local,
        long_wait,
        until,
        with_step,
    )

# begin_deployment runs as a local activity: in releases whose operation says
# so (`Operation.begins_locally`), and in those recorded with this patch.
LOCAL_BEGIN = "local-begin"


@workflow.defn
class DeployWorkflow:
    def __init__(self) -> None:
        self._steps: list[dict[str, str]] = []
        self._finalizing = False
        self._applied = False
        self._resolved: ResolvedImage | None = None
        self._deadline: datetime | None = None
        # The step whose rollout is being waited for ("rollout" or "restore"),
        # and each process's ready count while it is.
        self._waiting_step: str | None = None
        self._ready: dict[str, tuple[int, int]] = {}

    @workflow.query
    def progress(self) -> list[dict[str, str]]:
        return self._steps

    # Live progress. A workflow cannot read its activities' heartbeats, so the
    # rollout wait signals its workflow whenever the ready count changes (a
    # handful of signals per rollout). A signal updates the step as it
    # arrives, in the current details, the `progress` query and so the SSE
    # stream; it adds no command, so running executions replay unchanged.
    # (Polling a short activity instead would cost a round trip per poll and
    # history events even while nothing changes.)
    @workflow.signal
    def rollout_progress(self, update: RolloutProgress) -> None:
        if self._waiting_step is not None:
            self._ready[update.name] = (update.ready, update.desired)
            self._step(self._waiting_step, "running", self._ready_detail())

    def _ready_detail(self) -> str:
        """`2/3 ready`, or per process: `web 2/2, worker 1/3 ready`."""
        if len(self._ready) <= 1:
            return "".join(f"{ready}/{desired} ready" for ready, desired in self._ready.values())
        return ", ".join(f"{name} {ready}/{desired}" for name, (ready, desired) in self._ready.items()) + " ready"

    def _step(self, name: str, state: str, detail: str = "") -> None:
        # Shown as the workflow's current details in the Temporal Web UI.
        workflow.set_current_details(f"{name}: {state}" + (f" ({detail})" if detail else ""))
        with_step(self._steps, name, state, detail)

    async def _rollout(self, spec: ReleaseSpec, stuck_seconds: int, deployment_id: str | None, step: str) -> RolloutResult:
        """Wait for every process's Deployment to roll out (web alone: one
        wait, as before processes); the first that fails stops the others."""
        self._waiting_step = step
        views = manifests.process_views(spec)
        self._ready = {view.name: (0, view.replicas) for view in views} if len(views) > 1 else {}
        waits = [
            workflow.start_activity_method(
                KubeActivities.wait_for_rollout,
                RolloutInput(
                    namespace=spec.namespace,
                    name=view.name,
                    deployment_id=deployment_id,
                    deadline_seconds=spec.progress_deadline_seconds,
                    stuck_seconds=stuck_seconds,
                    # Fixed here, so that retries, an activity reset or a worker
                    # restart never extend the wait.
                    deadline_at=workflow.now() + timedelta(seconds=spec.progress_deadline_seconds + 5),
                    report_progress=True,
                ),
                summary=f"wait for {view.name} ×{view.replicas} to roll out",
                **long_wait(spec.progress_deadline_seconds),
            )
            for view in views
        ]
        try:
            results = await all_of(waits)
        finally:
            self._waiting_step = None
        return RolloutResult(
            ready_replicas=sum(r.ready_replicas for r in results),
            desired_replicas=sum(r.desired_replicas for r in results),
            message="; ".join(r.message for r in results),
        )

    def _work(self, options: ActivityOptions) -> ActivityOptions:
        """Options of a step of the release: retried until the deployment's deadline."""
        return until(options, self._deadline)

    def _cleanup(self, options: ActivityOptions) -> ActivityOptions:
        """Options of restoring and recording: they get a grace period past the deadline."""
        return until(options, self._deadline, CLEANUP_GRACE)

    @workflow.run
    async def run(self, op: Operation) -> str:
        # begin_deployment also resolves the image's tag when the release
        # needs it (one round trip for both). An older history's plan has no
        # `resolved`, so it resolves in a step of its own as it did.
        begin = BeginDeploymentInput(deployment_id=op.deployment_id, resolve_image=True)
        if op.begins_locally:
            # It begins locally, and records no patch marker. A worker from
            # before this field (in a rolling upgrade) ignored it and recorded
            # one: a replay must match it, and `patched` does (with no marker
            # in the history it adds nothing).
            if workflow.unsafe.is_replaying():
                workflow.patched(LOCAL_BEGIN)
            locally = True
        else:
            locally = workflow.patched(LOCAL_BEGIN)
        if locally:
            # A local activity: run by the worker within the first workflow
            # task and recorded as one marker (README: runbook). Nothing of
            # the release is there to show or to pause before it has run.
            plan: DeploymentPlan = await workflow.execute_local_activity_method(
                RecordActivities.begin_deployment, begin, summary=f"start {op.deployment_id}", **local(DB)
            )
        else:
            plan = await workflow.execute_activity_method(RecordActivities.begin_deployment, begin, summary=f"start {op.deployment_id}", **DB)
        if plan.status in TERMINAL:
            return plan.status
        self._deadline = plan.deadline
        spec = plan.spec
        try:
            if plan.build is not None:
                image = await self._image_from_source(op, plan)
                # The Procfile's other lines are processes of this release.
                spec.image_ref, spec.processes = image.reference, with_procfile(spec.processes, image.procfile)
            elif not plan.image_ref and plan.resolved is not None:
                # Resolved by begin_deployment; finish_deployment records it.
                self._step("resolve", "running", plan.image or "")
                self._resolved = plan.resolved
                spec.image_ref = plan.resolved.reference
                self._step("resolve", "done", plan.resolved.reference)
            elif not plan.image_ref:
                self._step("resolve", "running", plan.image or "")
                resolved: ResolvedImage = await workflow.execute_activity_method(
                    RegistryActivities.resolve_image_digest,
                    ResolveImageInput(image=plan.image or "", project_id=plan.project_id),
                    summary=f"resolve {plan.image}",
                    **self._work(REGISTRY),
                )
                if workflow.patched("image-recorded-at-finish"):
                    # One round trip less: finish_deployment records the digest.
                    self._resolved = resolved
                else:
                    await workflow.execute_activity_method(
                        RecordActivities.record_image_digest,
                        RecordImageInput(deployment_id=plan.deployment_id, image_ref=resolved.reference, image_digest=resolved.digest),
                        summary=f"record {resolved.digest[:19]}",
                        **self._work(DB),
                    )
                spec.image_ref = resolved.reference
                self._step("resolve", "done", resolved.reference)
            if no_command := sorted(name for name, p in (spec.processes or {}).items() if p.command is None):
                reason = f"process {', '.join(no_command)} has no command: give one in processes, or a line in the Procfile"
                self._step("apply", "failed", reason)
                return await self._finish(plan, DeploymentStatus.FAILED, await self._restore(plan, reason), op.user)
            if spec.release_command is not None and plan.operation != OperationKind.RESTART:
                # Only releases that carry one take this path (none recorded
                # before release commands did): their histories replay
                # unchanged. A restart rolls the same release again: its
                # command ran when that release was made.
                await self._release_phase(plan, spec)
            self._step("apply", "running", spec.image_ref)
            self._applied = True
            await workflow.execute_activity_method(
                KubeActivities.apply_manifests,
                ApplyInput(spec=spec, on_behalf_of=plan.deployment_id),
                summary=f"apply {spec.slug} → {spec.image_ref}",
                **self._work(KUBE_WRITE),
            )
            deployments = ", ".join(view.name for view in manifests.process_views(spec))
            self._step("apply", "done", f"Namespace, Secret, Deployment {deployments}, Service, Ingress")
            self._step("rollout", "running", f"0/{spec.replicas}")
            result = await self._rollout(spec, plan.stuck_seconds, plan.deployment_id, "rollout")
            self._step("rollout", "done", f"{result.ready_replicas}/{result.desired_replicas} ready")
            self._step("finalize", "running")
            self._finalizing = True
            # The release is out: its Schedules follow it before it is
            # recorded active, so an active release has its Schedules.
            await self._sync_schedules(plan, spec)
            released = f"{plan.operation} {spec.name} → {spec.image_ref} ×{spec.replicas}"
            status = await self._finish(plan, DeploymentStatus.ACTIVE, None, op.user, ("finalize", "done", f"{released}: {DeploymentStatus.ACTIVE}"))
            self._step("finalize", "done", f"{released}: {status}")
            return status
        except (ActivityError, asyncio.CancelledError) as err:
            if errors.is_kind(err, errors.DeploymentEnded):
                # A Reset re-ran a deployment that had ended: it changed nothing.
                self._mark_running_failed(failure_message(err))
                return await self._finish(plan, DeploymentStatus.FAILED, failure_message(err), op.user)
            if not cancelled(err):
                reason = failure_message(err)
                self._mark_running_failed(reason)
                reason = await self._restore(plan, reason)
                return await self._finish(plan, DeploymentStatus.FAILED, reason, op.user)
            if self._finalizing:
                # Too late to cancel: the release is out; finish recording it.
                late = ("finalize", "done", f"{DeploymentStatus.ACTIVE} (too late to cancel)")
                status = await self._finish(plan, DeploymentStatus.ACTIVE, None, op.user, late)
                # Else the progress query (GET deployment) shows finalize running
                # for good. A step adds no command: histories replay unchanged.
                self._step("finalize", "done", f"{status} (too late to cancel)")
                return status
            self._mark_running_failed("cancelled")
            if workflow.patched("no-restore-for-a-deleted-app") and await self._app_being_deleted(plan):
                # Cancelled by the app's DELETE: there is nothing left to serve.
                reason = "cancelled: the app is being deleted, so nothing was restored"
                await self._finish(plan, DeploymentStatus.CANCELLED, reason, op.user)
                raise asyncio.CancelledError(reason) from err
            # Cancelled from the API or the Temporal UI: put the previous release back.
            reason = await self._restore(plan, "cancelled by an operator")
            await self._finish(plan, DeploymentStatus.CANCELLED, reason, op.user)
            raise asyncio.CancelledError(reason) from err

    async def _release_phase(self, plan: DeploymentPlan, spec: ReleaseSpec) -> None:
        """The release command, as a Job from this release's image with its
        env, before anything of the release is applied. Once per deployment:
        the activity returns the recorded outcome of a run that ended, and
        waits for a Job that exists. A failure fails the deployment (nothing
        was applied, so the previous release keeps serving)."""
        assert spec.release_command is not None, "only a release with a release command has a release phase"
        argv = as_argv(spec.release_command)
        self._step("release", "running", " ".join(argv)[:200])
        job = jobs.JobSpec.of(
            spec, jobs.JobKind.RELEASE, "release", jobs.release_job_name(spec.slug, plan.deployment_id), argv, plan.release_timeout_seconds,
            workflow_id=workflow.info().workflow_id,
        )
        outcome: jobs.JobOutcome = await workflow.execute_activity_method(
            JobActivities.run_job,
            jobs.RunJobInput(
                release=spec,
                job=job,
                # Fixed here: no retry, reset or new worker extends it.
                deadline_at=workflow.now() + timedelta(seconds=job.deadline_seconds + 60),
            ),
            summary=f"release command of {plan.deployment_id}: {' '.join(argv)[:80]}",
            **self._work(job_wait(job.deadline_seconds + 60)),
        )
        lines = len(outcome.output.splitlines())
        self._step("release", "done", f"exit {outcome.exit_code if outcome.exit_code is not None else 0}; {lines} lines of output" + (" (recorded before)" if outcome.recorded else ""))

    async def _sync_schedules(self, plan: DeploymentPlan, spec: ReleaseSpec) -> None:
        """Once the release has rolled out, the app's Temporal Schedules
        follow its `cron`. Only releases that have cron entries or follow one
        that had (none did before scheduled jobs existed: older histories
        replay). The release is out whatever happens here (a cancel now is
        too late, as for finalize); a failure is shown in the step and the
        next release syncs again."""
        had = plan.previous is not None and bool(plan.previous.cron)
        if not (spec.cron or had):
            return
        self._step("schedules", "running", ", ".join(e.name for e in spec.cron or []) or "removing")
        try:
            done: list[str] = await workflow.execute_activity_method(
                ScheduleActivities.sync_schedules,
                jobs.SyncSchedulesInput(
                    app_id=spec.app_id, project_id=spec.project_id, app_name=spec.name, deployment_id=plan.deployment_id, entries=list(spec.cron or [])
                ),
                summary=f"schedules of {spec.name}",
                **self._cleanup(KUBE_WRITE),
            )
        except ActivityError as err:
            self._step("schedules", "failed", failure_message(err))
            return
        self._step("schedules", "done", "; ".join(done) or "none")

    async def _app_being_deleted(self, plan: DeploymentPlan) -> bool:
        return bool(
            await workflow.execute_activity_method(
                RecordActivities.app_being_deleted,
                AppTargetInput(app_id=plan.app_id),
                summary=f"is {plan.app_id} being deleted?",
                **self._cleanup(DB),
            )
        )

    def _mark_running_failed(self, detail: str) -> None:
        running = [step["name"] for step in self._steps if step["state"] == "running"]
        if running:
            self._step(running[-1], "failed", detail)

    async def _image_from_source(self, op: Operation, plan: DeploymentPlan) -> BuiltImage:
        """Resolve the commit, reuse the image built for it, or build one."""
        build = plan.build
        assert build is not None, "only a plan with a build comes here"
        commit = build.commit
        if build.source_type == SourceType.GIT and not commit:
            self._step("resolve", "running", f"{mask_url_credentials(build.repo_url)} {build.branch}")
            commit = await workflow.execute_activity_method(
                BuilderActivities.resolve_git_commit,
                ResolveCommitInput(repo_url=build.repo_url or "", branch=build.branch or "main"),
                summary=f"head of {build.branch}",
                **self._work(REGISTRY),
            )
            self._step("resolve", "done", commit)
        record = RecordBuildInput(build_id=build.build_id, deployment_id=plan.deployment_id, status=BuildStatus.BUILDING, commit=commit)
        await workflow.execute_activity_method(BuilderActivities.record_build, record, summary=f"record {build.build_id}", **self._work(DB))
        if commit:
            reused: BuiltImage | None = await workflow.execute_activity_method(
                BuilderActivities.find_built_image,
                FindBuildInput(app_id=plan.app_id, commit=commit),
                summary=f"image built for {commit[:12]}?",
                **self._work(DB),
            )
            if reused is not None:
                self._step("build", "done", f"reused {reused.reference} built for {commit[:12]}")
                record.status, record.image = BuildStatus.REUSED, reused
                await workflow.execute_activity_method(BuilderActivities.record_build, record, summary="record reuse", **self._work(DB))
                return reused
        build.commit = commit
        self._step("build", "running", build.build_id)
        try:
            built: BuiltImage = await workflow.execute_activity_method(
                BuilderActivities.build_image,
                BuildInput(plan=build, app_id=plan.app_id, project_id=plan.project_id, slug=plan.spec.slug),
                summary=f"build {plan.spec.slug} ({build.source_type}{' ' + commit[:12] if commit else ''})",
                **self._work(
                    ActivityOptions(
                        start_to_close_timeout=timedelta(seconds=build.timeout_seconds + 120),
                        heartbeat_timeout=timedelta(seconds=30),
                        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(seconds=60)),
                    )
                ),
            )
        except (ActivityError, asyncio.CancelledError) as err:
            record.status, record.reason = BuildStatus.FAILED, "cancelled" if cancelled(err) else failure_message(err)
            await workflow.execute_activity_method(BuilderActivities.record_build, record, summary="record the failed build", **self._cleanup(DB))
            raise
        self._step("build", "done", built.reference)
        record.status, record.image = BuildStatus.SUCCEEDED, built
        await workflow.execute_activity_method(BuilderActivities.record_build, record, summary="record build", **self._work(DB))
        return built

    async def _restore(self, plan: DeploymentPlan, reason: str) -> str:
        if not self._applied:
            # Nothing reached the cluster: whatever ran before still runs.
            kept = f"the previous deployment {plan.previous.deployment_id} keeps serving" if plan.previous else "nothing was deployed"
            return f"{reason}; {kept}"
        self._step("restore", "running")
        try:
            if plan.previous is not None:
                await workflow.execute_activity_method(
                    KubeActivities.apply_manifests,
                    ApplyInput(spec=plan.previous, on_behalf_of=plan.deployment_id),
                    summary=f"restore {plan.previous.deployment_id}",
                    **self._cleanup(KUBE_WRITE),
                )
                await self._rollout(plan.previous, plan.stuck_seconds, None, "restore")
                self._step("restore", "done", f"back on {plan.previous.deployment_id}")
                return f"{reason}; the previous deployment {plan.previous.deployment_id} keeps serving"
            spec = plan.spec
            for view in manifests.process_views(spec):
                await workflow.execute_activity_method(
                    KubeActivities.scale_deployment,
                    ScaleInput(namespace=spec.namespace, name=view.name, replicas=0, on_behalf_of=plan.deployment_id),
                    summary=f"scale {view.name} to 0",
                    **self._cleanup(KUBE_WRITE),
                )
            self._step("restore", "done", "no earlier release; scaled to 0")
            return f"{reason}; there is no earlier deployment to restore, so the app was scaled to 0"
        except ActivityError as err:
            if cancelled(err):
                # An operator stopped a restore (one that hangs, say): say so
                # rather than "failed: Cancelled". Only the recorded text
                # differs; the commands are the same, so histories replay.
                self._step("restore", "failed", "cancelled")
                return f"{reason}; restoring the previous deployment was cancelled by an operator, so this deployment may still be in the cluster"
            self._step("restore", "failed", failure_message(err))
            return f"{reason}; restoring the previous deployment also failed: {failure_message(err)}"

    async def _finish(
        self, plan: DeploymentPlan, status: DeploymentStatus, reason: str | None, user: str, last: tuple[str, str, str] | None = None
    ) -> str:
        """Record the outcome, with the steps as they stand with it (`last`:
        the step the workflow marks once the outcome is recorded), so that an
        ended deployment's progress is read from its row. The steps travel in
        the activity's input only: the commands, and so replay, are unchanged.
        An activity of its own, not a local one: the progress query must
        answer while it runs (it is what cancels and failures end with), and
        a stuck one is a pending activity an operator can see."""
        steps = [dict(step) for step in self._steps]
        if last is not None:
            with_step(steps, *last)
        return await workflow.execute_activity_method(
            RecordActivities.finish_deployment,
            FinishDeploymentInput(
                deployment_id=plan.deployment_id,
                status=status,
                reason=reason,
                user=user,
                image_ref=self._resolved.reference if self._resolved else None,
                image_digest=self._resolved.digest if self._resolved else None,
                steps=steps,
            ),
            summary=f"mark {plan.deployment_id} {status}",
            **self._cleanup(DB),
        )
