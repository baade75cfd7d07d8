"""Database side effects of the workflows: each call is one transaction and
safe to run twice (a repeated call finds the state already written)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session
from temporalio import activity

from activities.digests import resolve_image
from conveyor.clients.db import turns
from conveyor.clients.db.models import App, Build, Deployment, JobRun, Project
from conveyor.clients.db.queries import active_deployment, add_audit, delete_workflow_id, release_spec
from conveyor.clients.db.session import read_scope, session_scope
from conveyor.domain.errors import DeploymentGone
from conveyor.domain.ids import new_id, utcnow
from conveyor.domain.payloads import (
    AppTarget,
    AppTargetInput,
    BeginDeploymentInput,
    BuildPlan,
    DeleteFailedInput,
    DeploymentPlan,
    FinishDeploymentInput,
    RecordImageInput,
    RemoveAppInput,
    ResolvedImage,
    ResolveImageInput,
    ScaleRecordInput,
)
from conveyor.domain.vocabulary import (
    BUILT,
    NOT_STARTED,
    ONCE_RAN,
    TERMINAL,
    AppStatus,
    BuildStatus,
    DeploymentStatus,
    OperationKind,
)
from conveyor.domain.workload import Workload
from conveyor.settings import Settings

log = logging.getLogger(__name__)
# begin_deployment's try at the image's digest waits no longer than this for
# the registry: a slow one is left to the step of its own, which retries.
INLINE_RESOLVE_TIMEOUT = 5.0
# Tells the lane of an app (by its id) that the app's turn is its own now.
TurnOffer = Callable[[str], None]

# Read with the row's operation (a str): a StrEnum key matches its plain string.
VERBS: dict[str, str] = {
    OperationKind.DEPLOY: "Deployed image {image}",
    OperationKind.UPDATE: "Deployed configuration change with image {image}",
    OperationKind.RESTART: "Restarted all pods of {image}",
    OperationKind.ROLLBACK: "Rolled back to deployment {rollback_of} (image {image})",
}


def operation_key() -> str:
    """The operation an activity works for: its workflow's id (`deploy-dep_…`,
    `scale-…`), the same on every attempt and across a workflow Reset."""
    workflow_id = activity.info().workflow_id
    assert workflow_id is not None, "Conveyor's activities run for workflows"
    return workflow_id


def _set_status(app: App, status: AppStatus) -> None:
    # A release that ends after DELETE was asked for does not make the app
    # look alive again: the delete (queued behind it) decides.
    if app.status not in (AppStatus.DELETING, AppStatus.DELETE_FAILED):
        app.status = status


class RecordActivities:
    def __init__(self, settings: Settings, offer_turn: TurnOffer | None = None):
        self.settings = settings
        self.url = settings.effective_database_url
        # Tells an app's lane that it has the app's turn (the worker signals it).
        self._offer_turn = offer_turn

    def _give_turn_on(self, session: Session, app_id: str) -> None:
        """The operation's last record: the app's turn goes on with it. When
        it goes to the app's lane, the lane is told once this commits (a lost
        word costs the lane a wait of TURN_POLL, no more)."""
        offer = self._offer_turn
        if turns.release(session, app_id, operation_key()) and offer is not None:

            def tell_the_lane(_session: Session) -> None:
                try:
                    offer(app_id)
                except Exception as exc:  # noqa: BLE001 - committed already; the lane asks again on its own
                    log.info("could not tell the lane of %s that it has the turn: %s", app_id, exc)

            event.listen(session, "after_commit", tell_the_lane, once=True)

    def _deployment(self, session: Session, deployment_id: str) -> Deployment:
        dep = session.get(Deployment, deployment_id)
        if dep is None:
            # The API commits a deployment before handing it to Temporal (the
            # outbox), so a missing row was deleted with its app: permanent.
            raise DeploymentGone(f"deployment {deployment_id} no longer exists (its app was deleted)")
        return dep

    def _deadline(self, app: App, dep: Deployment, build: BuildPlan | None) -> datetime:
        started = dep.started_at or utcnow()
        if started.tzinfo is None:  # SQLite keeps no zone; the column is UTC
            started = started.replace(tzinfo=UTC)
        budget = self.settings.deploy_deadline_seconds + app.progress_deadline_seconds
        if build is not None:
            budget += self.settings.build_timeout_seconds
        return started + timedelta(seconds=budget)

    @activity.defn(name="begin_deployment")
    def begin_deployment(self, request: BeginDeploymentInput) -> DeploymentPlan:
        plan = self._begin(request)
        if request.resolve_image and plan.status not in TERMINAL and plan.build is None and not plan.image_ref and plan.image:
            # After the commit: no transaction is held across the registry call.
            plan.resolved = self._try_resolve(ResolveImageInput(image=plan.image, project_id=plan.project_id))
        return plan

    def _try_resolve(self, request: ResolveImageInput) -> ResolvedImage | None:
        """The image's digest, or None when the registry does not give it at
        once. The workflow then resolves it in the step of its own
        (resolve_image_digest), whose retries and failure the operator sees,
        pauses and resets as before; a permanent failure fails the release
        there, with its reason."""
        try:
            return resolve_image(self.settings, request, timeout=INLINE_RESOLVE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the separate step reports it
            log.info("resolving %s while beginning the deployment: %s; the release resolves it in a step of its own", request.image, exc)
            return None

    def _begin(self, request: BeginDeploymentInput) -> DeploymentPlan:
        with session_scope(self.url) as session:
            dep = self._deployment(session, request.deployment_id)
            app = dep.app
            project = session.get_one(Project, app.project_id)
            overtaken = self._overtaken_by(session, dep)
            if dep.status in NOT_STARTED and overtaken is not None:
                # Handed to the lane after a later request that has rolled out
                # already (two API replicas, or a hand-off retried after a
                # crash): running it now would put older code back.
                dep.status, dep.finished_at = DeploymentStatus.CANCELLED, utcnow()
                dep.reason = f"deployment v{overtaken.number}, requested later, was rolled out first"
                add_audit(
                    session,
                    app,
                    f"{dep.operation}_cancelled",
                    "system",
                    f"Skipped deployment v{dep.number}: {dep.reason}",
                    dep.id,
                    operation_key(),
                )
            if dep.status in NOT_STARTED:
                dep.status = DeploymentStatus.DEPLOYING
                dep.started_at = utcnow()
                # Scaling is not a release: every release runs at the app's current size.
                dep.replicas = app.replicas
                if dep.image_from is not None:
                    self._take_running_image(session, dep)
            if dep.status in TERMINAL:
                # Cancelled before it began: the release ends here, and gives the app's turn on.
                self._give_turn_on(session, app.id)
            previous = active_deployment(session, app.id)
            replicas = dep.replicas if dep.replicas is not None else app.replicas
            build = None
            if app.source_type in BUILT and not dep.image_ref:
                build = self._build_plan(session, app, dep)
            return DeploymentPlan(
                deployment_id=dep.id,
                app_id=app.id,
                project_id=app.project_id,
                operation=dep.operation,
                status=dep.status,
                stuck_seconds=self.settings.rollout_stuck_seconds,
                release_timeout_seconds=self.settings.release_timeout_seconds,
                image=dep.image,
                image_ref=dep.image_ref,
                spec=release_spec(app, project, dep, self.settings, replicas),
                previous=release_spec(app, project, previous, self.settings, replicas) if previous else None,
                build=build,
                # Kept by a retry or a workflow Reset: started_at is written once.
                deadline=self._deadline(app, dep, build),
            )

    @staticmethod
    def _take_running_image(session: Session, dep: Deployment) -> None:
        """A config change runs the image that is active when it starts: a
        deploy or revert queued before it may have replaced the one it saw."""
        running = active_deployment(session, dep.app_id)
        if running is not None and running.id != dep.image_from and running.image_ref:
            dep.image, dep.image_ref, dep.image_digest = running.image, running.image_ref, running.image_digest
            dep.source_commit, dep.image_from, dep.procfile = running.source_commit, running.id, running.procfile

    @staticmethod
    def _overtaken_by(session: Session, dep: Deployment) -> Deployment | None:
        return session.scalars(
            select(Deployment).where(
                Deployment.app_id == dep.app_id,
                Deployment.number > dep.number,
                Deployment.status.in_(ONCE_RAN),
            )
        ).first()

    def _build_plan(self, session: Session, app: App, dep: Deployment) -> BuildPlan:
        build = session.get(Build, dep.build_id) if dep.build_id else None
        if build is None:
            build_id = dep.build_id or new_id("bld")
            build = Build(
                id=build_id,
                app_id=app.id,
                deployment_id=dep.id,
                source_type=app.source_type,
                status=BuildStatus.PENDING,
                created_at=utcnow(),
            )
            session.add(build)
            dep.build_id = build.id
        return BuildPlan(
            build_id=build.id,
            source_type=app.source_type,
            repo_url=app.repo_url,
            branch=app.repo_branch or "main",
            commit=dep.source_commit,
            upload_path=build.upload_path,
            source_ref=build.source_ref,
            build_command=app.build_command,
            timeout_seconds=self.settings.build_timeout_seconds,
        )

    @activity.defn(name="record_image_digest")
    def record_image_digest(self, request: RecordImageInput) -> None:
        with session_scope(self.url) as session:
            dep = self._deployment(session, request.deployment_id)
            dep.image_ref = request.image_ref
            dep.image_digest = request.image_digest

    @activity.defn(name="finish_deployment")
    def finish_deployment(self, request: FinishDeploymentInput) -> str:
        with session_scope(self.url) as session:
            dep = self._deployment(session, request.deployment_id)
            # The release's last step: the app's next operation may begin.
            self._give_turn_on(session, dep.app_id)
            if request.image_ref and not dep.image_ref:
                dep.image_ref, dep.image_digest = request.image_ref, request.image_digest
            if dep.status in TERMINAL:
                return dep.status
            app = dep.app
            now = utcnow()
            dep.finished_at = now
            dep.progress = request.steps
            if request.status == DeploymentStatus.ACTIVE:
                previous = active_deployment(session, app.id)
                if previous is not None and previous.id != dep.id:
                    previous.status = DeploymentStatus.SUPERSEDED
                dep.status = DeploymentStatus.ACTIVE
                _set_status(app, AppStatus.RUNNING)
                app.running_image = dep.image_ref
                app.last_deploy_at = now
                details = VERBS.get(dep.operation, VERBS[OperationKind.DEPLOY]).format(
                    image=dep.image_ref or dep.image, rollback_of=dep.rollback_of
                )
                add_audit(session, app, dep.operation, dep.created_by, f"{details} (v{dep.number})", dep.id, operation_key())
            else:
                dep.status = request.status
                dep.reason = request.reason
                still_serving = active_deployment(session, app.id) is not None
                failed = request.status == DeploymentStatus.FAILED
                _set_status(app, AppStatus.RUNNING if still_serving else (AppStatus.FAILED if failed else AppStatus.STOPPED))
                word = "failed" if failed else "was cancelled"
                add_audit(
                    session,
                    app,
                    f"{dep.operation}_{request.status}",
                    request.user if request.status == DeploymentStatus.CANCELLED else dep.created_by,
                    f"Deployment v{dep.number} {word}: {request.reason or 'no reason given'}",
                    dep.id,
                    operation_key(),
                )
            return dep.status

    @activity.defn(name="load_app_target")
    def load_app_target(self, request: AppTargetInput) -> AppTarget | None:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return None
            project = session.get_one(Project, app.project_id)
            return AppTarget(
                app_id=app.id,
                project_id=app.project_id,
                name=app.name,
                slug=app.slug,
                namespace=project.namespace,
                progress_deadline_seconds=app.progress_deadline_seconds,
                replicas=app.replicas,
                delete_timeout_seconds=self.settings.delete_timeout_seconds,
                processes={name: p.replicas for name, p in (Workload.of(app.workload).processes or {}).items()},
            )

    @activity.defn(name="app_being_deleted")
    def app_being_deleted(self, request: AppTargetInput) -> bool:
        """Whether a DELETE of the app was asked for (or it is gone): then a
        release it cancelled has nothing left to restore."""
        with read_scope(self.url) as session:
            app = session.get(App, request.app_id)
            return app is None or app.status in (AppStatus.DELETING, AppStatus.DELETE_FAILED)

    @activity.defn(name="record_scale")
    def record_scale(self, request: ScaleRecordInput) -> None:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return
            self._give_turn_on(session, app.id)
            of = f" {request.process}" if request.process else ""
            if request.outcome == "done":
                add_audit(
                    session,
                    app,
                    "scale",
                    request.user,
                    f"Scaled{of} from {request.previous_replicas} to {request.replicas} replicas",
                    operation_key=operation_key(),
                )
            else:
                add_audit(
                    session,
                    app,
                    "scale_failed",
                    request.user,
                    f"Scaling{of} to {request.replicas} replicas did not finish: {request.reason}",
                    operation_key=operation_key(),
                )

    @activity.defn(name="record_delete_failed")
    def record_delete_failed(self, request: DeleteFailedInput) -> bool:
        """Leave the app where DELETE can be tried again, saying why this attempt failed."""
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is not None:
                self._give_turn_on(session, app.id)
            if app is None or app.status != AppStatus.DELETING or delete_workflow_id(app.id, app.delete_attempts) != request.workflow_id:
                # Gone, recorded already, or a newer attempt runs: nothing to say.
                return False
            app.status, app.status_reason = AppStatus.DELETE_FAILED, request.reason
            add_audit(session, app, "delete_failed", request.user, f"Deleting {app.name} failed: {request.reason}")
            return True

    @activity.defn(name="remove_app")
    def remove_app(self, request: RemoveAppInput) -> bool:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return False
            add_audit(
                session, app, "delete", request.user, f"Deleted app {app.name} and its Kubernetes resources", operation_key=operation_key()
            )
            session.execute(delete(Deployment).where(Deployment.app_id == app.id))
            session.execute(delete(JobRun).where(JobRun.app_id == app.id))
            session.delete(app)
            return True
