"""What the apps routes do. Each mutation runs in the request's transaction
(`Mutation.run`, api/unit_of_work.py) as `service(session, caller, ...)`:
it checks the request against the app, writes the rows, and answers with
the operations it queues for the app.

What a PATCH means is decided by `conveyor.domain.planning.plan_update` (pure);
what a release deploys, by api/services/releases.py."""

from __future__ import annotations

from typing import Any, cast

from fastapi import HTTPException
from sqlalchemy import CursorResult, select
from sqlalchemy import update as update_rows
from sqlalchemy.orm import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Caller, TemporalConnector
from api.schemas import AppCreate, AppPublic, DeploymentPublic, env_problem, slugify
from api.serializers import app_public
from api.services.releases import (
    Release,
    ReleaseSource,
    deployment_operation,
    image_of,
    new_deployment,
    new_upload_build,
    release,
    running_release,
    source_release,
)
from api.templates import catalogue
from api.unit_of_work import Answer
from conveyor.builds import sources
from conveyor.clients import outbound
from conveyor.clients.db.models import App, AppDomain, Deployment, Handoff, Project
from conveyor.clients.db.queries import active_deployment, add_audit, delete_workflow_id, in_flight
from conveyor.domain import egress, images, manifests
from conveyor.domain.domains import under
from conveyor.domain.ids import iso, new_id, utcnow
from conveyor.domain.payloads import Operation
from conveyor.domain.planning import AppFacts, ImageSource, plan_update
from conveyor.domain.vocabulary import NOT_STARTED, AppStatus, DeploymentStatus, OperationKind
from conveyor.domain.workload import WEB, Demand, Workload, above_default_limits, cpu_request, over_quota
from conveyor.settings import Settings
from workflows.lane import lane_id


def unprocessable(field: str, message: str, where: str = "body") -> HTTPException:
    """A 422 as the validation errors look: `resources.cpu` is ["body", "resources", "cpu"]."""
    return HTTPException(422, [{"loc": [where, *field.split(".")], "msg": message, "type": "value_error"}])


def load_app(session: Session, caller: Caller, app_id: str, lock: bool = False) -> App:
    """The caller's app; `lock` (in a write transaction) holds its row until the
    commit, so concurrent changes of one app take turns on PostgreSQL as they
    do on SQLite (where a writer holds the database)."""
    app = session.get(App, app_id, with_for_update=lock)
    # Another project's app is indistinguishable from a missing one.
    if app is None or app.project_id != caller.project_id:
        raise HTTPException(404, "app not found")
    return app


def mutable(app: App) -> None:
    if app.status == AppStatus.DELETING:
        raise HTTPException(409, f"app {app.id} is being deleted; nothing else can change until that ends")
    if app.status == AppStatus.DELETE_FAILED:
        raise HTTPException(
            409, f"deleting app {app.id} failed (see status_reason); DELETE it again, nothing else can change"
        )


def check_project_limits(
    session: Session, settings: Settings, project_id: str, app_id: str | None, replicas: int, workload: Workload, before: list[Demand] | None = None
) -> None:
    """Refuse, with a 422 naming the limit, replicas or resources that the
    project's ceilings and quota would not hold beside its other apps (with
    room for this app's rollout surge), before anything is written. The
    project's row stays locked until the commit, so concurrent changes of
    one project's apps are checked one after another."""
    project = session.get(Project, project_id, with_for_update=True)
    limits = settings.project_limits(project.limits if project is not None else None)
    demands: list[Demand] = []
    # The other apps' demands count only against a quota: without one, a
    # create does not read every app of the project (in a burst of 200
    # creates, this and check_processes took a quarter of the API's time).
    if limits.has_quota():
        others = select(App.replicas, App.workload).where(App.project_id == project_id)
        if app_id is not None:
            others = others.where(App.id != app_id)
        demands = [demand for row in session.execute(others) for demand in Workload.of(row.workload).demands(row.replicas)]
    parts = [("", workload.resources, workload.autoscaling)]
    parts += [(f"processes.{name}.", p.resources, p.autoscaling) for name, p in sorted((workload.processes or {}).items())]
    for prefix, resources, _scaling in parts:
        if (problem := above_default_limits(limits, resources, prefix)) is not None:
            raise unprocessable(*problem)
    if (problem := over_quota(limits, workload.demands(replicas), demands, before)) is not None:
        raise unprocessable(*problem)
    for prefix, resources, scaling in parts:
        if scaling is not None and cpu_request(resources, limits) is None:
            raise unprocessable(
                f"{prefix}autoscaling", f"needs a CPU request to scale on: set {prefix}resources.cpu (or the project's default_cpu)"
            )


def check_change_fits(session: Session, settings: Settings, app: App, replicas: int, workload: Workload) -> None:
    """`check_project_limits` for a change of an existing app to `replicas`
    and `workload`, when it changes what the app asks of its project (any
    process's count, resources or autoscaling); a change that asks no more passes."""
    now = Workload.of(app.workload)
    if replicas != app.replicas or workload.demands(replicas) != now.demands(replicas):
        check_project_limits(session, settings, app.project_id, app.id, replicas, workload, now.demands(app.replicas))


def check_processes(session: Session, app: App, workload: Workload) -> None:
    """An image app's processes need a command (a git or upload app's may
    come from its Procfile), and no process's Deployment `<slug>-<process>`
    may be another app's of the project (the other's name or process)."""
    names = sorted(workload.processes or {})
    if app.source_type == "image":
        for name in names:
            if (workload.processes or {})[name].command is None:
                raise unprocessable(f"processes.{name}.command", "is required: an image app has no Procfile to take it from")
    mine = {manifests.deployment_name(app.slug, name): name for name in names}
    others = session.execute(select(App.id, App.slug, App.workload).where(App.project_id == app.project_id, App.id != app.id))
    for other in others:
        # Only the names of its processes: the stored workload's keys, without a model of it per app.
        theirs = {other.slug} | {manifests.deployment_name(other.slug, n) for n in Workload.process_names(other.workload)}
        if app.slug in theirs:
            raise HTTPException(409, f"another app of this project runs a Deployment named {app.slug}: choose another name")
        if clash := sorted(set(mine) & theirs):
            raise HTTPException(409, f"the Deployment of process {mine[clash[0]]}, {clash[0]}, would be another app's of this project: rename the process")


# A domain is claimed in the transaction that sets the app's `domains`
# (create, PATCH, revert): a row of `app_domains`, whose primary key is the
# domain, so two requests racing for one domain cannot both win (the second
# gets a 409). The claim goes when the app drops the domain or is deleted.


def _taken(session: Session, app: App, names: list[str]) -> str | None:
    """The first of `names` another app has claimed, as the 409 says it (by position)."""
    if not names:
        return None
    others = set(session.scalars(select(AppDomain.domain).where(AppDomain.domain.in_(names), AppDomain.app_id != app.id)))
    for position, name in enumerate(names, start=1):
        if name in others:
            return f"domain #{position} of `domains` is already used by another app (of this or another project): each domain belongs to one app"
    return None


def claim_domains(session: Session, settings: Settings, app: App, workload: Workload) -> None:
    """Make the app's claims what `workload` names: refuse (422) a domain of
    the platform's base domain and (409) one another app holds; release the
    ones dropped. The flush inserts the new claims, so a concurrent claim of
    the same domain fails here or at the commit (a 409 either way)."""
    names = workload.domains or []
    for position, name in enumerate(names, start=1):
        if under(name, settings.base_domain):
            raise unprocessable(
                "domains", f"domain #{position} is under the platform's base domain {settings.base_domain}: every app has <slug>.{settings.base_domain} already"
            )
    if (problem := _taken(session, app, names)) is not None:
        raise HTTPException(409, problem)
    held = {row.domain: row for row in session.scalars(select(AppDomain).where(AppDomain.app_id == app.id))}
    for name, row in held.items():
        if name not in names:
            # Its uploaded certificate stays (the release removes its Secret):
            # a revert that brings the domain back serves it with TLS again.
            # `DELETE …/domains/{domain}/certificate` discards it.
            session.delete(row)
    for name in names:
        if name not in held:
            session.add(AppDomain(domain=name, app_id=app.id, project_id=app.project_id, created_at=utcnow()))
    session.flush()


def check_domains_free(session: Session, app: App, workload: Workload) -> None:
    """A retry renders its deployment's domains: none may be another app's now."""
    if (problem := _taken(session, app, workload.domains or [])) is not None:
        raise HTTPException(409, problem)


def check_repo_url(settings: Settings, url: str | None) -> None:
    if url is None:
        return
    try:
        sources.check_repo_url(url, settings.repo_schemes)
    except sources.UnsafeSource as exc:
        raise unprocessable("repo_url", str(exc)) from exc


def check_outbound(settings: Settings, image_url: str | None, repo_url: str | None) -> None:
    """The egress policy where the name is given: an image's registry or a git
    host that is an address Conveyor does not connect to (an IP literal in a
    loopback, private, shared or link-local range, or a `localhost` name) is
    a 422 naming the field. Names are resolved, and checked again, by the
    worker when it connects. Blocking (reads the CA directories)."""
    if image_url is None and repo_url is None:
        return
    policy = outbound.policy(settings)
    try:
        if image_url is not None:
            registry = images.parse(image_url).registry
            host, port = egress.split_host_port(registry)
            try:
                policy.check_named(egress.Purpose.REGISTRY, host, port)
            except egress.OutboundRefused as exc:
                raise unprocessable("image_url", f"the registry {exc}") from None
        if repo_url is not None and (where := egress.repo_host(repo_url)) is not None:
            try:
                policy.check_named(egress.Purpose.GIT, *where)
            except egress.OutboundRefused as exc:
                raise unprocessable("repo_url", f"the git host {exc}") from None
    except images.InvalidImageReference:
        return  # the schema refused it already


def workload_of(body: AppCreate) -> Workload:
    return Workload(**{name: getattr(body, name) for name in Workload.FIELDS})


def with_template(settings: Settings, body: AppCreate) -> AppCreate:
    """The request with its template's values filled in; fields given explicitly win."""
    check_repo_url(settings, body.repo_url)
    if body.template_id is None:
        return body
    template = catalogue().get(body.template_id)
    if template is None:
        raise unprocessable("template_id", "not a template of the catalogue; GET /api/v1/templates lists them")
    given = body.model_fields_set
    body = body.model_copy(
        update={
            "image_url": body.image_url if "image_url" in given else template.image_url,
            "port": body.port if "port" in given else template.port,
            "replicas": body.replicas if "replicas" in given else template.replicas,
            "env": {**template.env, **body.env},
            **{name: getattr(template, name) for name in ("processes", "resources", "healthcheck") if name not in given},
        }
    )
    return body


def create(session: Session, caller: Caller, settings: Settings, body: AppCreate) -> Answer[AppPublic]:
    """A new app (201); image and git apps' first deployment is queued with it."""
    slug = slugify(body.name)
    taken = session.scalars(select(App).where(App.project_id == caller.project_id, (App.name == body.name) | (App.slug == slug))).first()
    if taken is not None:
        raise HTTPException(409, f"an app named {taken.name!r} (slug {taken.slug}) already exists in this project")
    check_project_limits(session, settings, caller.project_id, None, body.replicas, workload_of(body))
    now = utcnow()
    app = App(
        id=new_id("app"),
        project_id=caller.project_id,
        name=body.name,
        slug=slug,
        source_type=body.source_type,
        image_url=body.image_url,
        repo_url=body.repo_url,
        repo_branch=body.repo_branch or ("main" if body.source_type == "git" else None),
        build_command=body.build_command,
        port=body.port,
        replicas=body.replicas,
        env=dict(body.env),
        workload=workload_of(body).stored(),
        progress_deadline_seconds=body.progress_deadline_seconds or settings.default_progress_deadline_seconds,
        status=AppStatus.CREATED if body.source_type == "upload" else AppStatus.DEPLOYING,
        created_at=now,
        updated_at=now,
    )
    check_processes(session, app, workload_of(body))
    session.add(app)
    session.flush()
    claim_domains(session, settings, app, workload_of(body))
    add_audit(session, app, "create", caller.name, f"Created app {app.name} ({app.source_type})")
    operations = []
    if app.source_type != "upload":
        source = source_release(session, app)
        assert source is not None, "image and git apps always have a source"
        dep = new_deployment(session, caller, app, Release.of_app(OperationKind.DEPLOY, source, app))
        operations.append(deployment_operation(caller, app, dep))
    return Answer(201, app_public(app), operations)


def update(session: Session, caller: Caller, settings: Settings, app_id: str, given: dict[str, Any]) -> Answer[AppPublic]:
    """A release, a scale, a recorded setting or nothing, as `plan_update` decides:
    202 when an operation was queued, else 200."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    if given.get("image_url") is not None and app.source_type != "image":
        raise unprocessable("image_url", f"only image apps have one; this app builds from {app.source_type} sources")
    current = active_deployment(session, app.id)
    facts = AppFacts(
        image_url=app.image_url,
        port=app.port,
        replicas=app.replicas,
        env=dict(app.env),
        runs_pinned_image=current is not None and bool(current.image_ref),
        workload=Workload.of(app.workload),
    )
    plan = plan_update(facts, given)
    workload = Workload.of(plan.changes["workload"]) if "workload" in plan.changes else facts.workload
    replicas = plan.scale[1] if plan.scale is not None else app.replicas
    check_change_fits(session, settings, app, replicas, workload)
    if "processes" in given:
        check_processes(session, app, workload)
    if "domains" in given:
        claim_domains(session, settings, app, workload)
    # Each patch is checked on its own; the merged env must hold the limits too.
    if (problem := env_problem(plan.changes["env"])) is not None:
        raise unprocessable("env", problem)
    for name, value in plan.changes.items():
        setattr(app, name, value)
    app.updated_at = utcnow()
    source: ReleaseSource | None = None
    if plan.release_from is ImageSource.RUNNING and current is not None:
        source = running_release(current)
    elif plan.release_from is ImageSource.SOURCE:
        source = source_release(session, app)
    operations: list[Operation] = []
    if source is not None:
        add_audit(session, app, "update", caller.name, plan.release_summary)
        dep = new_deployment(session, caller, app, Release.of_app(OperationKind.UPDATE, source, app))
        operations.append(deployment_operation(caller, app, dep))
    elif plan.release_from is not None or plan.recorded:
        add_audit(session, app, "update", caller.name, f"Changed {', '.join(plan.recorded)}")
    if not operations:
        counts = [(WEB, *plan.scale)] if plan.scale is not None else []
        for process, previous, replicas in counts + list(plan.process_scales):
            if workload.autoscaling_of(process) is not None:
                # The autoscaler owns the live count: replicas is only where a new Deployment starts.
                add_audit(session, app, "update", caller.name, f"Changed the starting count{'' if process == WEB else ' of ' + process} to {replicas} (autoscaling is on)")
                continue
            operations.append(
                Operation(
                    kind=OperationKind.SCALE,
                    app_id=app.id,
                    project_id=app.project_id,
                    workflow_id=f"scale-{app.id}-{new_id('op')}",
                    summary=f"scale {app.name}{'' if process == WEB else ' ' + process} {previous} → {replicas}",
                    replicas=replicas,
                    previous_replicas=previous,
                    user=caller.name,
                    process=None if process == WEB else process,
                )
            )
    session.flush()
    return Answer(202 if operations else 200, app_public(app), operations)


def delete_state(session: Session, caller: Caller, app_id: str) -> tuple[str, int, bool]:
    """The app's status, its delete attempt, and whether that attempt still waits for its hand-off."""
    app = load_app(session, caller, app_id)
    waiting = session.get(Handoff, delete_workflow_id(app.id, app.delete_attempts)) is not None
    return app.status, app.delete_attempts, waiting


async def delete_attempt_over(temporal: TemporalConnector, app_id: str, attempt: int) -> bool:
    """Whether the delete attempt's workflow has ended without deleting the app
    (terminated, timed out, or failed before it could say so): then DELETE
    starts a new attempt. When Temporal cannot tell, the attempt is still on."""
    try:
        client = await temporal.client()
        try:
            described = await client.get_workflow_handle(delete_workflow_id(app_id, attempt)).describe()
            return described.status != WorkflowExecutionStatus.RUNNING
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        # Not started: the app's lane holds it while earlier operations run.
        lane = await client.get_workflow_handle(lane_id(app_id)).describe()
        return lane.status != WorkflowExecutionStatus.RUNNING
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True
        return False
    except Exception:  # noqa: BLE001 - Temporal away: do not start a second attempt blind
        return False


def delete(session: Session, caller: Caller, app_id: str, ended_attempt: int | None) -> Answer[AppPublic]:
    """Mark the app `deleting` and queue its delete (202); a repeat while the
    attempt runs changes nothing, unless that attempt (`ended_attempt`) ended without a word."""
    app = load_app(session, caller, app_id, lock=True)
    operations = []
    if app.status != AppStatus.DELETING or app.delete_attempts == ended_attempt:
        app.delete_attempts = (app.delete_attempts or 0) + 1
        again = f" (attempt {app.delete_attempts})" if app.delete_attempts > 1 else ""
        app.status, app.status_reason = AppStatus.DELETING, None
        superseded = supersede_for_delete(session, app, caller)
        add_audit(session, app, "delete_requested", caller.name, f"Requested deletion of {app.name}{again}{superseded}")
        operations.append(
            Operation(
                kind=OperationKind.DELETE,
                app_id=app.id,
                project_id=app.project_id,
                workflow_id=delete_workflow_id(app.id, app.delete_attempts),
                summary=f"delete {app.name} and its Kubernetes objects{again}",
                user=caller.name,
            )
        )
    session.flush()
    return Answer(202, app_public(app), operations)


def supersede_for_delete(session: Session, app: App, caller: Caller) -> str:
    """A delete supersedes what the app still had to do: its deployments not
    started yet are cancelled here, and the lane cancels the one running when
    the delete reaches it (restoring nothing). What the audit entry adds."""
    waiting, running = [], []
    for dep in in_flight(session, app.id):
        # Only if it has not started meanwhile (its workflow claims it the same way).
        claim = (
            update_rows(Deployment)
            .where(Deployment.id == dep.id, Deployment.status.in_(NOT_STARTED))
            .values(status=DeploymentStatus.CANCELLED, reason=f"cancelled before it started: {caller.name} deleted the app", finished_at=utcnow())
        )
        if cast(CursorResult[Any], session.execute(claim)).rowcount:
            waiting.append(f"v{dep.number} ({dep.id})")
        else:
            running.append(f"v{dep.number} ({dep.id}, {dep.status})")
    said = []
    if running:
        said.append(f"cancelling {', '.join(running)}")
    if waiting:
        said.append(f"cancelled {', '.join(waiting)}")
    return f"; {'; '.join(said)}" if said else ""


def deploy(session: Session, caller: Caller, app_id: str) -> Answer[DeploymentPublic]:
    """A deployment of the app's source: its tag resolved again, its branch head or latest upload built."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    source = source_release(session, app)
    if source is None:
        raise HTTPException(409, f"app {app.id} has no uploaded source yet: POST a tarball to /apps/{app.id}/build")
    return release(session, caller, app, Release.of_app(OperationKind.DEPLOY, source, app))


def restart(session: Session, caller: Caller, app_id: str) -> Answer[DeploymentPublic]:
    """A rolling restart of the active release: its image, env and port."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    current = active_deployment(session, app.id)
    if current is None:
        raise HTTPException(409, f"app {app.id} has no active deployment to restart")
    return release(
        session,
        caller,
        app,
        Release.of_deployment(OperationKind.RESTART, image_of(current), current, restarted_at=iso(utcnow())),
    )


def deploy_upload(session: Session, caller: Caller, app_id: str, source_ref: str) -> Answer[DeploymentPublic]:
    """Build the uploaded source (stored at `source_ref`) and deploy it."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    build = new_upload_build(session, app, source_ref)
    return release(session, caller, app, Release.of_app(OperationKind.DEPLOY, ReleaseSource(build_id=build.id), app))
