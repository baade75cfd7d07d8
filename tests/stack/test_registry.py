"""An image built with buildah is pushed to the local registry and its digest
resolves through the registry's HTTP API."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx

from conveyor.stack import registry


def test_buildah_image_is_pushed_and_its_digest_resolves(platform, settings, tmp_path: Path):
    marker = uuid.uuid4().hex
    (tmp_path / "hello.txt").write_text(marker)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {registry.base_image(settings)}\nCOPY hello.txt /app/hello.txt\nRUN cat /app/hello.txt > /app/copy.txt\n"
    )
    tag = f"t{marker[:12]}"
    image = f"{settings.registry}/test/hello:{tag}"
    builder = registry.Buildah(settings)
    builder.build(tmp_path, image)
    pushed = builder.push(image)

    assert pushed.startswith("sha256:")
    assert registry.manifest_digest(settings, "test/hello", tag) == pushed
    manifest = httpx.get(
        f"{registry.url(settings)}/v2/test/hello/manifests/{pushed}",
        headers={"Accept": registry.MANIFEST_ACCEPT},
    )
    assert manifest.status_code == 200
    assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == pushed
    assert registry.manifest_digest(settings, "test/hello", "no-such-tag") is None


def test_seed_images_are_in_the_registry(platform, settings):
    for repository, tags, _ in registry.DEMO_IMAGES:
        for tag in tags:
            assert registry.manifest_digest(settings, repository, tag), f"{repository}:{tag} missing"
    v1 = registry.manifest_digest(settings, "demo/web", "v1")
    assert registry.manifest_digest(settings, "demo/web", "v1-crashloop") == v1
    assert registry.manifest_digest(settings, "demo/web", "v2") != v1
