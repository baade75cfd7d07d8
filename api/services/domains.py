"""Custom domains' certificates: uploads (checked, the key sealed with the
payload keyring), their removal, and each domain's certificate state as the
database and the cluster tell it. The claims that keep a domain to one app
are `claim_domains` in api/services/apps.py, with the other rules of an app's fields."""

from __future__ import annotations

from datetime import UTC
from typing import Any, cast

from fastapi import HTTPException
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from sqlalchemy.orm import Session

from api.deps import Caller
from api.schemas import AppDomainsPublic, CertificateState, CertificateUpload, DomainPublic
from api.services.apps import load_app, mutable, unprocessable
from api.services.releases import Release, deployment_operation, new_deployment, running_release
from api.unit_of_work import Answer
from conveyor.clients.db.models import App, AppCertificate, Project
from conveyor.clients.db.queries import active_deployment, add_audit
from conveyor.clients.db.session import read_scope
from conveyor.clients.kubernetes import api_client
from conveyor.clients.payload_codec import Keyring, seal
from conveyor.domain import certificates
from conveyor.domain.domains import tls_secret_name
from conveyor.domain.ids import iso, utcnow
from conveyor.domain.payloads import Operation
from conveyor.domain.vocabulary import OperationKind
from conveyor.domain.workload import Workload
from conveyor.settings import Settings

CERT_MANAGER_GROUP, CERT_MANAGER_VERSION = "cert-manager.io", "v1"


def _uploaded(row: AppCertificate, slug: str) -> CertificateState:
    expires = row.not_after if row.not_after.tzinfo is not None else row.not_after.replace(tzinfo=UTC)
    return CertificateState(
        source="uploaded",
        state="uploaded" if expires > utcnow() else "expired",
        secret_name=tls_secret_name(slug, row.domain),
        expires_at=iso(row.not_after),
        names=list(row.names),
        issuer=row.issuer,
        fingerprint=row.fingerprint,
        uploaded_at=iso(row.uploaded_at),
        uploaded_by=row.uploaded_by,
    )


def _app_domain(app: App, domain: str) -> str:
    """`domain` if it is one of the app's domains (404 otherwise, without repeating it)."""
    if domain not in (Workload.of(app.workload).domains or []):
        raise HTTPException(404, "domain not found: it is not one of this app's domains (PATCH the app's domains first)")
    return domain


def _release(session: Session, caller: Caller, app: App, what: str) -> tuple[str | None, list[Operation]]:
    """A release of the image that runs now, which writes (or removes) the
    certificate's Secret; none when nothing runs yet (the first release will)."""
    current = active_deployment(session, app.id)
    if current is None:
        return None, []
    dep = new_deployment(session, caller, app, Release.of_app(OperationKind.UPDATE, running_release(current), app))
    add_audit(session, app, "update", caller.name, f"Changed {what}")
    return dep.id, [deployment_operation(caller, app, dep)]


def put_certificate(
    session: Session, caller: Caller, keyring: Keyring, app_id: str, domain: str, body: CertificateUpload
) -> Answer[DomainPublic]:
    """Check and store an uploaded certificate for one of the app's domains
    (the key sealed with the payload keyring), then release it: 202 with the
    release, or 200 when nothing runs yet."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    _app_domain(app, domain)
    try:
        checked = certificates.check(body.certificate, body.key, domain, utcnow())
    except certificates.CertificateProblem as problem:
        raise unprocessable(problem.field, problem.message) from None
    row = session.get(AppCertificate, (app.id, domain))
    if row is None:
        row = AppCertificate(app_id=app.id, domain=domain)
        session.add(row)
    row.certificate = checked.chain_pem
    row.key_sealed = seal(keyring, checked.key_pem.encode(), certificates.certificate_context(app.id, domain))
    row.names, row.issuer, row.fingerprint, row.not_after = checked.names, checked.issuer, checked.fingerprint, checked.not_after
    row.uploaded_by, row.uploaded_at = caller.name, utcnow()
    expires = iso(checked.not_after)
    add_audit(session, app, "certificate_uploaded", caller.name, f"Uploaded a certificate for {domain} (expires {expires}, sha256 {checked.fingerprint[:16]}…)")
    session.flush()
    deployment_id, operations = _release(session, caller, app, f"certificate of {domain}")
    return Answer(202 if operations else 200, DomainPublic(domain=domain, certificate=_uploaded(row, app.slug), deployment_id=deployment_id), operations)


def delete_certificate(session: Session, caller: Caller, settings: Settings, app_id: str, domain: str) -> Answer[DomainPublic]:
    """Remove a domain's uploaded certificate; the release removes its Secret."""
    app = load_app(session, caller, app_id, lock=True)
    mutable(app)
    _app_domain(app, domain)
    row = session.get(AppCertificate, (app.id, domain))
    if row is None:
        raise HTTPException(404, "this domain has no uploaded certificate")
    session.delete(row)
    add_audit(session, app, "certificate_deleted", caller.name, f"Deleted the uploaded certificate of {domain}")
    session.flush()
    deployment_id, operations = _release(session, caller, app, f"no certificate for {domain}")
    state = _issued_pending(settings, app.slug, domain) if settings.tls_cluster_issuer else CertificateState(source="none", state="none")
    return Answer(202 if operations else 200, DomainPublic(domain=domain, certificate=state, deployment_id=deployment_id), operations)


def _issued_pending(settings: Settings, slug: str, domain: str, message: str | None = None) -> CertificateState:
    return CertificateState(
        source="cert-manager", state="pending", secret_name=tls_secret_name(slug, domain), issuer=settings.tls_cluster_issuer, message=message
    )


def _issued(settings: Settings, namespace: str, slug: str, domain: str) -> CertificateState:
    """cert-manager's Certificate for the domain (named after its Secret, as
    cert-manager's ingress-shim names it): ready with its expiry, issuing, or
    pending while there is none (or no cert-manager: no such resource)."""
    name = tls_secret_name(slug, domain)
    try:
        found = cast(
            dict[str, Any],
            k8s.CustomObjectsApi(api_client(settings)).get_namespaced_custom_object(CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, namespace, "certificates", name),
        )
    except ApiException as exc:
        if exc.status == 404:
            return _issued_pending(settings, slug, domain)
        return _issued_pending(settings, slug, domain, f"the Certificate could not be read: Kubernetes answered {exc.status}")
    except Exception as exc:  # noqa: BLE001 - the cluster unreachable: the state is unknown, the rest still answers
        return _issued_pending(settings, slug, domain, f"the Certificate could not be read: {type(exc).__name__}")
    status = found.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "ready" if ready is not None and ready.get("status") == "True" else "issuing"
    return CertificateState(
        source="cert-manager",
        state=state,
        secret_name=name,
        expires_at=status.get("notAfter"),
        issuer=settings.tls_cluster_issuer,
        message=(ready or {}).get("message"),
    )


def list_domains(settings: Settings, caller: Caller, app_id: str) -> AppDomainsPublic:
    """Each domain of the app with its certificate state, and the default host.
    The read session is closed before cert-manager's Certificates are read."""
    with read_scope(settings.effective_database_url) as session:
        app = load_app(session, caller, app_id)
        namespace = session.get_one(Project, app.project_id).namespace
        workload = Workload.of(app.workload)
        slug = app.slug
        uploaded = {row.domain: _uploaded(row, slug) for row in app.certificates}
    domains = []
    for domain in workload.domains or []:
        if domain in uploaded:
            state = uploaded[domain]
        elif settings.tls_cluster_issuer:
            state = _issued(settings, namespace, slug, domain)
        else:
            state = CertificateState(source="none", state="none")
        domains.append(DomainPublic(domain=domain, certificate=state))
    return AppDomainsPublic(default_host=f"{slug}.{settings.base_domain}", redirect_http=workload.redirect_http, domains=domains)
