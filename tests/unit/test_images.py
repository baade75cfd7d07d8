"""Image reference parsing."""

from __future__ import annotations

import pytest

from conveyor.domain.images import DOCKER_HUB, InvalidImageReference, parse

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
        ("localhost:65535/a__b/c--d.e_f:V_1.0-rc", "localhost:65535", "a__b/c--d.e_f", "V_1.0-rc", None),
        ("[::1]:5000/demo/web:v1", "[::1]:5000", "demo/web", "v1", None),
        ("my-registry.example.com/team/app", "my-registry.example.com", "team/app", None, None),
        ("docker.io/nginx", DOCKER_HUB, "library/nginx", None, None),
        (f"web@sha512:{'c' * 128}", DOCKER_HUB, "library/web", None, f"sha512:{'c' * 128}"),
    ],
)
def test_parse(image, registry, repository, tag, digest):
    ref = parse(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_pinned_keeps_the_tag_and_adds_the_digest():
    assert parse("127.0.0.1:5000/demo/web:v1-crashloop").pinned(DIGEST) == f"127.0.0.1:5000/demo/web:v1-crashloop@{DIGEST}"
    assert parse("nginx").pinned(DIGEST) == f"docker.io/library/nginx:latest@{DIGEST}"


@pytest.mark.parametrize(
    "image",
    [
        "",
        " nginx",
        "nginx\n",
        "UPPER/case",
        "web@sha256:short",
        f"web@sha256:{'B' * 64}",
        f"web@md5:{'b' * 64}",
        "web@",
        "web:bad tag",
        "web:",
        "web:.hidden",
        "web:-dash",
        "web:" + "t" * 129,
        "web:caf\u00e9",
        "a//b",
        "127.0.0.1:5000/",
        "127.0.0.1:5000//x:v1",
        "127.0.0.1:5000/x/:v1",
        ":v1",
        "x" * 600,
        "-127.0.0.1:5000/x:v1",
        "127.0.0.1-:5000/x:v1",
        "127.0.0.1:99999/x:v1",
        "127.0.0.1:0/x:v1",
        "127.0.0.1:/x:v1",
        "127.0.0.1:50a0/x:v1",
        "127.0.0.999:5000/x:v1",
        "reg..example.com/x",
        ".example.com/x",
        "bad_host.example.com/x",
        "[::1/x",
        "[::zz]:5000/x",
        "[::1]x/y",
        "127.0.0.1:5000/X:v1",
        "127.0.0.1:5000/-x:v1",
        "127.0.0.1:5000/x-:v1",
        "127.0.0.1:5000/x..y:v1",
        "127.0.0.1:5000/x___y:v1",
        "example.com/" + "a" * 250,
        "127.0.0.1:5000/x:v1:v2",
    ],
)
def test_invalid(image):
    with pytest.raises(InvalidImageReference):
        parse(image)


@pytest.mark.parametrize(
    "image", ["127.0.0.1:5000/x:SECRETTAG!", "SECRETHOST-:5000/x", f"x@sha256:{'z' * 64}", "127.0.0.1:5000/SECRETREPO"]
)
def test_messages_never_repeat_the_input(image):
    with pytest.raises(InvalidImageReference) as caught:
        parse(image)
    assert "SECRET" not in str(caught.value) and "zzz" not in str(caught.value)
