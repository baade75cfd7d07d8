"""Tags of the local platform's registry, moved as another push would move them."""

from __future__ import annotations

import httpx

from conveyor.stack import registry


def point_tag(settings, repository: str, tag: str, source: str, source_repository: str | None = None) -> str:
    """Make `repository:tag` name the manifest of `source_repository:source` in
    the local registry (as a `docker push` of another build would); returns its digest."""
    base = registry.url(settings)
    source_repository = source_repository or repository
    got = httpx.get(f"{base}/v2/{source_repository}/manifests/{source}", headers={"Accept": registry.MANIFEST_ACCEPT})
    got.raise_for_status()
    if source_repository != repository:
        manifest = got.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            mounted = httpx.post(
                f"{base}/v2/{repository}/blobs/uploads/", params={"mount": blob["digest"], "from": source_repository}
            )
            assert mounted.status_code == 201, mounted.text
    put = httpx.put(
        f"{base}/v2/{repository}/manifests/{tag}", content=got.content, headers={"Content-Type": got.headers["content-type"]}
    )
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"]
