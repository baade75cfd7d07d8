"""/api/v1/apps/{id}/domains: the app's custom domains, their certificate
state, and uploaded certificates (PUT and DELETE of one domain's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.deps import Admin, KeyringDep, SettingsDep, Viewer
from api.schemas import AppDomainsPublic, CertificateUpload, DomainPublic
from api.services import domains as services
from api.unit_of_work import MutationDep

router = APIRouter(prefix="/apps/{app_id}/domains", tags=["domains"])

DomainPath = Annotated[str, Path(max_length=253, description="One of the app's domains, e.g. shop.example.com")]


@router.get("", response_model=AppDomainsPublic, summary="The app's domains and their certificates")
def list_domains(app_id: str, settings: SettingsDep, caller: Viewer) -> AppDomainsPublic:
    return services.list_domains(settings, caller, app_id)


@router.put(
    "/{domain}/certificate",
    response_model=DomainPublic,
    summary="Upload a certificate and key for one of the app's domains",
    description=(
        "JSON {certificate, key}: the PEM chain (the domain's certificate first) and its unencrypted PEM key. "
        "Checked before it is stored: the key matches, the certificate names the domain (subjectAltName, wildcards too) "
        "and is valid now. 202 with the release that writes its kubernetes.io/tls Secret, or 200 when nothing runs yet. "
        "The key is never shown again."
    ),
    responses={202: {"model": DomainPublic, "description": "stored; a release brings it to the cluster"}},
)
async def put_certificate(app_id: str, domain: DomainPath, body: CertificateUpload, m: MutationDep, caller: Admin, keyring: KeyringDep) -> Any:
    return await m.run(caller, services.put_certificate, keyring, app_id, domain, body)


@router.delete(
    "/{domain}/certificate",
    response_model=DomainPublic,
    summary="Delete a domain's uploaded certificate",
    description="202 with the release that removes its Secret (cert-manager issues one, if configured), or 200 when nothing runs yet.",
    responses={202: {"model": DomainPublic, "description": "deleted; a release removes the Secret"}},
)
async def delete_certificate(app_id: str, domain: DomainPath, m: MutationDep, caller: Admin) -> Any:
    return await m.run(caller, services.delete_certificate, m.settings, app_id, domain)
