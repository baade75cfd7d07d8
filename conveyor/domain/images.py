"""Image references: parse them and address their registry (pure).

One parser for the API (which refuses a bad reference before writing anything)
and the worker's registry client. The grammar is the OCI distribution one:

    reference  := [host[:port]/]path[:tag][@digest]
    host       := DNS name (labels of letters, digits, inner dashes) | IPv4 | [IPv6]
    path       := component(/component)*, component := [a-z0-9]+ (separator [a-z0-9]+)*
    separator  := . | _ | __ | -+
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := sha256:<64 hex> | sha512:<128 hex> (lowercase)

Messages name the part and its rule, never the input: they reach API answers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "registry-1.docker.io"
MAX_REFERENCE = 512
MAX_NAME = 255  # host and path together, as registries enforce
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGESTS = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


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


def _check_host(host: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidImageReference("an IPv6 registry host must be written in brackets: [::1]")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidImageReference("the registry host in brackets is not an IPv6 address") from None
        return
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidImageReference(
            "the registry host must be a DNS name (labels of letters, digits and inner dashes, "
            "each 1-63 characters), an IPv4 address or a bracketed IPv6 address"
        )
    # No top-level domain is numeric: all-numeric labels must make an IPv4 address.
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidImageReference("the registry host looks like an IPv4 address but is not one") from None


def _check_port(port: str) -> None:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise InvalidImageReference("the registry port must be a number from 1 to 65535")


def _split_registry(name: str) -> tuple[str | None, str]:
    """(host[:port] or None, path). The first component is a registry when it
    has a dot or a colon or is `localhost`, as the Docker CLI reads it."""
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return None, name
    if first.startswith("["):
        close = first.find("]")
        host, after = (first[: close + 1], first[close + 1 :]) if close >= 0 else (first, "")
        if after and not after.startswith(":"):
            raise InvalidImageReference("a bracketed IPv6 registry host may only be followed by :port")
        port = after[1:] if after else None
    else:
        host, colon, port_text = first.partition(":")
        port = port_text if colon else None
    _check_host(host)
    if port is not None:
        _check_port(port)
    return first, rest


def parse(image: str) -> ImageReference:
    if not image or len(image) > MAX_REFERENCE:
        raise InvalidImageReference(f"must be a non-empty image reference of at most {MAX_REFERENCE} characters")
    if not image.isascii() or not image.isprintable() or any(c.isspace() for c in image):
        raise InvalidImageReference("must be printable ASCII without spaces")
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        algorithm, _, encoded = digest.partition(":")
        pattern = _DIGESTS.get(algorithm)
        if pattern is None or not pattern.fullmatch(encoded):
            raise InvalidImageReference("the digest must be sha256:<64 lowercase hex digits> or sha512:<128>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last and not last.endswith("]"):
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise InvalidImageReference(
                "the tag must be 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
    if len(rest) > MAX_NAME:
        raise InvalidImageReference(f"the name (registry and repository) must be at most {MAX_NAME} characters")
    registry, repository = _split_registry(rest)
    if registry is None:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    elif registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not all(_PATH_COMPONENT.fullmatch(part) for part in repository.split("/")):
        raise InvalidImageReference(
            "the repository must be non-empty /-separated parts of lowercase letters and digits, "
            "joined inside a part by '.', '_', '__' or dashes"
        )
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)
