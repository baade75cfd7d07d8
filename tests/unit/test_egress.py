"""The egress policy (conveyor/domain/egress.py): which addresses the worker
connects to on a user's behalf, checked by name at the API and after DNS at
the worker; token realms; git URLs' hosts."""

from __future__ import annotations

import ipaddress

import pytest

from conveyor.domain import egress
from conveyor.domain.egress import Allowance, OutboundPolicy, OutboundRefused, Purpose

REG = Purpose.REGISTRY


def ip(text: str):
    return ipaddress.ip_address(text)


def policy(allow: str = "", platform: tuple[str, int] = ("127.0.0.1", 5000)) -> OutboundPolicy:
    operator = egress.parse_allow(allow)
    return OutboundPolicy({REG: egress.merge(operator, Allowance(endpoints=frozenset({platform}))), Purpose.GIT: operator})


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.2", "10.0.0.1", "172.16.3.4", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0",
     "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "240.0.0.1"],
)
def test_internal_addresses_are_refused_by_name_and_after_resolution(address):
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundRefused) as by_name:
        policy().check_named(REG, literal, 443)
    with pytest.raises(OutboundRefused) as resolved:
        policy().check_resolved(REG, "registry.example.com", 443, [ip(address)])
    assert address not in str(by_name.value) and address not in str(resolved.value)
    assert "CONVEYOR_OUTBOUND_ALLOW" in str(resolved.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "140.82.112.33", "2606:4700::1111"])
def test_public_addresses_pass(address):
    policy().check_named(REG, address, 443)
    policy().check_resolved(REG, "ghcr.io", 443, [ip(address)])


def test_a_name_passes_the_api_and_is_checked_by_what_it_resolves_to():
    policy().check_named(REG, "sneaky.example.com", 443)  # no DNS at the API
    with pytest.raises(OutboundRefused):
        policy().check_resolved(REG, "sneaky.example.com", 443, [ip("127.0.0.2")])
    # One internal address among public ones refuses the host: the resolver may hand out any.
    with pytest.raises(OutboundRefused):
        policy().check_resolved(REG, "sneaky.example.com", 443, [ip("8.8.8.8"), ip("10.1.1.1")])
    with pytest.raises(OutboundRefused):
        policy().check_resolved(REG, "nothing.example.com", 443, [])


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "api.localhost", "localhost."])
def test_localhost_names_are_refused_at_the_api(name):
    with pytest.raises(OutboundRefused):
        policy().check_named(REG, name, 5000)


def test_the_platform_registry_is_allowed_on_its_port_only():
    policy().check_named(REG, "127.0.0.1", 5000)
    policy().check_resolved(REG, "127.0.0.1", 5000, [ip("127.0.0.1")])
    with pytest.raises(OutboundRefused):
        policy().check_named(REG, "127.0.0.1", 8000)  # the API's port, say
    with pytest.raises(OutboundRefused):
        policy().check_named(Purpose.GIT, "127.0.0.1", 5000)  # a registry allowance is not git's


def test_the_operator_allows_hosts_endpoints_and_networks():
    allowing = policy("registry.internal, 10.20.0.0/16, 192.168.5.5:8443, [fd00::7]")
    allowing.check_resolved(REG, "registry.internal", 443, [ip("10.9.9.9")])  # listed by name: anywhere
    allowing.check_resolved(REG, "other.internal", 443, [ip("10.20.3.4")])
    allowing.check_named(REG, "10.20.3.4", 443)
    allowing.check_named(Purpose.GIT, "192.168.5.5", 8443)
    allowing.check_named(REG, "[fd00::7]", 5000)
    with pytest.raises(OutboundRefused):
        allowing.check_named(REG, "192.168.5.5", 22)
    with pytest.raises(OutboundRefused):
        allowing.check_resolved(REG, "other.internal", 443, [ip("10.21.0.1")])


def test_a_bad_allow_list_is_refused():
    for bad in ("10.0.0.0/33", "not a host/x", ":80"):
        with pytest.raises(ValueError):
            egress.parse_allow(bad)


@pytest.mark.parametrize(
    ("realm", "registry", "allowed"),
    [
        ("ghcr.io", "ghcr.io", True),
        ("auth.docker.io", "registry-1.docker.io", True),
        ("gitlab.com", "registry.gitlab.com", True),
        ("token.example.co.uk", "registry.example.co.uk", True),
        ("example.org", "ghcr.io", False),
        ("evil.io", "ghcr.io", False),
        ("a.b.docker.io", "registry-1.docker.io", False),
        ("10.0.0.7", "127.0.0.1", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("other.example.com", "registry.example.com", True),
        ("example.com.evil.net", "registry.example.com", False),
    ],
)
def test_token_realms_stay_on_the_registrys_own_host_or_domain(realm, registry, allowed):
    assert egress.realm_allowed(realm, registry, Allowance()) is allowed


def test_the_operator_may_allow_a_realm_host():
    assert egress.realm_allowed("sso.corp.example", "ghcr.io", egress.parse_allow("sso.corp.example"))


@pytest.mark.parametrize(
    ("url", "found"),
    [
        ("https://git.example.com/team/app.git", ("git.example.com", 443)),
        ("https://user:pw@10.0.0.1:8443/x.git", ("10.0.0.1", 8443)),
        ("ssh://git@[fd00::1]:2222/x.git", ("fd00::1", 2222)),
        ("git@192.168.1.1:team/app.git", ("192.168.1.1", 22)),
        ("https://GIT.Example.COM./x", ("git.example.com", 443)),
        ("/srv/git/app", None),
    ],
)
def test_the_host_of_a_git_url(url, found):
    assert egress.repo_host(url) == found
