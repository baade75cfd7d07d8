"""Registry side effects: resolve an image tag to the digest it names now,
with the project's credential for that registry when it has one (read here
from the database, so the password is never an activity's input or output),
through the egress policy (conveyor/clients/outbound.py)."""

from __future__ import annotations

import logging

import httpx
from sqlalchemy import select
from temporalio import activity

from conveyor.clients import oci_registry, outbound
from conveyor.clients.db.models import RegistryCredential
from conveyor.clients.db.session import read_scope
from conveyor.clients.oci_registry import MANIFEST_ACCEPT
from conveyor.domain import egress, errors, images, registry_auth
from conveyor.domain.payloads import ResolvedImage, ResolveImageInput
from conveyor.settings import Settings

log = logging.getLogger(__name__)


def project_credential(settings: Settings, project_id: str | None, registry: str) -> registry_auth.Credential | None:
    if project_id is None:
        return None
    with read_scope(settings.effective_database_url) as session:
        row = session.scalars(
            select(RegistryCredential).where(RegistryCredential.project_id == project_id, RegistryCredential.registry_host == registry)
        ).first()
        return registry_auth.Credential(row.registry_host, row.username, row.password) if row is not None else None


def resolve_image(settings: Settings, request: ResolveImageInput, timeout: float = 20.0) -> ResolvedImage:
    """The digest the image's tag names now (each request given `timeout` seconds). Raises a named failure
    (conveyor/domain/errors.py): transient when the registry is away,
    permanent when it refuses or has no such manifest."""
    try:
        ref = images.parse(request.image)
    except images.InvalidImageReference as exc:
        raise errors.InvalidImage(f"image {request.image!r} is not valid: {exc}") from exc
    credential = project_credential(settings, request.project_id, registry_auth.image_registry_key(ref))
    url = f"{oci_registry.base_url(settings, ref.registry)}/v2/{ref.repository}/manifests/{ref.reference}"
    policy = outbound.policy(settings)
    try:
        with outbound.registry_client(settings, timeout=timeout, policy_=policy) as client:
            response = oci_registry.authorized_head(
                settings,
                client,
                ref.registry,
                ref.repository,
                url,
                {"Accept": MANIFEST_ACCEPT},
                credential,
                policy.allowance(egress.Purpose.REGISTRY),
            )
    except egress.OutboundRefused as exc:
        raise errors.RegistryRefused(f"registry {ref.registry} {exc}") from None
    except httpx.TransportError as exc:
        # One message whatever went wrong (refused, timed out, TLS): the
        # deployer reads it; the operator finds the cause in this log.
        log.info("registry %s: %s: %s", ref.registry, type(exc).__name__, exc)
        raise errors.RegistryUnreachable(f"registry {ref.registry} {egress.UNREACHABLE}") from None
    if response.status_code == 404:
        raise errors.RegistryRefused(
            f"image {request.image} was not found: registry {ref.registry} has no "
            f"{ref.repository}:{ref.reference}; push it or fix the image URL"
        )
    if response.status_code in (401, 403):
        advice = (
            "its credential was refused: log in again (conveyor registry login)"
            if credential is not None
            else "the project has no credential for it: an admin adds one (conveyor registry login)"
        )
        raise errors.RegistryRefused(f"registry {ref.registry} refused access to {ref.repository} ({response.status_code}); {advice}")
    if response.status_code >= 500 or response.status_code == 429:
        raise errors.RegistryUnreachable(f"registry {ref.registry} answered {response.status_code}")
    if response.status_code != 200 or "docker-content-digest" not in response.headers:
        raise errors.RegistryRefused(f"registry {ref.registry} gave no digest for {request.image} (HTTP {response.status_code})")
    digest = response.headers["docker-content-digest"]
    return ResolvedImage(image=request.image, digest=digest, reference=ref.pinned(digest))


class RegistryActivities:
    def __init__(self, settings: Settings):
        self.settings = settings

    @activity.defn(name="resolve_image_digest")
    def resolve_image_digest(self, request: ResolveImageInput) -> ResolvedImage:
        return resolve_image(self.settings, request)
