"""The worker's outbound connections to user-named hosts (registries, git),
under the egress policy of `conveyor.domain.egress`.

`registry_client` is an httpx client whose transport resolves each request's
host itself, checks every address the resolver gave, and connects to the
checked address (TLS still verifies, and SNI still names, the host): a name
cannot resolve to a public address for the check and to 10.x for the
connection (DNS rebinding). Every request goes through it, so redirects and
token realms are checked the same way.

The CA directories (`CONVEYOR_REGISTRY_CA_DIR`, `CONVEYOR_GIT_CA_DIR`) are read
on every use, as git's is: an operator adds a private CA without a restart,
and the hosts its certificates name (subject alternative names) are allowed
for that purpose.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from pathlib import Path

import httpx
from cryptography import x509

from conveyor.domain import egress
from conveyor.domain.egress import Allowance, OutboundPolicy, OutboundRefused, Purpose
from conveyor.settings import Settings

log = logging.getLogger("conveyor.outbound")

_ca_cache: dict[Path, tuple[float, Allowance]] = {}
_ca_lock = threading.Lock()


def ca_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pem")) if directory.is_dir() else []


def ca_hosts(directory: Path) -> Allowance:
    """The DNS names and addresses the certificates in `directory` name."""
    files = ca_files(directory)
    stamp = max((f.stat().st_mtime for f in files), default=0.0) + len(files)
    with _ca_lock:
        cached = _ca_cache.get(directory)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    hosts: set[str] = set()
    for path in files:
        try:
            certificates = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        for certificate in certificates:
            try:
                names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                continue
            hosts.update(name.lower() for name in names.get_values_for_type(x509.DNSName))
            hosts.update(str(address) for address in names.get_values_for_type(x509.IPAddress))
    allowance = Allowance(hosts=frozenset(hosts))
    with _ca_lock:
        _ca_cache[directory] = (stamp, allowance)
    return allowance


def policy(settings: Settings) -> OutboundPolicy:
    """Blocking (reads the CA directories)."""
    operator = egress.parse_allow(settings.outbound_allow)
    platform_host, platform_port = egress.split_host_port(settings.registry)
    platform = Allowance(endpoints=frozenset({(platform_host, platform_port)}) if platform_port else frozenset(), hosts=frozenset() if platform_port else frozenset({platform_host}))
    return OutboundPolicy(
        {
            Purpose.REGISTRY: egress.merge(operator, platform, ca_hosts(settings.effective_registry_ca_dir)),
            Purpose.GIT: egress.merge(operator, ca_hosts(settings.effective_git_ca_dir)),
        }
    )


def resolve(host: str, port: int) -> list[egress.IPAddress]:
    """Every address the resolver gives for `host` (an address literal: itself)."""
    literal = egress.parse_ip(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[egress.IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def checked_address(policy_: OutboundPolicy, purpose: Purpose, host: str, port: int) -> egress.IPAddress:
    """Resolve `host`, check every address, return the one to connect to.
    Raises OutboundRefused, or httpx.ConnectError when the name does not resolve."""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        log.info("outbound %s: %s:%s does not resolve: %s", purpose, host, port, exc)
        raise httpx.ConnectError("does not resolve") from None
    policy_.check_resolved(purpose, host, port, addresses)
    return addresses[0]


class GuardedTransport(httpx.BaseTransport):
    """Each request checked by the policy after resolution, and pinned to the checked address."""

    def __init__(self, policy_: OutboundPolicy, purpose: Purpose, inner: httpx.BaseTransport):
        self.policy = policy_
        self.purpose = purpose
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        address = checked_address(self.policy, self.purpose, host, port)
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,  # Host: still the name asked for
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return self.inner.handle_request(pinned)

    def close(self) -> None:
        self.inner.close()


# One context per state of a CA directory: loading the system's CAs costs
# tens of milliseconds of CPU, which every registry request paid.
_ssl_cache: dict[Path, tuple[tuple[tuple[str, int, int], ...], ssl.SSLContext]] = {}


def registry_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The system's CAs and those of the registry CA directory. Made again
    when a file of the directory is added, removed or changed (the directory
    is still read on every use); shared by the threads otherwise."""
    directory = settings.effective_registry_ca_dir
    files = ca_files(directory)
    stamp = tuple((str(f), (st := f.stat()).st_mtime_ns, st.st_size) for f in files)
    with _ca_lock:
        cached = _ssl_cache.get(directory)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    context = ssl.create_default_context()
    for path in files:
        try:
            context.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            log.warning("registry CA file %s is not usable: %s", path, exc)
    with _ca_lock:
        _ssl_cache[directory] = (stamp, context)
    return context


def registry_client(settings: Settings, timeout: float = 20.0, policy_: OutboundPolicy | None = None) -> httpx.Client:
    """Redirects are followed (each hop checked); Authorization is dropped on a
    redirect to another origin (httpx does that)."""
    inner = httpx.HTTPTransport(verify=registry_ssl_context(settings))
    transport = GuardedTransport(policy_ or policy(settings), Purpose.REGISTRY, inner)
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=True, max_redirects=5)


__all__ = ["OutboundRefused", "checked_address", "policy", "registry_client", "resolve"]
