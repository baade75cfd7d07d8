"""Custom domains of an app (pure): the names an app may claim, how its
Ingress serves them, and the Secrets that hold their certificates.

A domain is a lowercase DNS name (RFC 1123): at least two labels of letters,
digits and inner dashes, each at most 63 characters, at most 253 in all. No
wildcards: a wildcard host needs a DNS-01 challenge (cert-manager's HTTP-01
cannot issue one) and would claim every name under it from other apps.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_DOMAINS = 20
MAX_DOMAIN_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# The top-level label is never all digits: that would be an IPv4 address.
_TOP_LEVEL = re.compile(r".*[a-z].*")

# The ingress controller's annotations that redirect plain HTTP to HTTPS
# (ingress-nginx's; CONVEYOR_INGRESS_REDIRECT_ANNOTATIONS names others).
NGINX_REDIRECT_ANNOTATIONS = ("nginx.ingress.kubernetes.io/ssl-redirect", "nginx.ingress.kubernetes.io/force-ssl-redirect")
CLUSTER_ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"


def domain_problem(name: str) -> str | None:
    """What is wrong with `name` as a domain, or None; never repeats it."""
    if len(name) > MAX_DOMAIN_LENGTH:
        return f"a domain is at most {MAX_DOMAIN_LENGTH} characters"
    if name.startswith("*."):
        return "wildcard domains are not supported: list each name"
    labels = name.split(".")
    if len(labels) < 2:
        return "a domain has at least two labels, such as shop.example.com"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "a domain is lowercase letters, digits and inner dashes in dot-separated labels of at most 63 characters"
    if not _TOP_LEVEL.fullmatch(labels[-1]):
        return "a domain's last label has a letter (an IP address is not a domain)"
    return None


def _domain(name: str) -> str:
    if (problem := domain_problem(name)) is not None:
        raise ValueError(problem)
    return name


def _unique(names: list[str]) -> list[str]:
    """Each domain once, in the order first given."""
    return list(dict.fromkeys(names))


Domain = Annotated[str, Field(max_length=MAX_DOMAIN_LENGTH), AfterValidator(_domain)]
Domains = Annotated[list[Domain], Field(max_length=MAX_DOMAINS), AfterValidator(_unique)]


def under(domain: str, base: str) -> bool:
    """Whether `domain` is `base` or a name below it."""
    return domain == base or domain.endswith("." + base)


def tls_secret_name(slug: str, domain: str) -> str:
    """The `kubernetes.io/tls` Secret of one domain of an app. The slug has no
    dots, so `<slug>.tls.` cannot be another app's prefix; a name too long for
    Kubernetes uses the domain's hash (which has no dot, so no domain's name)."""
    name = f"{slug}.tls.{domain}"
    if len(name) <= MAX_DOMAIN_LENGTH:
        return name
    return f"{slug}.tls.{hashlib.sha256(domain.encode()).hexdigest()[:32]}"


def uploaded_ingress_name(slug: str) -> str:
    """With cert-manager on, the second Ingress that serves the domains whose
    certificate was uploaded (cert-manager would replace the certificate of
    any `tls` entry of an Ingress carrying its annotation)."""
    return f"{slug}.uploaded-tls"


def matches(pattern: str, domain: str) -> bool:
    """Whether a certificate's DNS name covers `domain`: equal, or a wildcard
    `*.example.com` for exactly one more label (RFC 6125)."""
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == domain
