"""TLS certificates made in the test (`cryptography`): self-signed, for the
names and dates a test needs, with their PEM keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Made:
    certificate: str
    key: str
    not_after: datetime


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def make_certificate(
    *names: str, key: ec.EllipticCurvePrivateKey | None = None, days: float = 30, valid_from_days: float = -1, subject: str | None = None
) -> Made:
    """A self-signed certificate whose subjectAltName lists `names`, valid from
    `valid_from_days` (negative: in the past) for `days` more."""
    key = key or new_key()
    start = datetime.now(UTC) + timedelta(days=valid_from_days)
    end = datetime.now(UTC) + timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject or (names[0] if names else "nobody"))])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return Made(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key), cert.not_valid_after_utc)
