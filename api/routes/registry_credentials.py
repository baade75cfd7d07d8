"""/api/v1/registry-credentials: a project's logins to private registries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import Admin, SessionDep, Viewer
from api.schemas import RegistryCredentialCreate, RegistryCredentialPublic
from api.services import registry_credentials as services
from api.unit_of_work import MutationDep

router = APIRouter(prefix="/registry-credentials", tags=["registry credentials"])


@router.get("", response_model=list[RegistryCredentialPublic], summary="The project's registry credentials (never their password)")
def list_credentials(session: SessionDep, caller: Viewer) -> list[RegistryCredentialPublic]:
    return services.listed(session, caller)


@router.post(
    "",
    status_code=201,
    response_model=RegistryCredentialPublic,
    summary="Save the project's credential for a registry",
    description="201 when new; 200 when it replaces the project's credential for that registry. "
    "It is used from the next digest resolution and reaches the pull Secret at the next release.",
    responses={200: {"model": RegistryCredentialPublic, "description": "replaced the registry's credential"}},
)
async def save_credential(body: RegistryCredentialCreate, m: MutationDep, caller: Admin) -> Any:
    return await m.run(caller, services.save, m.settings, body)


@router.delete(
    "/{credential}",
    status_code=204,
    summary="Delete a registry credential, by id (rc_…) or by registry",
    description="Digest resolution stops using it at once; the pull Secret loses it at the next release.",
)
async def delete_credential(credential: str, m: MutationDep, caller: Admin) -> Response:
    await m.run(caller, services.delete, credential)
    return Response(status_code=204)
