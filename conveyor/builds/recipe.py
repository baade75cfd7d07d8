"""The recipe of a build (pure): the Dockerfile of a source tree that has
none, and the base images a Dockerfile names."""

from __future__ import annotations

import json


def default_dockerfile(base_image: str, build_command: str | None, start_command: str | None) -> str:
    """The recipe for a source tree without a Dockerfile (pure)."""
    lines = [f"FROM {base_image}", "WORKDIR /app", "COPY . /app"]
    if build_command:
        lines.append(f"RUN {build_command}")
    if start_command:
        lines.append(f"CMD {json.dumps(['/bin/sh', '-c', start_command])}")
    return "\n".join(lines) + "\n"


def base_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile's FROM lines name, less `scratch` and earlier
    stages (pure). The sandbox has no network to pull them, so they are pulled
    before the build starts."""
    stages: set[str] = set()
    found: list[str] = []
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        if not words:
            continue
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() not in stages and image != "scratch" and image not in found:
            found.append(image)
    return found
