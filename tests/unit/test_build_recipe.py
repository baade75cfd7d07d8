"""The default build recipe for sources without a Dockerfile (pure)."""

from __future__ import annotations

import json

from activities.builder import default_dockerfile


def test_recipe_copies_the_source_runs_the_build_command_and_starts_the_web_command():
    text = default_dockerfile("registry/base:1", "make build", """echo 'it says "hi"' && httpd -f""")
    lines = text.splitlines()
    assert lines[:4] == ["FROM registry/base:1", "WORKDIR /app", "COPY . /app", "RUN make build"]
    assert json.loads(lines[4].removeprefix("CMD ")) == ["/bin/sh", "-c", """echo 'it says "hi"' && httpd -f"""]


def test_recipe_without_build_or_start_command_keeps_the_base_image_command():
    assert default_dockerfile("b", None, None).splitlines() == ["FROM b", "WORKDIR /app", "COPY . /app"]
