"""Custom domains, pure: which names an app may have, the Ingress that serves
them (with uploaded certificates, cert-manager's, or both), the names of
their Secrets, the checks of an uploaded certificate, and the sealing of its key."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from conveyor.clients.payload_codec import Keyring, PayloadKey, PayloadKeyError, seal, unseal
from conveyor.domain import certificates, domains, manifests
from conveyor.domain.planning import AppFacts, ImageSource, plan_update
from conveyor.domain.workload import Workload
from tests.support.certificates import key_pem, make_certificate, new_key
from tests.unit.test_manifests import spec

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    "name",
    ["shop.example.com", "a.b", "xn--bcher-kva.example", "1.example.com", "a-b.c-d.io", f"{'a' * 63}.com", ".".join(["a" * 60] * 4) + ".io"],
)
def test_a_domain_is_a_lowercase_dns_name_of_two_labels_or_more(name):
    assert domains.domain_problem(name) is None, name


@pytest.mark.parametrize(
    "name",
    ["localhost", "Shop.example.com", "*.example.com", "-a.example.com", "a-.example.com", "a..b", "a.b.", ".a.b", "10.0.0.1",
     "a_b.example.com", "a b.com", f"{'a' * 64}.com", ("a" * 62 + ".") * 4 + "com", "shop.example.com\n", ""],
)
def test_anything_else_is_refused_with_a_reason_that_does_not_repeat_it(name):
    problem = domains.domain_problem(name)
    assert problem is not None, name
    assert not name or name.strip(".") not in problem


def test_the_workload_keeps_each_domain_once_in_order_and_no_list_as_none():
    assert Workload(domains=["b.example.com", "a.example.com", "b.example.com"]).domains == ["b.example.com", "a.example.com"]
    assert Workload(domains=[]).domains is None and Workload(domains=[]).stored() is None
    with pytest.raises(ValidationError):
        Workload(domains=[f"d{i}.example.com" for i in range(domains.MAX_DOMAINS + 1)])
    with pytest.raises(ValidationError) as refused:
        Workload(domains=["UPPER.example.com"])
    assert "UPPER" not in str(refused.value.errors(include_input=False))


def test_a_change_of_domains_or_redirect_http_is_a_release_of_the_running_image():
    facts = AppFacts(image_url="r/x:1", port=80, replicas=1, env={}, runs_pinned_image=True, workload=Workload(domains=["a.example.com"]))
    plan = plan_update(facts, {"domains": ["a.example.com", "b.example.com"]})
    assert plan.release_from is ImageSource.RUNNING and "domains" in plan.release_summary
    assert plan.changes["workload"] == {"domains": ["a.example.com", "b.example.com"]}
    assert plan_update(facts, {"domains": ["a.example.com"]}).release_from is None
    assert plan_update(facts, {"redirect_http": True}).changes["workload"] == {"domains": ["a.example.com"], "redirect_http": True}
    assert plan_update(facts, {"domains": None}).changes["workload"] is None


def ingresses(**fields) -> list[dict]:
    return [o for o in manifests.render(spec(**fields), b"k" * 32) if o["kind"] == "Ingress"]


def hosts(ingress: dict) -> list[str]:
    return [rule["host"] for rule in ingress["spec"]["rules"]]


def test_without_domains_the_ingress_is_the_default_host_alone_as_before():
    [ingress] = ingresses()
    assert hosts(ingress) == ["my-api.apps.example.com"] and "tls" not in ingress["spec"] and "annotations" not in ingress["metadata"]
    # An issuer set changes nothing for an app without domains.
    assert ingresses(tls_cluster_issuer="letsencrypt") == [ingress]


def test_each_domain_is_a_rule_to_the_apps_service_and_an_uploaded_certificate_a_tls_entry():
    [ingress] = ingresses(domains=["shop.example.com", "www.shop.example.com"], uploaded_certificates=["www.shop.example.com"])
    assert hosts(ingress) == ["my-api.apps.example.com", "shop.example.com", "www.shop.example.com"]
    backends = {path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    assert backends == {"my-api"}
    assert ingress["spec"]["tls"] == [{"hosts": ["www.shop.example.com"], "secretName": "my-api.tls.www.shop.example.com"}]


def test_with_a_cluster_issuer_every_domain_gets_cert_managers_annotation_and_tls_entry():
    [ingress] = ingresses(domains=["shop.example.com", "api.shop.example.com"], tls_cluster_issuer="letsencrypt-prod")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}
    assert ingress["spec"]["tls"] == [
        {"hosts": ["shop.example.com"], "secretName": "my-api.tls.shop.example.com"},
        {"hosts": ["api.shop.example.com"], "secretName": "my-api.tls.api.shop.example.com"},
    ]
    # The default host is the platform's: its certificate is the controller's, not cert-manager's.
    assert all("my-api.apps.example.com" not in entry["hosts"] for entry in ingress["spec"]["tls"])


def test_uploaded_certificates_beside_a_cluster_issuer_are_served_by_an_ingress_cert_manager_leaves_alone():
    issued, uploaded = ingresses(domains=["a.example.com", "b.example.com"], uploaded_certificates=["b.example.com"], tls_cluster_issuer="le")
    assert hosts(issued) == ["my-api.apps.example.com", "a.example.com"] and issued["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "le"}
    assert uploaded["metadata"]["name"] == "my-api.uploaded-tls" and hosts(uploaded) == ["b.example.com"]
    assert "annotations" not in uploaded["metadata"] and uploaded["spec"]["tls"] == [{"hosts": ["b.example.com"], "secretName": "my-api.tls.b.example.com"}]
    # All uploaded: the main Ingress carries no issuer at all.
    main, _ = ingresses(domains=["b.example.com"], uploaded_certificates=["b.example.com"], tls_cluster_issuer="le")
    assert hosts(main) == ["my-api.apps.example.com"] and "annotations" not in main["metadata"]


def test_redirect_http_sets_the_controllers_annotations_both_ways_and_unset_sets_none():
    names = list(domains.NGINX_REDIRECT_ANNOTATIONS)
    [on] = ingresses(domains=["a.example.com"], redirect_http=True, redirect_annotations=names)
    assert on["metadata"]["annotations"] == dict.fromkeys(names, "true")
    [off] = ingresses(redirect_http=False, redirect_annotations=["traefik.example/redirect"])
    assert off["metadata"]["annotations"] == {"traefik.example/redirect": "false"}
    [unset] = ingresses(domains=["a.example.com"], redirect_annotations=names)
    assert "annotations" not in unset["metadata"]


def test_tls_secret_names_never_collide_across_apps_and_stay_within_kubernetes_limits():
    assert domains.tls_secret_name("a", "tls-x.com") != domains.tls_secret_name("a-tls", "x.com")
    long = ".".join(["a" * 60] * 4)
    name = domains.tls_secret_name("s" * 63, long)
    assert len(name) <= 253 and name.startswith("s" * 63 + ".tls.") and "." not in name.removeprefix("s" * 63 + ".tls.")


def test_an_uploaded_certificates_secret_is_kubernetes_tls_with_the_chain_and_key():
    secret = manifests.tls_secret(spec(), "shop.example.com", "CHAIN", "KEY")
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "my-api.tls.shop.example.com"
    assert secret["metadata"]["labels"]["conveyor.dev/tls"] == "uploaded" and secret["metadata"]["labels"]["conveyor.dev/app-id"] == "app_1"
    assert base64.b64decode(secret["data"]["tls.key"]) == b"KEY" and base64.b64decode(secret["data"]["tls.crt"]) == b"CHAIN"


@pytest.mark.parametrize(
    ("pattern", "domain", "covered"),
    [
        ("shop.example.com", "shop.example.com", True),
        ("*.example.com", "shop.example.com", True),
        ("*.example.com", "a.shop.example.com", False),
        ("*.example.com", "example.com", False),
        ("SHOP.example.com", "shop.example.com", True),
        ("other.example.com", "shop.example.com", False),
    ],
)
def test_a_certificate_name_covers_a_domain_exactly_or_by_a_one_label_wildcard(pattern, domain, covered):
    assert domains.matches(pattern, domain) is covered


def test_a_matching_valid_certificate_passes_with_its_names_and_dates():
    made = make_certificate("shop.example.com", "*.shop.example.com")
    checked = certificates.check(made.certificate, made.key, "www.shop.example.com", NOW)
    assert checked.names == ["shop.example.com", "*.shop.example.com"] and checked.not_after == made.not_after
    assert checked.chain_pem.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" in checked.key_pem and len(checked.fingerprint) == 64


def refusal(certificate: str, key: str, domain: str = "shop.example.com") -> certificates.CertificateProblem:
    with pytest.raises(certificates.CertificateProblem) as refused:
        certificates.check(certificate, key, domain, NOW)
    assert key not in refused.value.message
    return refused.value


def test_a_key_of_another_certificate_an_expired_one_and_one_for_other_names_are_refused():
    made = make_certificate("shop.example.com")
    assert refusal(made.certificate, key_pem(new_key())).field == "key"
    expired = make_certificate("shop.example.com", days=-1, valid_from_days=-30)
    problem = refusal(expired.certificate, expired.key)
    assert problem.field == "certificate" and "expired" in problem.message
    future = make_certificate("shop.example.com", days=60, valid_from_days=2)
    assert "not valid before" in refusal(future.certificate, future.key).message
    assert "does not cover" in refusal(made.certificate, made.key, "other.example.com").message
    # The subject's CN is not a name browsers accept: only subjectAltName counts.
    no_san = make_certificate(subject="shop.example.com")
    assert refusal(no_san.certificate, no_san.key).field == "certificate"


def test_what_is_not_pem_or_is_encrypted_is_refused_naming_the_field():
    made = make_certificate("shop.example.com")
    assert refusal("not a certificate", made.key).field == "certificate"
    assert refusal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", made.key).field == "certificate"
    assert refusal(made.certificate, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").field == "key"
    from cryptography.hazmat.primitives import serialization

    key = new_key()
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")).decode()
    assert "passphrase" in refusal(make_certificate("shop.example.com", key=key).certificate, locked).message
    assert refusal("x" * (certificates.MAX_CERTIFICATE_BYTES + 1), made.key).field == "certificate"


def test_a_sealed_key_opens_with_any_key_of_the_ring_and_only_for_its_own_app_and_domain():
    old, new = PayloadKey("old", os.urandom(32)), PayloadKey("new", os.urandom(32))
    sealed = seal(Keyring((old,)), b"PRIVATE", "tls-key/app_1/shop.example.com")
    assert sealed.startswith("old:") and b"PRIVATE" not in base64.b64decode(sealed.partition(":")[2])
    rotated = Keyring((new, old))
    assert unseal(rotated, sealed, "tls-key/app_1/shop.example.com") == b"PRIVATE"
    with pytest.raises(PayloadKeyError):
        unseal(rotated, sealed, "tls-key/app_2/shop.example.com")
    with pytest.raises(PayloadKeyError):
        unseal(Keyring((new,)), sealed, "tls-key/app_1/shop.example.com")
