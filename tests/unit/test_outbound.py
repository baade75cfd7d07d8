"""The worker's outbound client (conveyor/clients/outbound.py) and the token
flow (oci_registry.authorized_head), with the resolver and the network
replaced: each request is checked after resolution and pinned to the
address checked; a name that resolves to 127.0.0.2 is refused; realms are
asked only where the rules allow, with the credential only there."""

from __future__ import annotations

import base64
import socket

import httpx
import pytest

from conveyor.clients import oci_registry, outbound
from conveyor.domain import egress
from conveyor.domain.egress import Allowance, OutboundPolicy, OutboundRefused, Purpose
from conveyor.domain.errors import RegistryRefused
from conveyor.domain.registry_auth import Credential
from conveyor.settings import Settings

PUBLIC = "140.82.112.33"


@pytest.fixture
def resolver(monkeypatch):
    """Names as the test says they resolve."""
    table: dict[str, str] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def guarded(handler, policy: OutboundPolicy | None = None) -> httpx.Client:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    transport = outbound.GuardedTransport(policy or OutboundPolicy(), Purpose.REGISTRY, httpx.MockTransport(record))
    client = httpx.Client(transport=transport, follow_redirects=True)
    client.seen = seen  # type: ignore[attr-defined]
    return client


def test_a_name_resolving_to_loopback_is_refused_before_any_connection(resolver):
    resolver["registry.example.com"] = "127.0.0.2"
    client = guarded(lambda r: httpx.Response(200))
    with pytest.raises(OutboundRefused):
        client.head("https://registry.example.com/v2/")
    assert client.seen == []  # type: ignore[attr-defined]


def test_a_request_is_pinned_to_the_checked_address_with_its_host_and_sni_kept(resolver):
    resolver["registry.example.com"] = PUBLIC
    client = guarded(lambda r: httpx.Response(200))
    client.head("https://registry.example.com/v2/")
    sent = client.seen[0]  # type: ignore[attr-defined]
    assert sent.url.host == PUBLIC and sent.headers["host"] == "registry.example.com"
    assert sent.extensions["sni_hostname"] == "registry.example.com"


def test_a_redirect_to_an_internal_address_is_refused(resolver):
    resolver["registry.example.com"] = PUBLIC
    client = guarded(lambda r: httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"}))
    with pytest.raises(OutboundRefused):
        client.get("https://registry.example.com/v2/x/blobs/sha256:00")
    assert [r.url.host for r in client.seen] == [PUBLIC]  # type: ignore[attr-defined]


def test_a_name_that_does_not_resolve_is_a_connection_failure(resolver):
    with pytest.raises(httpx.ConnectError):
        guarded(lambda r: httpx.Response(200)).head("https://nowhere.example.com/v2/")


def test_checked_address_allows_what_the_operator_listed(resolver):
    resolver["registry.internal"] = "10.1.2.3"
    allowing = OutboundPolicy({Purpose.REGISTRY: egress.parse_allow("registry.internal")})
    assert str(outbound.checked_address(allowing, Purpose.REGISTRY, "registry.internal", 443)) == "10.1.2.3"
    with pytest.raises(OutboundRefused):
        outbound.checked_address(OutboundPolicy(), Purpose.REGISTRY, "registry.internal", 443)


def test_the_policy_allows_the_platform_registry_and_the_ca_directories_hosts(tmp_path):
    from tests.support.private_registry import self_signed

    settings = Settings(home=tmp_path, registry="127.0.0.1:5300", outbound_allow="")
    found = outbound.policy(settings)
    assert found.allowance(Purpose.REGISTRY).lists_host("127.0.0.1", 5300)
    assert not found.allowance(Purpose.REGISTRY).lists_host("127.0.0.1", 8300)
    (tmp_path / "git-ca").mkdir()
    self_signed(tmp_path / "git-ca")
    found = outbound.policy(settings)
    assert found.allowance(Purpose.GIT).lists_host("127.0.0.1", 9999)
    assert not found.allowance(Purpose.REGISTRY).lists_host("127.0.0.1", 9999)


# --- the token flow -----------------------------------------------------------

MANIFEST = "https://ghcr.io/v2/team/web/manifests/v1"
DIGEST = "sha256:" + "a" * 64


def flow(handler, credential: Credential | None = None, allowance: Allowance | None = None) -> tuple[httpx.Response, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    with httpx.Client(transport=httpx.MockTransport(record)) as client:
        settings = Settings(registry="127.0.0.1:5000")
        answer = oci_registry.authorized_head(settings, client, "ghcr.io", "team/web", MANIFEST, {}, credential, allowance or Allowance())
    return answer, seen


def test_bearer_flow_asks_the_realm_with_the_credential_then_the_manifest_with_the_token():
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert request.url.params["scope"] == "repository:team/web:pull" and request.url.params["service"] == "ghcr.io"
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"ci:tok").decode()
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") == "Bearer T0K":
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:team/web:pull"'})

    answer, seen = flow(registry, Credential("ghcr.io", "ci", "tok"))
    assert answer.status_code == 200 and answer.headers["docker-content-digest"] == DIGEST
    assert [r.url.path for r in seen] == ["/v2/team/web/manifests/v1", "/token", "/v2/team/web/manifests/v1"]
    assert "authorization" not in seen[0].headers  # anonymous first


def test_basic_flow_sends_the_credential_to_the_registry_itself():
    def registry(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == "Basic " + base64.b64encode(b"ci:tok").decode():
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})

    assert flow(registry, Credential("ghcr.io", "ci", "tok"))[0].status_code == 200
    anonymous, seen = flow(registry)
    assert anonymous.status_code == 401 and len(seen) == 1


def test_anonymous_bearer_tokens_work_without_a_credential():
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert "authorization" not in request.headers
            return httpx.Response(200, json={"access_token": "anon"})
        if request.headers.get("authorization") == "Bearer anon":
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://ghcr.io/token",service="ghcr.io"'})

    assert flow(registry)[0].status_code == 200


@pytest.mark.parametrize(
    "realm",
    ["https://collector.example.org/token", "http://ghcr.io/token", "https://10.0.0.7/token", "not a url at all ::"],
)
def test_a_realm_elsewhere_is_refused_and_never_asked(realm):
    def registry(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="ghcr.io"'})

    with pytest.raises(RegistryRefused) as refused:
        flow(registry, Credential("ghcr.io", "ci", "tok"))
    assert "realm" in str(refused.value) and "collector" not in str(refused.value)


def test_a_realm_the_operator_allows_is_asked():
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.host == "sso.corp.example":
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("authorization") == "Bearer T":
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://sso.corp.example/t"'})

    assert flow(registry, allowance=egress.parse_allow("sso.corp.example"))[0].status_code == 200


def test_git_is_pinned_to_the_checked_address_and_refused_internal_ones(resolver, tmp_path):
    from conveyor.builds.git import failure_text, pinned_config
    from conveyor.domain.errors import SourceUnreachable

    settings = Settings(home=tmp_path, registry="127.0.0.1:5300")
    resolver["git.example.com"] = PUBLIC
    assert pinned_config(settings, "https://tok@git.example.com/team/app.git") == ["-c", f"http.curloptResolve=git.example.com:443:{PUBLIC}"]
    assert pinned_config(settings, "git@git.example.com:team/app.git") == []  # ssh: checked, not pinned
    resolver["rebound.example.com"] = "10.0.0.5"
    for url in ("https://rebound.example.com/x.git", "ssh://git@rebound.example.com:2222/x.git"):
        with pytest.raises(OutboundRefused):
            pinned_config(settings, url)
    with pytest.raises(SourceUnreachable, match="git host nowhere.example.com is unreachable"):
        pinned_config(settings, "https://nowhere.example.com/x.git")
    refused = "fatal: unable to access 'https://git.example.com/x/': Failed to connect to git.example.com port 443: Connection refused"
    tls = "fatal: unable to access 'https://git.example.com/x/': SSL certificate problem: self-signed certificate"
    assert failure_text(refused, "https://git.example.com/x") == failure_text(tls, "https://git.example.com/x") == "git host git.example.com is unreachable"
    assert failure_text("remote: Repository not found.\nfatal: repository not found", "https://git.example.com/x") is None


def test_the_registry_tls_context_is_made_once_and_again_when_a_ca_is_added(tmp_path):
    from tests.support.private_registry import self_signed

    settings = Settings(home=tmp_path, registry="127.0.0.1:5300")
    first = outbound.registry_ssl_context(settings)
    assert outbound.registry_ssl_context(settings) is first, "the system's CAs are loaded once, not per request"
    (tmp_path / "registry-ca").mkdir()
    self_signed(tmp_path / "registry-ca")
    added = outbound.registry_ssl_context(settings)
    assert added is not first
    subjects = [dict(field[0] for field in cert["subject"]) for cert in added.get_ca_certs()]
    assert any(s.get("commonName", "").startswith("conveyor test registry") for s in subjects), subjects
    assert outbound.registry_ssl_context(settings) is added
