"""The default build recipe for sources without a Dockerfile (pure)."""

from __future__ import annotations

import json

from conveyor.builds.recipe import default_dockerfile


def test_recipe_copies_the_source_runs_the_build_command_and_starts_the_web_command():
    text = default_dockerfile("registry/base:1", "make build", """echo 'it says "hi"' && httpd -f""")
    lines = text.splitlines()
    assert lines[:4] == ["FROM registry/base:1", "WORKDIR /app", "COPY . /app", "RUN make build"]
    assert json.loads(lines[4].removeprefix("CMD ")) == ["/bin/sh", "-c", """echo 'it says "hi"' && httpd -f"""]


def test_recipe_without_build_or_start_command_keeps_the_base_image_command():
    assert default_dockerfile("b", None, None).splitlines() == ["FROM b", "WORKDIR /app", "COPY . /app"]


def test_base_images_are_the_from_lines_less_scratch_and_earlier_stages():
    from conveyor.builds.recipe import base_images

    dockerfile = (
        "FROM --platform=linux/amd64 registry:5000/base:1 AS build\n"
        "RUN make\n"
        "from scratch\n"
        "FROM build AS again\n"
        "FROM registry:5000/other:2\n"
        "FROM registry:5000/base:1\n"
    )
    assert base_images(dockerfile) == ["registry:5000/base:1", "registry:5000/other:2"]


def test_the_from_rule_is_exactly_the_isolation_rule():
    from conveyor.builds.recipe import FromRule
    from conveyor.domain.images import parse

    rule = FromRule("127.0.0.1:5000", parse("127.0.0.1:5000/conveyor/base:busybox"), frozenset({"docker.io", "ghcr.io"}))
    allowed = [
        "127.0.0.1:5000/conveyor/base:busybox",  # the base image
        "127.0.0.1:5000/proj_a/web:bld_1",  # its own project's
        "127.0.0.1:5000/demo/web:v1",  # a shared repository, of no project
        "python:3.12-slim",  # docker.io, as most Dockerfiles start
        "docker.io/library/busybox",
        "ghcr.io/org/tool@sha256:" + "a" * 64,
    ]
    for image in allowed:
        assert rule.refusal(parse(image), "proj_a") is None, image
    assert "another project" in (rule.refusal(parse("127.0.0.1:5000/proj_b/web:1"), "proj_a") or "")
    assert "CONVEYOR_BUILD_FROM_REGISTRIES" in (rule.refusal(parse("quay.io/x/y:1"), "proj_a") or "")
    assert "CONVEYOR_BUILD_FROM_REGISTRIES" in (rule.refusal(parse("10.0.0.7:5000/x:1"), "proj_a") or "")


def test_a_mirror_serves_its_registrys_images_under_its_prefix():
    from conveyor.builds.recipe import mirrored
    from conveyor.domain.images import parse

    mirrors = {"docker.io": "127.0.0.1:5000/mirror/docker.io/"}
    assert mirrored(parse("busybox"), mirrors) == "127.0.0.1:5000/mirror/docker.io/library/busybox:latest"
    assert mirrored(parse("python:3.12-slim"), mirrors) == "127.0.0.1:5000/mirror/docker.io/library/python:3.12-slim"
    assert mirrored(parse("busybox@sha256:" + "b" * 64), mirrors) == "127.0.0.1:5000/mirror/docker.io/library/busybox@sha256:" + "b" * 64
    assert mirrored(parse("ghcr.io/a/b:1"), mirrors) is None
