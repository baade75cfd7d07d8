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
