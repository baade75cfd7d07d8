"""Image reference parsing."""

from __future__ import annotations

import pytest

from conveyor.images import DOCKER_HUB, InvalidImageReference, parse

DIGEST = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/demo/web:v1", "127.0.0.1:5000", "demo/web", "v1", None),
        ("127.0.0.1:5000/demo/web", "127.0.0.1:5000", "demo/web", None, None),
        (f"127.0.0.1:5000/demo/web:v1@{DIGEST}", "127.0.0.1:5000", "demo/web", "v1", DIGEST),
        ("nginx:latest", DOCKER_HUB, "library/nginx", "latest", None),
        ("myregistry.com/api:v2.1", "myregistry.com", "api", "v2.1", None),
        ("user/app", DOCKER_HUB, "user/app", None, None),
        ("localhost/app:1", "localhost", "app", "1", None),
    ],
)
def test_parse(image, registry, repository, tag, digest):
    ref = parse(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_pinned_keeps_the_tag_and_adds_the_digest():
    assert parse("127.0.0.1:5000/demo/web:v1-crashloop").pinned(DIGEST) == f"127.0.0.1:5000/demo/web:v1-crashloop@{DIGEST}"
    assert parse("nginx").pinned(DIGEST) == f"docker.io/library/nginx:latest@{DIGEST}"


@pytest.mark.parametrize("image", ["", " nginx", "UPPER/case", "web@sha256:short", "web:bad tag", "a//b", "x" * 600])
def test_invalid(image):
    with pytest.raises(InvalidImageReference):
        parse(image)
