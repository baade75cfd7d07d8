"""The recipe of a build (pure): the Dockerfile of a source tree that has
none, and the base images a Dockerfile names."""

from __future__ import annotations

import json
from dataclasses import dataclass

from conveyor.domain.images import DOCKER_HUB, ImageReference

# A project's repositories in the platform's registry: `<registry>/proj_<name>/…`.
PROJECT_PREFIX = "proj_"


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


def registry_name(ref: ImageReference) -> str:
    """The registry as people name it (`docker.io`, not its API host)."""
    return "docker.io" if ref.registry == DOCKER_HUB else ref.registry


@dataclass(frozen=True)
class FromRule:
    """Where a build may start from: the base image, its own project's
    repositories and the platform registry's repositories that belong to no
    project, and any registry of `registries` (public ones by default). Another
    project's repository is that project's: a FROM must not copy it."""

    platform_registry: str
    base_image: ImageReference
    registries: frozenset[str]

    def refusal(self, ref: ImageReference, project_id: str) -> str | None:
        """Why `ref` may not be a base of this project's build; None when it may."""
        if (ref.registry, ref.repository) == (self.base_image.registry, self.base_image.repository):
            return None
        if ref.registry == self.platform_registry:
            owner = ref.repository.split("/", 1)[0]
            if owner.startswith(PROJECT_PREFIX) and owner != project_id:
                return "it is another project's image; a build starts only from its own project's images, shared ones and public registries"
            return None
        if registry_name(ref) in self.registries:
            return None
        return f"registry {registry_name(ref)} is not one builds may start from (CONVEYOR_BUILD_FROM_REGISTRIES)"


def mirrored(ref: ImageReference, mirrors: dict[str, str]) -> str | None:
    """Where to pull `ref` from instead, when its registry has a pull-through
    mirror (`docker.io` → `127.0.0.1:5000/mirror/docker.io`): the same
    repository and tag or digest under the mirror's prefix."""
    prefix = mirrors.get(registry_name(ref))
    if prefix is None:
        return None
    tail = f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}"
    return f"{prefix.rstrip('/')}/{ref.repository}{tail}"
