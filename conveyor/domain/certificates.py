"""Checks of an uploaded TLS certificate and key (pure: `cryptography` parses,
nothing is read or sent). A problem is a `CertificateProblem` naming the field
(`certificate` or `key`) and never repeating what was given."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from conveyor.domain.domains import matches

MAX_CERTIFICATE_BYTES = 64 * 1024
MAX_KEY_BYTES = 16 * 1024
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def certificate_context(app_id: str, domain: str) -> str:
    """What a sealed certificate key is bound to (payload_codec.seal): its app and domain."""
    return f"tls-key/{app_id}/{domain}"


class CertificateProblem(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class CheckedCertificate:
    """A certificate chain and key that passed: PEM as stored, the leaf's names and dates."""

    chain_pem: str
    key_pem: str = field(repr=False)
    names: list[str]
    not_before: datetime
    not_after: datetime
    fingerprint: str  # sha256 of the leaf certificate's DER, hex
    issuer: str


def _dns_names(leaf: x509.Certificate) -> list[str]:
    """The leaf's DNS names: its subjectAltName (browsers ignore the subject's CN)."""
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in extension.value.get_values_for_type(x509.DNSName)]


def check(certificate: str, key: str, domain: str, now: datetime) -> CheckedCertificate:
    """The certificate chain (leaf first) and its private key, checked for
    `domain` at `now`: both parse, the key is the leaf's, the leaf names the
    domain (or a wildcard over it), and it is valid now."""
    if len(certificate.encode()) > MAX_CERTIFICATE_BYTES:
        raise CertificateProblem("certificate", f"at most {MAX_CERTIFICATE_BYTES} bytes of PEM")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise CertificateProblem("key", f"at most {MAX_KEY_BYTES} bytes of PEM")
    if PEM_CERTIFICATE not in certificate:
        raise CertificateProblem("certificate", "must be PEM: one or more -----BEGIN CERTIFICATE----- blocks, the domain's own first")
    try:
        chain = x509.load_pem_x509_certificates(certificate.encode())
    except ValueError:
        raise CertificateProblem("certificate", "is not a PEM certificate chain that can be read") from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        raise CertificateProblem("key", "is encrypted with a passphrase: upload the key without one") from None
    except ValueError:
        raise CertificateProblem("key", "is not a PEM private key that can be read (PKCS#8, PKCS#1 or SEC1)") from None
    except Exception:  # noqa: BLE001 - cryptography raises UnsupportedAlgorithm for unknown kinds
        raise CertificateProblem("key", "is a private key of a kind that is not supported") from None
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | dsa.DSAPrivateKey):
        raise CertificateProblem("key", "is a private key of a kind that is not supported")
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise CertificateProblem("key", "does not match the certificate: its public key is not the first certificate's")
    names = _dns_names(leaf)
    if not any(matches(name, domain) for name in names):
        raise CertificateProblem("certificate", "does not cover this domain: none of its subjectAltName DNS names matches it")
    if leaf.not_valid_after_utc <= now:
        raise CertificateProblem("certificate", f"expired on {leaf.not_valid_after_utc.isoformat().replace('+00:00', 'Z')}")
    if leaf.not_valid_before_utc > now:
        raise CertificateProblem("certificate", f"is not valid before {leaf.not_valid_before_utc.isoformat().replace('+00:00', 'Z')}")
    return CheckedCertificate(
        chain_pem="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain),
        key_pem=private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        issuer=leaf.issuer.rfc4514_string()[:500],
    )
