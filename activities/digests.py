"""Registry side effects: resolve an image tag to the digest it names now."""

from __future__ import annotations

import httpx
from temporalio import activity

from conveyor.clients import oci_registry
from conveyor.clients.oci_registry import MANIFEST_ACCEPT
from conveyor.domain import errors, images
from conveyor.domain.payloads import ResolvedImage, ResolveImageInput
from conveyor.settings import Settings


class RegistryActivities:
    def __init__(self, settings: Settings):
        self.settings = settings

    @activity.defn(name="resolve_image_digest")
    def resolve_image_digest(self, request: ResolveImageInput) -> ResolvedImage:
        try:
            ref = images.parse(request.image)
        except images.InvalidImageReference as exc:
            raise errors.InvalidImage(f"image {request.image!r} is not valid: {exc}") from exc
        url = f"{oci_registry.base_url(self.settings, ref.registry)}/v2/{ref.repository}/manifests/{ref.reference}"
        with httpx.Client(timeout=20.0, follow_redirects=True) as client:
            try:
                response = client.head(url, headers={"Accept": MANIFEST_ACCEPT})
                if response.status_code == 401:
                    token = oci_registry.bearer_token(client, response.headers.get("www-authenticate", ""), ref.repository)
                    if token:
                        response = client.head(
                            url, headers={"Accept": MANIFEST_ACCEPT, "Authorization": f"Bearer {token}"}
                        )
            except httpx.TransportError as exc:
                # The registry may be restarting: let Temporal retry.
                raise errors.RegistryUnreachable(f"registry {ref.registry} is unreachable: {exc}") from exc
        if response.status_code == 404:
            raise errors.RegistryRefused(
                f"image {request.image} was not found: registry {ref.registry} has no "
                f"{ref.repository}:{ref.reference}; push it or fix the image URL"
            )
        if response.status_code in (401, 403):
            raise errors.RegistryRefused(
                f"registry {ref.registry} refused access to {ref.repository} ({response.status_code}); "
                "the image must be pullable without credentials"
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise errors.RegistryUnreachable(f"registry {ref.registry} answered {response.status_code}")
        if response.status_code != 200 or "docker-content-digest" not in response.headers:
            raise errors.RegistryRefused(f"registry {ref.registry} gave no digest for {request.image} (HTTP {response.status_code})")
        digest = response.headers["docker-content-digest"]
        return ResolvedImage(image=request.image, digest=digest, reference=ref.pinned(digest))
