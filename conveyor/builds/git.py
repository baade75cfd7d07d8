"""git as a build runs it: an environment that holds nothing of the worker's
own (its database URL, its Temporal credentials) and trusts the operator's
private CAs beside the system's."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import threading
from pathlib import Path

import httpx

from conveyor.clients import outbound
from conveyor.domain import egress
from conveyor.domain.errors import SourceUnreachable
from conveyor.domain.redact import mask_url_credentials
from conveyor.settings import Settings

log = logging.getLogger(__name__)

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1"}
GIT_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "GIT_SSL_CAINFO", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


# Where git's TLS library finds the system's CAs on the distributions we run on.
_SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def git_env(settings: Settings) -> dict[str, str]:
    """The environment of a git call. With CA certificates in the git-ca
    directory, git over HTTPS trusts them as well as the system's (git's own
    setting would replace the system's), read anew on every call so an
    operator can add one without a restart."""
    # Only what git needs: it runs a URL a user gave, and the worker's own
    # environment may hold the database URL or Temporal credentials.
    env = {name: os.environ[name] for name in GIT_PASSTHROUGH if name in os.environ} | GIT_ENV
    extra = sorted(settings.effective_git_ca_dir.glob("*.pem")) if settings.effective_git_ca_dir.is_dir() else []
    if not extra:
        return env
    paths = ssl.get_default_verify_paths()
    candidates = (os.environ.get("GIT_SSL_CAINFO"), paths.cafile, paths.openssl_cafile, *_SYSTEM_CA_FILES)
    system = next((f for f in candidates if f and os.path.isfile(f)), None)
    bundle = b"".join(Path(f).read_bytes().rstrip(b"\n") + b"\n" for f in ([system] if system else []) + extra)
    target = settings.home / "run" / f"git-ca-bundle-{hashlib.sha256(bundle).hexdigest()[:16]}.pem"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(bundle)
        partial.replace(target)
    env["GIT_SSL_CAINFO"] = str(target)
    return env


# What git (curl, ssh) prints when the connection itself failed, in any of its ways.
_CONNECTION_FAILURE = re.compile(
    r"failed to connect|could not resolve|couldn't connect|connection (refused|reset|timed out|closed)|timed out|"
    r"\bssl\b|\btls\b|gnutls|certificate (problem|verify)|server certificate|no route to host|network is unreachable|"
    r"could not read from remote",
    re.IGNORECASE,
)


def pinned_config(settings: Settings, url: str) -> list[str]:
    """`git -c` options that make git connect only where the egress policy
    allows: the repository's host is resolved and every address checked
    (OutboundRefused otherwise), and for HTTPS curl is given the checked
    address, so a second lookup cannot lead elsewhere. An unresolvable host is
    SourceUnreachable with the uniform message."""
    where = egress.repo_host(url)
    if where is None:
        return []
    host, port = where
    try:
        address = outbound.checked_address(outbound.policy(settings), egress.Purpose.GIT, host, port or 443)
    except httpx.ConnectError:
        raise SourceUnreachable(f"git host {host} {egress.UNREACHABLE}") from None
    if not url.lower().startswith("https://") or egress.parse_ip(host) is not None:
        return []
    pinned = f"[{address}]" if address.version == 6 else str(address)
    return ["-c", f"http.curloptResolve={host}:{port or 443}:{pinned}"]


def failure_text(stderr: str, url: str) -> str | None:
    """The uniform message when git could not connect (the detail goes to the
    worker's log only); None when the server answered and git says what it said."""
    if not _CONNECTION_FAILURE.search(stderr):
        return None
    where = egress.repo_host(url)
    log.info("git %s: %s", mask_url_credentials(url), mask_url_credentials(stderr.strip()[-500:], url))
    return f"git host {where[0] if where else 'of the repository'} {egress.UNREACHABLE}"
