"""The one client of the OCI distribution HTTP API: manifest digests, the
token flow (Basic, and Bearer from a 401's realm, with a project's
credentials), and uploaded sources stored as OCI artifacts.

Uploaded tarballs live in the platform's registry, not on any process's disk,
so every worker can read what any API replica received. Each is a blob
(content-addressed by the tarball's sha256) referenced by an artifact manifest
tagged `upload-<hex>`, which keeps it from garbage collection.

Failures are the domain's: `RegistryUnreachable` (transient: the registry is
away, or answered 5xx or 429) and `RegistryRefused` (permanent).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from conveyor.domain import egress, registry_auth
from conveyor.domain.errors import RegistryRefused, RegistryUnreachable
from conveyor.settings import Settings

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# The artifact type of an uploaded source (the config media type, so that
# registries predating OCI 1.1's `artifactType` field also record it).
SOURCE_ARTIFACT_TYPE = "application/vnd.conveyor.source.v1+json"
SOURCE_LAYER_TYPE = "application/vnd.conveyor.source.tar"
SOURCES_REPOSITORY = "conveyor/sources"
CHUNK = 1024 * 1024


def base_url(settings: Settings, registry: str | None = None) -> str:
    """Plain HTTP only for the platform's own registry, and only when it is set insecure."""
    registry = registry or settings.registry
    insecure = settings.registry_insecure and registry == settings.registry
    return f"{'http' if insecure else 'https'}://{registry}"


class RealmRefused(RegistryRefused):
    """A registry's 401 named a token realm Conveyor does not send credentials to."""


def _realm(settings: Settings, registry: str, challenge: registry_auth.Challenge, allowance: egress.Allowance) -> httpx.URL:
    """The challenge's realm, if it may be asked: https (plain http only for
    the platform's own insecure registry), on the registry's own host, its
    domain, or a host the operator allows."""
    try:
        realm = httpx.URL(challenge.realm or "")
    except httpx.InvalidURL:
        raise RealmRefused(f"registry {registry} named a token realm that is not a URL") from None
    registry_host, _ = egress.split_host_port(registry)
    insecure = base_url(settings, registry).startswith("http://")
    if realm.scheme != "https" and not (insecure and realm.scheme == "http"):
        raise RealmRefused(f"registry {registry} named a token realm that is not https; Conveyor does not send credentials to it")
    if not egress.realm_allowed(realm.host, registry_host, allowance, realm.port):
        raise RealmRefused(
            f"registry {registry} named a token realm on another host; Conveyor asks only the registry's own host "
            "(or its domain) for tokens, unless an operator allows the realm's host in CONVEYOR_OUTBOUND_ALLOW"
        )
    return realm


def authorized_head(
    settings: Settings,
    client: httpx.Client,
    registry: str,
    repository: str,
    url: str,
    headers: dict[str, str],
    credential: registry_auth.Credential | None,
    allowance: egress.Allowance,
) -> httpx.Response:
    """HEAD `url` by the distribution spec's token flow: anonymously first;
    on a 401, again with Basic (a `Basic` challenge) or with a token from the
    challenge's realm (`Bearer`), asked with the credential's Basic auth when
    there is one. Nothing is sent to a realm `_realm` refuses."""
    response = client.head(url, headers=headers)
    if response.status_code != 401:
        return response
    challenge = registry_auth.parse_challenge(response.headers.get("www-authenticate", ""))
    if challenge is None:
        return response
    basic = registry_auth.basic_authorization(credential.username, credential.password) if credential else None
    if challenge.scheme == "basic":
        return client.head(url, headers={**headers, "Authorization": basic}) if basic else response
    realm = _realm(settings, registry, challenge, allowance)
    params = {"scope": registry_auth.token_scope(repository, challenge)}
    if service := challenge.params.get("service"):
        params["service"] = service
    answer = client.get(realm.copy_merge_params(params), headers={"Authorization": basic} if basic else {})
    if answer.status_code in (401, 403):
        return answer
    if answer.status_code >= 500 or answer.status_code == 429:
        raise RegistryUnreachable(f"registry {registry} answered {answer.status_code} for a token")
    try:
        body = answer.json()
        token = body.get("token") or body.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if answer.status_code != 200 or not isinstance(token, str) or not token:
        raise RegistryRefused(f"registry {registry} gave no token (HTTP {answer.status_code})")
    return client.head(url, headers={**headers, "Authorization": f"Bearer {token}"})


def _sync_call(settings: Settings, method: str, path: str, what: str, **kwargs: object) -> httpx.Response:
    """One blocking request to the platform's registry; its failures are the
    domain's (a 404 is returned for the caller to read)."""
    try:
        response = httpx.request(method, f"{base_url(settings)}{path}", timeout=30.0, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        raise RegistryUnreachable(f"registry {settings.registry} is unreachable: {type(exc).__name__}") from exc
    if response.status_code != 404:
        _check(response, what)
    return response


def manifest_digest(settings: Settings, repository: str, reference: str) -> str | None:
    """The digest a tag (or digest) resolves to in the platform's registry, or
    None when it does not exist. The registry away (or answering 5xx) is
    `RegistryUnreachable`, any other refusal `RegistryRefused`."""
    response = _sync_call(settings, "HEAD", f"/v2/{repository}/manifests/{reference}", f"{repository}:{reference}", headers={"Accept": MANIFEST_ACCEPT})
    if response.status_code == 404:
        return None
    return response.headers["Docker-Content-Digest"]


def source_repository(project_id: str) -> str:
    """Where a project's uploaded sources are kept (path components are lowercase)."""
    return f"{SOURCES_REPOSITORY}/{project_id.lower().replace('_', '-')}"


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        message = f"registry refused {what}: HTTP {response.status_code}"
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryUnreachable(message)
        raise RegistryRefused(message)


async def push_source(settings: Settings, repository: str, chunks: AsyncIterator[bytes], digest: str, size: int) -> str:
    """Stream a source tarball into the registry as an artifact; return its
    reference `repository@sha256:…` (the blob's digest).

    `chunks` are sent as they come (one PATCH of a chunked body), so the
    tarball is never held in memory."""
    base = base_url(settings)
    empty_config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(empty_config).hexdigest()
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60.0)) as client:
        try:
            exists = await client.head(f"/v2/{repository}/blobs/{digest}")
            if exists.status_code != 200:
                await _upload_blob(client, repository, digest, chunks)
            await _upload_blob(client, repository, config_digest, _once(empty_config))
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": SOURCE_ARTIFACT_TYPE,
                "config": {"mediaType": SOURCE_ARTIFACT_TYPE, "digest": config_digest, "size": len(empty_config)},
                "layers": [{"mediaType": SOURCE_LAYER_TYPE, "digest": digest, "size": size}],
            }
            response = await client.put(
                f"/v2/{repository}/manifests/upload-{digest.removeprefix('sha256:')}",
                content=json.dumps(manifest).encode(),
                headers={"Content-Type": OCI_MANIFEST},
            )
            _check(response, f"the manifest of {repository}")
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"registry {settings.registry} is unreachable: {type(exc).__name__}") from exc
    return f"{repository}@{digest}"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _upload_blob(client: httpx.AsyncClient, repository: str, digest: str, chunks: AsyncIterator[bytes]) -> None:
    started = await client.post(f"/v2/{repository}/blobs/uploads/")
    _check(started, f"a blob upload to {repository}")
    location = started.headers["Location"]
    patched = await client.patch(location, content=chunks, headers={"Content-Type": "application/octet-stream"})
    _check(patched, f"the blob data of {repository}")
    location = patched.headers.get("Location", location)
    # The location carries the upload's state in its query: add to it, never replace it.
    done = await client.put(httpx.URL(location).copy_merge_params({"digest": digest}))
    _check(done, f"the blob {digest} of {repository}")


def fetch_source(settings: Settings, reference: str, target: Path, max_bytes: int) -> None:
    """Download a source tarball (`repository@sha256:…`) to `target`, checking
    its digest and size as it streams (blocking)."""
    repository, digest = reference.rsplit("@", 1)
    hasher = hashlib.sha256()
    size = 0
    try:
        with httpx.stream("GET", f"{base_url(settings)}/v2/{repository}/blobs/{digest}", timeout=60.0, follow_redirects=True) as response:
            if response.status_code == 404:
                raise RegistryRefused(f"the registry no longer holds the uploaded source {reference}")
            _check(response, f"the uploaded source {reference}")
            with target.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise RegistryRefused(f"the uploaded source {reference} is larger than {max_bytes} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
    except httpx.TransportError as exc:
        raise RegistryUnreachable(f"registry {settings.registry} is unreachable: {type(exc).__name__}") from exc
    if "sha256:" + hasher.hexdigest() != digest:
        raise RegistryRefused(f"the uploaded source {reference} does not match its digest")


# --- the platform registry's tags (the shared layer cache) ---------------------


def list_tags(settings: Settings, repository: str) -> list[str]:
    """The tags of a repository of the platform's registry ([] when it has none)."""
    response = _sync_call(settings, "GET", f"/v2/{repository}/tags/list", f"the tags of {repository}", params={"n": 10000})
    if response.status_code == 404:
        return []
    return list(response.json().get("tags") or [])


def delete_tag(settings: Settings, repository: str, tag: str) -> None:
    """Delete the manifest a tag names (and so the tag). The registry frees
    the blobs at its next garbage collection. RegistryRefused when the
    registry does not allow deletes."""
    digest = manifest_digest(settings, repository, tag)
    if digest is not None:
        _sync_call(settings, "DELETE", f"/v2/{repository}/manifests/{digest}", f"deleting {repository}:{tag}")


def catalog(settings: Settings) -> list[str]:
    """Every repository of the platform's registry, following the catalog's pages."""
    names: list[str] = []
    last = ""
    while True:
        params: dict[str, str | int] = {"n": 1000, **({"last": last} if last else {})}
        response = _sync_call(settings, "GET", "/v2/_catalog", "the catalog", params=params)
        page = list(response.json().get("repositories") or []) if response.status_code == 200 else []
        names += page
        if len(page) < 1000:
            return names
        last = page[-1]
