"""Image references: parse them and address their registry (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "registry-1.docker.io"
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


class InvalidImageReference(ValueError):
    pass


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """`registry/repository:tag@digest`: the tag stays for people, the digest decides."""
        base = f"{self.registry}/{self.repository}"
        if self.registry == DOCKER_HUB:
            base = f"docker.io/{self.repository}"
        return f"{base}:{self.tag or 'latest'}@{digest}"


def parse(image: str) -> ImageReference:
    if not image or image != image.strip() or len(image) > 512:
        raise InvalidImageReference("must be a non-empty image reference without spaces, at most 512 characters")
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidImageReference(f"digest {digest!r} is not of the form sha256:<64 hex digits>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidImageReference(f"tag {tag!r} is not a valid tag")
    parts = rest.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, repository = parts[0], "/".join(parts[1:])
        if not _HOST.match(registry):
            raise InvalidImageReference(f"registry host {registry!r} is not valid")
    else:
        registry, repository = DOCKER_HUB, rest
        if len(parts) == 1:
            repository = f"library/{rest}"
    if registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not _NAME.match(repository):
        raise InvalidImageReference(
            f"repository {repository!r} must be lowercase letters, digits and separators (. _ -) between / parts"
        )
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)
