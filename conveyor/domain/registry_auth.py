"""Registry credentials as the distribution spec and Kubernetes use them (pure).

- `registry_key`: the one name a credential is stored and matched under
  (`docker.io` for Docker Hub's several names, otherwise `host[:port]`
  lowercased).
- `parse_challenge`: a 401's `WWW-Authenticate` (`Basic realm=...` or
  `Bearer realm=...,service=...,scope=...`).
- `docker_config`: the `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson`
  Secret, which kubelets read through a pod's `imagePullSecrets`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from conveyor.domain import images

DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_KEY = "docker.io"
# Kubelets match Docker Hub images against this key (the Docker CLI's).
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
MAX_USERNAME = 255
MAX_PASSWORD = 8192

# auth-param = token "=" ( token / quoted-string ), as RFC 7235 has it.
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


class InvalidRegistry(ValueError):
    pass


def registry_key(registry: str) -> str:
    """The name a credential is kept under; raises InvalidRegistry (naming the rule, not the value)."""
    text = registry.strip().lower()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.rstrip("/")
    if text in DOCKER_HUB_NAMES or text == "index.docker.io/v1":
        return DOCKER_HUB_KEY
    try:
        ref = images.parse(f"{text}/conveyor-check")
    except images.InvalidImageReference as exc:
        raise InvalidRegistry(str(exc).replace("registry host", "registry")) from None
    if ref.registry == images.DOCKER_HUB or "/" in text or "@" in text:
        raise InvalidRegistry("must be a registry host, host:port, without a path (docker.io for Docker Hub)")
    return ref.registry


def image_registry_key(ref: images.ImageReference) -> str:
    """The credential an image of this reference is pulled with."""
    return DOCKER_HUB_KEY if ref.registry == images.DOCKER_HUB else ref.registry.lower()


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer" (lowercased)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm") or None


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a `WWW-Authenticate` header, or None when it has none we know."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if found is None or found.end() == position:
            break
        quoted, plain = found.group(2), found.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain or ""
        params.setdefault(found.group(1).lower(), value)
        position = found.end()
    return Challenge(scheme, params)


def token_scope(repository: str, challenge: Challenge) -> str:
    """The scope to ask the realm for: pull of the repository (a challenge's own scope, if it is for it)."""
    wanted = f"repository:{repository}:pull"
    given = challenge.params.get("scope", "")
    return given if given.startswith(f"repository:{repository}:") and "pull" in given.rsplit(":", 1)[-1] else wanted


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True)
class Credential:
    registry: str  # a registry_key
    username: str
    password: str = field(repr=False)


def docker_config(credentials: list[Credential]) -> str:
    """`.dockerconfigjson` with one entry per registry (Docker Hub under its
    config key as well, which kubelets match `docker.io/...` images against)."""
    auths: dict[str, dict[str, str]] = {}
    for cred in sorted(credentials, key=lambda c: c.registry):
        entry = {
            "username": cred.username,
            "password": cred.password,
            "auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode(),
        }
        auths[cred.registry] = entry
        if cred.registry == DOCKER_HUB_KEY:
            auths[DOCKER_HUB_CONFIG_KEY] = entry
    return json.dumps({"auths": auths}, sort_keys=True)
