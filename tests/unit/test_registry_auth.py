"""Registry credentials as the distribution spec and Kubernetes use them:
registry names, 401 challenges, the pull Secret's .dockerconfigjson."""

from __future__ import annotations

import base64
import json

import pytest

from conveyor.domain import images, manifests, registry_auth
from conveyor.domain.registry_auth import Credential


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("ghcr.io", "ghcr.io"),
        ("GHCR.IO", "ghcr.io"),
        ("https://ghcr.io/", "ghcr.io"),
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("127.0.0.1:5443", "127.0.0.1:5443"),
        ("[::1]:5000", "[::1]:5000"),
        ("registry.internal:5000", "registry.internal:5000"),
    ],
)
def test_registry_names_are_kept_under_one_key(given, key):
    assert registry_auth.registry_key(given) == key


@pytest.mark.parametrize("bad", ["", "ghcr.io/team", "no_dots", "host:99999", "a b", "ghcr.io@x", "-bad-.io"])
def test_what_is_not_a_registry_host_is_refused_without_echo(bad):
    with pytest.raises(registry_auth.InvalidRegistry) as refused:
        registry_auth.registry_key(bad)
    assert not bad or bad not in str(refused.value)


def test_an_image_is_matched_to_the_credential_of_its_registry():
    assert registry_auth.image_registry_key(images.parse("nginx:1")) == "docker.io"
    assert registry_auth.image_registry_key(images.parse("docker.io/team/x:1")) == "docker.io"
    assert registry_auth.image_registry_key(images.parse("ghcr.io/team/x:1")) == "ghcr.io"


def test_bearer_challenges_are_parsed_as_the_spec_writes_them():
    challenge = registry_auth.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.params["service"] == "registry.docker.io"
    assert challenge.params["scope"] == "repository:library/nginx:pull"
    assert registry_auth.token_scope("library/nginx", challenge) == "repository:library/nginx:pull"


def test_challenge_variants():
    basic = registry_auth.parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic" and basic.realm == "Registry Realm"
    spaced = registry_auth.parse_challenge('bearer  realm = "https://r.example/t" , service=r.example, scope="repository:a/b:pull,push"')
    assert spaced is not None and spaced.realm == "https://r.example/t" and spaced.params["service"] == "r.example"
    assert spaced.params["scope"] == "repository:a/b:pull,push"
    escaped = registry_auth.parse_challenge(r'Bearer realm="https://r.example/t?x=\"y\""')
    assert escaped is not None and escaped.realm == 'https://r.example/t?x="y"'
    assert registry_auth.parse_challenge('Negotiate abc') is None
    assert registry_auth.parse_challenge("") is None
    # A scope for another repository is not taken: only pull of the one asked for.
    other = registry_auth.parse_challenge('Bearer realm="https://r.example/t",scope="repository:other/repo:pull"')
    assert other is not None and registry_auth.token_scope("team/web", other) == "repository:team/web:pull"


def test_the_docker_config_holds_each_registry_and_docker_hub_under_its_config_key_too():
    config = json.loads(
        registry_auth.docker_config([Credential("ghcr.io", "ci", "tok:en"), Credential("docker.io", "me", "pw")])
    )
    assert set(config["auths"]) == {"ghcr.io", "docker.io", "https://index.docker.io/v1/"}
    ghcr = config["auths"]["ghcr.io"]
    assert (ghcr["username"], ghcr["password"]) == ("ci", "tok:en")
    assert base64.b64decode(ghcr["auth"]).decode() == "ci:tok:en"
    assert json.loads(registry_auth.docker_config([])) == {"auths": {}}


def test_a_credential_never_shows_its_password_in_repr():
    assert "hunter2" not in repr(Credential("ghcr.io", "me", "hunter2"))


def test_the_pull_secret_is_a_dockerconfigjson_secret_of_the_namespace():
    config = registry_auth.docker_config([Credential("ghcr.io", "ci", "s3cret")])
    secret = manifests.pull_secret("conveyor-team", config)
    assert secret["kind"] == "Secret" and secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["name"] == manifests.PULL_SECRET and secret["metadata"]["namespace"] == "conveyor-team"
    # Shared by the project's apps: no app label, so deleting an app leaves it.
    assert manifests.LABEL_APP not in secret["metadata"]["labels"]
    assert json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])) == json.loads(config)
