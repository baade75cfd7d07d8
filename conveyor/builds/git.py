"""git as a build runs it: an environment that holds nothing of the worker's
own (its database URL, its Temporal credentials) and trusts the operator's
private CAs beside the system's."""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
from pathlib import Path

from conveyor.settings import Settings

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
