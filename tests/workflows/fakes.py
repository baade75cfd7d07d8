"""Conveyor's activities, faked under their real names for workflow tests.

Each method carries the `@activity.defn(name=...)` of the real activity it
stands for, with the same input and output models, so the workflows call them
exactly as they call the real ones (by name or by method reference). Every
call is recorded in order; a test scripts what a call does (fail, block until
cancelled or released, signal progress) with `Fakes.script`.

Why fakes here: these tests are about the workflows' decisions (order,
cancel, restore, continue-as-new), including failures the real parts cannot
be made to produce on cue, e.g. a cancel that lands while `finish_deployment`
runs. The real activities are covered against the real stack in tests/api.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client

from conveyor.domain.errors import ConveyorError
from conveyor.domain.jobs import AppJobsInput, JobOutcome, JobRunStatus, LoadCronJobInput, RunJobInput, SyncSchedulesInput
from conveyor.domain.payloads import (
    ApplyInput,
    AppTarget,
    AppTargetInput,
    BeginDeploymentInput,
    BuildInput,
    BuiltImage,
    DeleteFailedInput,
    DeleteResourcesInput,
    DeploymentPlan,
    FindBuildInput,
    FinishDeploymentInput,
    RecordBuildInput,
    RecordImageInput,
    RemoveAppInput,
    ResolveCommitInput,
    ResolvedImage,
    ResolveImageInput,
    RolloutInput,
    RolloutProgress,
    RolloutResult,
    ScaleInput,
    ScaleRecordInput,
    TurnInput,
)
from worker.failures import to_application_error
from workflows.deploy import DeployWorkflow

# How long a blocked fake waits between heartbeats (the test worker sends
# heartbeats at once, so a cancel reaches the fake within about this long).
BEAT = 0.05


@dataclass
class Fail:
    """Fail with a named failure, as the real activity would: a `PermanentError`
    ends the step at once, a `TransientError` is retried by the activity's
    retry policy. It reaches the workflow as the worker hands it to Temporal."""

    error: ConveyorError


@dataclass
class Block:
    """Heartbeat until the activity is cancelled (recorded as `cancelled`), or
    until `release()`, then do what the fake does by default."""

    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Call:
    name: str
    workflow_id: str
    input: Any
    # returned | failed | cancelled; None while it runs.
    outcome: str | None = None


# None: what the fake does by default.
Step = Fail | Block | Callable[[Any], Awaitable[Any]] | None


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Fakes:
    def __init__(self, client: Client | None = None, desired_replicas: int = 2):
        # Used to signal rollout progress, as the real worker's reporter does.
        self.client = client
        self.desired_replicas = desired_replicas
        self.calls: list[Call] = []
        # ("start" | "end", activity name, workflow id), in the order they happened.
        self.events: list[tuple[str, str, str]] = []
        self.plans: dict[str, DeploymentPlan] = {}
        self.targets: dict[str, AppTarget] = {}
        # What load_cron_job answers, by (app id, entry name).
        self.cron_jobs: dict[tuple[str, str], RunJobInput] = {}
        # Apps whose DELETE was asked for (app_being_deleted).
        self.deleting: set[str] = set()
        self._script: dict[str, list[Step]] = {}
        self._changed = asyncio.Condition()

    # --- scripting and inspection -------------------------------------------------

    def script(self, name: str, *steps: Step) -> None:
        """What the next calls of activity `name` do, one step per call; later calls do the default."""
        self._script.setdefault(name, []).extend(steps)

    def named(self, name: str, workflow_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.name == name and (workflow_id is None or c.workflow_id == workflow_id)]

    def names(self, workflow_id: str | None = None) -> list[str]:
        return [c.name for c in self.calls if workflow_id is None or c.workflow_id == workflow_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (without polling) until `predicate` holds over the recorded calls."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def started(self, name: str, count: int = 1, timeout: float = 5.0) -> Call:
        """Wait until activity `name` has started `count` times; the last of them."""
        await self.wait_for(lambda: len(self.named(name)) >= count, timeout)
        return self.named(name)[count - 1]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _run(self, name: str, request: Any, default: Callable[[], Any]) -> Any:
        call = Call(name, activity.info().workflow_id, request)
        self.calls.append(call)
        self.events.append(("start", name, call.workflow_id))
        await self._notify()
        steps = self._script.get(name)
        step = steps.pop(0) if steps else None
        try:
            if isinstance(step, Fail):
                raise to_application_error(step.error)
            if isinstance(step, Block):
                while not step.released.is_set():
                    activity.heartbeat()
                    try:
                        await asyncio.wait_for(step.released.wait(), BEAT)
                    except TimeoutError:
                        pass
                result = default()
            elif step is not None:
                result = await step(request)
            else:
                result = default()
        except asyncio.CancelledError:
            call.outcome = "cancelled"
            raise
        except BaseException:
            call.outcome = "failed"
            raise
        else:
            call.outcome = "returned"
            return result
        finally:
            self.events.append(("end", name, call.workflow_id))
            await self._notify()

    async def signal_progress(self, ready: int, desired: int) -> None:
        """From inside a wait_for_rollout step: what the real wait does as pods become ready."""
        assert self.client is not None, "Fakes(client=...) is needed to report progress"
        handle = self.client.get_workflow_handle(activity.info().workflow_id)
        await handle.signal(DeployWorkflow.rollout_progress, RolloutProgress(ready=ready, desired=desired))

    def activities(self) -> list[Callable]:
        return [
            self.begin_deployment,
            self.record_image_digest,
            self.finish_deployment,
            self.load_app_target,
            self.app_being_deleted,
            self.record_scale,
            self.remove_app,
            self.record_delete_failed,
            self.resolve_image_digest,
            self.apply_manifests,
            self.wait_for_rollout,
            self.scale_deployment,
            self.delete_app_resources,
            self.resolve_git_commit,
            self.find_built_image,
            self.build_image,
            self.record_build,
            self.run_job,
            self.load_cron_job,
            self.delete_app_jobs,
            self.sync_schedules,
            self.delete_app_schedules,
            self.take_turn,
            self.release_turn,
        ]

    # --- records.py -------------------------------------------------------------

    @activity.defn(name="begin_deployment")
    async def begin_deployment(self, request: BeginDeploymentInput) -> DeploymentPlan:
        def plan() -> DeploymentPlan:
            found = self.plans[request.deployment_id].model_copy(deep=True)
            # As the real one: the digest comes with the plan when asked for
            # and the registry gives it at once. A test that scripts
            # resolve_image_digest (to fail, say) gets no digest here, as when
            # the registry did not answer: the workflow's own step then runs it.
            wanted = request.resolve_image and found.build is None and not found.image_ref and found.image
            if wanted and not self._script.get("resolve_image_digest"):
                found.resolved = self.resolved(ResolveImageInput(image=found.image or "", project_id=found.project_id))
            return found

        return await self._run("begin_deployment", request, plan)

    @activity.defn(name="record_image_digest")
    async def record_image_digest(self, request: RecordImageInput) -> None:
        return await self._run("record_image_digest", request, lambda: None)

    @activity.defn(name="finish_deployment")
    async def finish_deployment(self, request: FinishDeploymentInput) -> str:
        return await self._run("finish_deployment", request, lambda: request.status)

    @activity.defn(name="load_app_target")
    async def load_app_target(self, request: AppTargetInput) -> AppTarget | None:
        return await self._run("load_app_target", request, lambda: self.targets.get(request.app_id))

    @activity.defn(name="app_being_deleted")
    async def app_being_deleted(self, request: AppTargetInput) -> bool:
        return await self._run("app_being_deleted", request, lambda: request.app_id in self.deleting)

    @activity.defn(name="record_scale")
    async def record_scale(self, request: ScaleRecordInput) -> None:
        return await self._run("record_scale", request, lambda: None)

    @activity.defn(name="remove_app")
    async def remove_app(self, request: RemoveAppInput) -> bool:
        return await self._run("remove_app", request, lambda: True)

    @activity.defn(name="record_delete_failed")
    async def record_delete_failed(self, request: DeleteFailedInput) -> bool:
        return await self._run("record_delete_failed", request, lambda: True)

    # --- turns.py ---------------------------------------------------------------

    @activity.defn(name="take_turn")
    async def take_turn(self, request: TurnInput) -> bool:
        # The lane has the app's turn at once (the real wait is tested on the platform).
        return await self._run("take_turn", request, lambda: True)

    @activity.defn(name="release_turn")
    async def release_turn(self, request: TurnInput) -> bool:
        return await self._run("release_turn", request, lambda: True)

    # --- registry.py ------------------------------------------------------------

    @staticmethod
    def resolved(request: ResolveImageInput) -> ResolvedImage:
        digest = digest_of(request.image)
        return ResolvedImage(image=request.image, digest=digest, reference=f"{request.image}@{digest}")

    @activity.defn(name="resolve_image_digest")
    async def resolve_image_digest(self, request: ResolveImageInput) -> ResolvedImage:
        return await self._run("resolve_image_digest", request, lambda: self.resolved(request))

    # --- kube.py ----------------------------------------------------------------

    @activity.defn(name="apply_manifests")
    async def apply_manifests(self, request: ApplyInput) -> list[str]:
        return await self._run("apply_manifests", request, lambda: ["Namespace", "Secret", "Deployment", "Service", "Ingress"])

    @activity.defn(name="wait_for_rollout")
    async def wait_for_rollout(self, request: RolloutInput) -> RolloutResult:
        return await self._run("wait_for_rollout", request, self.rollout_result)

    def rollout_result(self) -> RolloutResult:
        n = self.desired_replicas
        return RolloutResult(ready_replicas=n, desired_replicas=n, message="rolled out")

    @activity.defn(name="scale_deployment")
    async def scale_deployment(self, request: ScaleInput) -> int:
        return await self._run("scale_deployment", request, lambda: request.replicas)

    @activity.defn(name="delete_app_resources")
    async def delete_app_resources(self, request: DeleteResourcesInput) -> list[str]:
        return await self._run("delete_app_resources", request, lambda: ["Deployment", "Service", "Ingress", "Secret"])

    # --- builder.py -------------------------------------------------------------

    @activity.defn(name="resolve_git_commit")
    async def resolve_git_commit(self, request: ResolveCommitInput) -> str:
        return await self._run("resolve_git_commit", request, lambda: digest_of(request.repo_url + request.branch)[7:47])

    @activity.defn(name="find_built_image")
    async def find_built_image(self, request: FindBuildInput) -> BuiltImage | None:
        return await self._run("find_built_image", request, lambda: None)

    @activity.defn(name="build_image")
    async def build_image(self, request: BuildInput) -> BuiltImage:
        def built() -> BuiltImage:
            image = f"registry.test/{request.project_id}/{request.slug}:{request.plan.build_id}"
            digest = digest_of(image)
            return BuiltImage(image=image, digest=digest, reference=f"{image}@{digest}")

        return await self._run("build_image", request, built)

    @activity.defn(name="record_build")
    async def record_build(self, request: RecordBuildInput) -> None:
        return await self._run("record_build", request, lambda: None)

    # --- jobs.py and schedules.py -------------------------------------------------

    @activity.defn(name="run_job")
    async def run_job(self, request: RunJobInput) -> JobOutcome:
        return await self._run(
            "run_job", request, lambda: JobOutcome(run_id=f"run_{request.job.job_name}", status=JobRunStatus.SUCCEEDED, output="done", exit_code=0)
        )

    @activity.defn(name="load_cron_job")
    async def load_cron_job(self, request: LoadCronJobInput) -> RunJobInput:
        def found() -> RunJobInput:
            run = self.cron_jobs.get((request.app_id, request.name))
            if run is None:
                from conveyor.domain.errors import JobNotRunnable

                raise to_application_error(JobNotRunnable(f"no cron entry {request.name}"))
            return run

        return await self._run("load_cron_job", request, found)

    @activity.defn(name="delete_app_jobs")
    async def delete_app_jobs(self, request: AppJobsInput) -> list[str]:
        return await self._run("delete_app_jobs", request, lambda: [])

    @activity.defn(name="sync_schedules")
    async def sync_schedules(self, request: SyncSchedulesInput) -> list[str]:
        return await self._run("sync_schedules", request, lambda: [f"created cron-{request.app_id}-{e.name}" for e in request.entries])

    @activity.defn(name="delete_app_schedules")
    async def delete_app_schedules(self, request: AppJobsInput) -> list[str]:
        return await self._run("delete_app_schedules", request, lambda: [])
