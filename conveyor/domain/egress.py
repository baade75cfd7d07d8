"""Where the worker may connect on a user's behalf (pure).

A registry host in an app's `image_url`, a git host in its `repo_url`, a
token realm a registry names and every redirect are user-chosen addresses.
Without a policy a deployer token could make the worker probe the internal
network (the cluster, cloud metadata at 169.254.169.254, the platform's own
loopback services). So an address that is not globally routable (loopback,
private, shared 100.64/10, link-local, unspecified, reserved, multicast) is
refused, unless the operator allows it (`CONVEYOR_OUTBOUND_ALLOW`: hosts,
`host:port` or CIDRs). The platform's own registry and the hosts of the CA
directories (git, registries) are allowed by default, each for its purpose.

The API checks what it can without DNS (an IP literal, a `localhost` name);
the worker checks every resolved address of every connection it opens.
Messages name the rule, never the address or the host given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One message for every connection that did not work, whatever the cause
# (refused, reset, timed out, TLS): the text a deployer reads must not tell a
# closed port from a filtered one or a TLS server from another service.
UNREACHABLE = "is unreachable"
REFUSED_ADDRESS = (
    "resolves to an address Conveyor does not connect to (loopback, private, shared or link-local); "
    "an operator can allow it in CONVEYOR_OUTBOUND_ALLOW"
)
REFUSED_LITERAL = (
    "names an address Conveyor does not connect to (loopback, private, shared or link-local); "
    "an operator can allow it in CONVEYOR_OUTBOUND_ALLOW"
)


class Purpose(StrEnum):
    REGISTRY = "registry"
    GIT = "git"


class OutboundRefused(ValueError):
    """The address policy refuses a connection; the message names the rule only."""


def parse_ip(host: str) -> IPAddress | None:
    """The address a host literal names (`[::1]` too), or None for a DNS name."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast, as IANA's special-purpose registries say."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def split_host_port(authority: str) -> tuple[str, int | None]:
    """`host[:port]` (`[v6]:port` too) as (lowercased host without brackets, port)."""
    if authority.startswith("["):
        close = authority.find("]")
        host, rest = authority[1:close], authority[close + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    return host.lower().rstrip("."), int(port) if port.isdigit() else None


@dataclass(frozen=True)
class Allowance:
    """What one purpose may reach besides public addresses."""

    hosts: frozenset[str] = frozenset()  # names or addresses, any port
    endpoints: frozenset[tuple[str, int]] = frozenset()  # (host, port)
    networks: tuple[IPNetwork, ...] = ()

    def lists_host(self, host: str, port: int | None) -> bool:
        host = host.lower().rstrip(".").removeprefix("[").removesuffix("]")
        return host in self.hosts or (port is not None and (host, port) in self.endpoints)

    def lists_address(self, address: IPAddress, port: int | None) -> bool:
        if self.lists_host(str(address), port):
            return True
        return any(address in network for network in self.networks if network.version == address.version)


@dataclass(frozen=True)
class OutboundPolicy:
    """The allowances of each purpose (the operator's list is in both)."""

    allowances: dict[Purpose, Allowance] = field(default_factory=dict)

    def allowance(self, purpose: Purpose) -> Allowance:
        return self.allowances.get(purpose, Allowance())

    def check_named(self, purpose: Purpose, host: str, port: int | None) -> None:
        """The API's check, without DNS: an IP literal or a `localhost` name
        that is not allowed is refused."""
        allowance = self.allowance(purpose)
        if allowance.lists_host(host, port):
            return
        bare = host.lower().rstrip(".")
        if bare == "localhost" or bare.endswith(".localhost"):
            raise OutboundRefused(REFUSED_LITERAL)
        address = parse_ip(bare)
        if address is not None and not is_public(address) and not allowance.lists_address(address, port):
            raise OutboundRefused(REFUSED_LITERAL)

    def check_resolved(self, purpose: Purpose, host: str, port: int | None, addresses: Iterable[IPAddress]) -> None:
        """The worker's check after DNS: a host the operator listed by name
        may resolve anywhere; otherwise every address must be public or allowed
        (one refused address refuses the host: the resolver may hand out any)."""
        allowance = self.allowance(purpose)
        if allowance.lists_host(host, port):
            return
        found = list(addresses)
        if not found:
            raise OutboundRefused(UNREACHABLE)
        for address in found:
            if not is_public(address) and not allowance.lists_address(address, port):
                raise OutboundRefused(REFUSED_ADDRESS)


def parse_allow(text: str) -> Allowance:
    """`CONVEYOR_OUTBOUND_ALLOW`: comma-separated hosts, `host:port` or CIDRs."""
    hosts: set[str] = set()
    endpoints: set[tuple[str, int]] = set()
    networks: list[IPNetwork] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        if "/" in entry:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        host, port = split_host_port(entry)
        if not host:
            raise ValueError("each entry is a host, host:port or a CIDR")
        if port is not None:
            endpoints.add((host, port))
        else:
            hosts.add(host)
    return Allowance(frozenset(hosts), frozenset(endpoints), tuple(networks))


def merge(*allowances: Allowance) -> Allowance:
    return Allowance(
        frozenset().union(*(a.hosts for a in allowances)),
        frozenset().union(*(a.endpoints for a in allowances)),
        tuple(n for a in allowances for n in a.networks),
    )


def realm_allowed(realm_host: str, registry_host: str, allowance: Allowance, realm_port: int | None = None) -> bool:
    """A token realm on the registry's own host, its parent domain or a
    sibling under that parent (registry-1.docker.io → auth.docker.io,
    registry.gitlab.com → gitlab.com), or a host the operator allows; never
    an address literal other than the registry's own."""
    realm, registry = realm_host.lower().rstrip("."), registry_host.lower().rstrip(".")
    if realm == registry or allowance.lists_host(realm, realm_port):
        return True
    if parse_ip(realm) is not None or parse_ip(registry) is not None:
        return False
    labels = registry.split(".")
    parent = ".".join(labels[1:])
    if len(labels) < 3:
        return False
    return realm == parent or (realm.endswith("." + parent) and realm.count(".") == registry.count("."))


def repo_host(url: str) -> tuple[str, int | None] | None:
    """The host and port a git URL connects to (`https://`, `ssh://`, scp-like
    `user@host:path`), or None when it names none (a local path)."""
    if "://" in url:
        scheme, _, rest = url.partition("://")
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        authority = netloc.rpartition("@")[2]
        if not authority:
            return None
        host, port = split_host_port(authority)
        default = {"https": 443, "http": 80, "ssh": 22, "git": 9418}.get(scheme.lower())
        return host, port or default
    head, sep, _ = url.partition(":")
    if not sep or "/" in head:
        return None
    return split_host_port(head.rpartition("@")[2])[0], 22
