"""Transport settings for a Temporal cluster beyond the dev server: TLS, mTLS, API key."""

from __future__ import annotations

import pytest
from temporalio.service import TLSConfig

from conveyor.clients.temporal_client import TemporalSettingsError, transport
from conveyor.settings import Settings


def test_dev_server_is_plain(tmp_path):
    assert transport(Settings(home=tmp_path)) == {"tls": False, "api_key": None}


def test_mtls_reads_the_client_certificate_key_and_ca(tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_bytes(f"-----{name}-----".encode())
    options = transport(
        Settings(
            home=tmp_path,
            temporal_tls_ca_file=tmp_path / "ca.pem",
            temporal_tls_cert_file=tmp_path / "cert.pem",
            temporal_tls_key_file=tmp_path / "key.pem",
            temporal_tls_server_name="ns.tmprl.cloud",
        )
    )
    tls = options["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key) == (b"-----ca-----", b"-----cert-----", b"-----key-----")
    assert tls.domain == "ns.tmprl.cloud" and options["api_key"] is None


def test_api_key_implies_tls_with_the_system_roots(tmp_path):
    options = transport(Settings(home=tmp_path, temporal_api_key="k-123"))
    assert options["api_key"] == "k-123"
    assert isinstance(options["tls"], TLSConfig) and options["tls"].server_root_ca_cert is None


def test_certificate_without_key_is_refused_naming_both_settings(tmp_path):
    (tmp_path / "cert.pem").write_bytes(b"x")
    with pytest.raises(TemporalSettingsError, match="CONVEYOR_TEMPORAL_TLS_CERT_FILE and CONVEYOR_TEMPORAL_TLS_KEY_FILE"):
        transport(Settings(home=tmp_path, temporal_tls_cert_file=tmp_path / "cert.pem"))


def test_unreadable_file_names_the_setting(tmp_path):
    with pytest.raises(TemporalSettingsError, match="CONVEYOR_TEMPORAL_TLS_CA_FILE"):
        transport(Settings(home=tmp_path, temporal_tls_ca_file=tmp_path / "missing.pem"))
