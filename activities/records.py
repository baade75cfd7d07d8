"""Database side effects of the workflows: each call is one transaction and
safe to run twice (a repeated call finds the state already written)."""

from __future__ import annotations

from sqlalchemy import delete, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.db.models import App, Build, Deployment, Project
from conveyor.db.records import TERMINAL, active_deployment, add_audit
from conveyor.db.session import session_scope
from conveyor.ids import new_id, utcnow
from conveyor.payloads import (
    AppTarget,
    AppTargetInput,
    BeginDeploymentInput,
    BuildPlan,
    DeploymentPlan,
    FinishDeploymentInput,
    RecordImageInput,
    ReleaseSpec,
    RemoveAppInput,
    ScaleRecordInput,
)
from conveyor.settings import Settings

VERBS = {
    "deploy": "Deployed image {image}",
    "update": "Deployed configuration change with image {image}",
    "restart": "Restarted all pods of {image}",
    "rollback": "Rolled back to deployment {rollback_of} (image {image})",
}


def release_spec(app: App, project: Project, dep: Deployment, settings: Settings, replicas: int) -> ReleaseSpec:
    return ReleaseSpec(
        app_id=app.id,
        project_id=app.project_id,
        deployment_id=dep.id,
        name=app.name,
        slug=app.slug,
        namespace=project.namespace,
        image_ref=dep.image_ref or "",
        port=dep.port,
        replicas=replicas,
        env=dict(dep.env or {}),
        progress_deadline_seconds=app.progress_deadline_seconds,
        base_domain=settings.base_domain,
        restarted_at=dep.restarted_at,
    )


class RecordActivities:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.effective_database_url

    def _deployment(self, session, deployment_id: str) -> Deployment:
        dep = session.get(Deployment, deployment_id)
        if dep is None:
            # The API commits right after starting the workflow: retry.
            raise ApplicationError(f"deployment {deployment_id} is not recorded yet")
        return dep

    @activity.defn(name="begin_deployment")
    def begin_deployment(self, request: BeginDeploymentInput) -> DeploymentPlan:
        with session_scope(self.url) as session:
            dep = self._deployment(session, request.deployment_id)
            app = dep.app
            project = session.get(Project, app.project_id)
            overtaken = self._overtaken_by(session, dep)
            if dep.status in ("queued", "pending") and overtaken is not None:
                # Handed to the lane after a later request that has rolled out
                # already (two API replicas, or a hand-off retried after a
                # crash): running it now would put older code back.
                dep.status, dep.finished_at = "cancelled", utcnow()
                dep.reason = f"deployment v{overtaken.number}, requested later, was rolled out first"
                add_audit(session, app, f"{dep.operation}_cancelled", "system", f"Skipped deployment v{dep.number}: {dep.reason}", dep.id)
            if dep.status in ("queued", "pending"):
                dep.status = "deploying"
                dep.started_at = utcnow()
                # Scaling is not a release: every release runs at the app's current size.
                dep.replicas = app.replicas
            previous = active_deployment(session, app.id)
            replicas = dep.replicas if dep.replicas is not None else app.replicas
            build = None
            if app.source_type in ("git", "upload") and not dep.image_ref:
                build = self._build_plan(session, app, dep)
            return DeploymentPlan(
                deployment_id=dep.id,
                app_id=app.id,
                project_id=app.project_id,
                operation=dep.operation,
                status=dep.status,
                stuck_seconds=self.settings.rollout_stuck_seconds,
                image=dep.image,
                image_ref=dep.image_ref,
                spec=release_spec(app, project, dep, self.settings, replicas),
                previous=release_spec(app, project, previous, self.settings, replicas) if previous else None,
                build=build,
            )

    @staticmethod
    def _overtaken_by(session, dep: Deployment) -> Deployment | None:
        return session.scalars(
            select(Deployment).where(
                Deployment.app_id == dep.app_id,
                Deployment.number > dep.number,
                Deployment.status.in_(("active", "superseded")),
            )
        ).first()

    def _build_plan(self, session, app: App, dep: Deployment) -> BuildPlan:
        build = session.get(Build, dep.build_id) if dep.build_id else None
        if build is None:
            build_id = dep.build_id or new_id("bld")
            build = Build(
                id=build_id,
                app_id=app.id,
                deployment_id=dep.id,
                source_type=app.source_type,
                status="pending",
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
            if request.image_ref and not dep.image_ref:
                dep.image_ref, dep.image_digest = request.image_ref, request.image_digest
            if dep.status in TERMINAL:
                return dep.status
            app = dep.app
            now = utcnow()
            dep.finished_at = now
            if request.status == "active":
                previous = active_deployment(session, app.id)
                if previous is not None and previous.id != dep.id:
                    previous.status = "superseded"
                dep.status = "active"
                app.status = "running"
                app.last_deploy_at = now
                details = VERBS.get(dep.operation, VERBS["deploy"]).format(
                    image=dep.image_ref or dep.image, rollback_of=dep.rollback_of
                )
                add_audit(session, app, dep.operation, dep.created_by, f"{details} (v{dep.number})", dep.id)
            else:
                dep.status = request.status
                dep.reason = request.reason
                still_serving = active_deployment(session, app.id) is not None
                app.status = "running" if still_serving else ("failed" if request.status == "failed" else "stopped")
                word = "failed" if request.status == "failed" else "was cancelled"
                add_audit(
                    session,
                    app,
                    f"{dep.operation}_{request.status}",
                    request.user if request.status == "cancelled" else dep.created_by,
                    f"Deployment v{dep.number} {word}: {request.reason or 'no reason given'}",
                    dep.id,
                )
            return dep.status

    @activity.defn(name="load_app_target")
    def load_app_target(self, request: AppTargetInput) -> AppTarget | None:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return None
            project = session.get(Project, app.project_id)
            return AppTarget(
                app_id=app.id,
                project_id=app.project_id,
                name=app.name,
                slug=app.slug,
                namespace=project.namespace,
                progress_deadline_seconds=app.progress_deadline_seconds,
                replicas=app.replicas,
            )

    @activity.defn(name="record_scale")
    def record_scale(self, request: ScaleRecordInput) -> None:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return
            if request.outcome == "done":
                add_audit(
                    session, app, "scale", request.user, f"Scaled from {request.previous_replicas} to {request.replicas} replicas"
                )
            else:
                add_audit(
                    session,
                    app,
                    "scale_failed",
                    request.user,
                    f"Scaling to {request.replicas} replicas did not finish: {request.reason}",
                )

    @activity.defn(name="remove_app")
    def remove_app(self, request: RemoveAppInput) -> bool:
        with session_scope(self.url) as session:
            app = session.get(App, request.app_id)
            if app is None:
                return False
            add_audit(session, app, "delete", request.user, f"Deleted app {app.name} and its Kubernetes resources")
            session.execute(delete(Deployment).where(Deployment.app_id == app.id))
            session.delete(app)
            return True
