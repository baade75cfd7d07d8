"""Transport settings for a Temporal cluster beyond the dev server: TLS, mTLS,
API key, read from the CONVEYOR_TEMPORAL_* settings and, beneath them, from
the TEMPORAL_* variables and profiles the `temporal` CLI reads."""

from __future__ import annotations

import os

import pytest
from temporalio.service import TLSConfig

from conveyor.clients.temporal_client import TemporalSettingsError, transport
from conveyor.settings import Settings


@pytest.fixture(autouse=True)
def no_ambient_temporal_config(monkeypatch, tmp_path):
    """Neither this machine's TEMPORAL_* variables nor its config file."""
    for key in list(os.environ):
        if key.startswith(("TEMPORAL_", "CONVEYOR_TEMPORAL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_dev_server_is_plain(tmp_path):
    assert transport(Settings(home=tmp_path)) == {"tls": False, "api_key": None, "rpc_metadata": {}}


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


# -- the Temporal client config (temporalio.envconfig), as the `temporal` CLI reads it


def test_nothing_configured_loads_no_profile(tmp_path):
    settings = Settings(home=tmp_path)
    assert settings.temporal_profile is None
    assert (settings.temporal_address, settings.temporal_namespace) == ("127.0.0.1:7233", "default")


def test_temporal_variables_are_read_as_the_cli_reads_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "europe-west3.gcp.api.temporal.io:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "conveyor.acct1")
    monkeypatch.setenv("TEMPORAL_API_KEY", "k-env")
    settings = Settings(home=tmp_path)
    assert settings.temporal_address == "europe-west3.gcp.api.temporal.io:7233"
    assert settings.temporal_namespace == "conveyor.acct1"
    options = transport(settings)
    assert options["api_key"] == "k-env"
    assert isinstance(options["tls"], TLSConfig) and options["tls"].server_root_ca_cert is None


def test_a_profile_of_the_config_file_with_mtls_and_grpc_metadata(monkeypatch, tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_bytes(f"-----{name}-----".encode())
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "127.0.0.1:7233"\n\n'
        '[profile.prod]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\n'
        f'[profile.prod.tls]\nserver_name = "ns.acct.tmprl.cloud"\nserver_ca_cert_path = "{tmp_path / "ca.pem"}"\n'
        f'client_cert_path = "{tmp_path / "cert.pem"}"\nclient_key_path = "{tmp_path / "key.pem"}"\n'
        '[profile.prod.grpc_meta]\nx-team = "platform"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    settings = Settings(home=tmp_path)
    assert (settings.temporal_address, settings.temporal_namespace) == ("ns.acct.tmprl.cloud:7233", "ns.acct")
    options = transport(settings)
    tls = options["tls"]
    assert isinstance(tls, TLSConfig) and tls.domain == "ns.acct.tmprl.cloud"
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key) == (b"-----ca-----", b"-----cert-----", b"-----key-----")
    assert options["api_key"] is None and options["rpc_metadata"] == {"x-team": "platform"}


def test_the_config_file_at_its_default_place_is_read(tmp_path):
    default = tmp_path / "xdg" / "temporalio" / "temporal.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[profile.default]\naddress = "temporal.internal:7233"\nnamespace = "conveyor"\n')
    settings = Settings(home=tmp_path)
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal.internal:7233", "conveyor")
    assert transport(settings)["tls"] is False


def test_conveyor_settings_that_are_set_win(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "from-temporal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "from-temporal")
    monkeypatch.setenv("TEMPORAL_API_KEY", "k-temporal")
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "temporal.example")
    monkeypatch.setenv("CONVEYOR_TEMPORAL_ADDRESS", "from-conveyor:7233")
    monkeypatch.setenv("CONVEYOR_TEMPORAL_API_KEY", "k-conveyor")
    settings = Settings(home=tmp_path, temporal_namespace="given")
    assert (settings.temporal_address, settings.temporal_namespace) == ("from-conveyor:7233", "given")
    options = transport(settings)
    assert options["api_key"] == "k-conveyor"
    assert options["tls"].domain == "temporal.example", "what CONVEYOR_* does not set still comes from TEMPORAL_*"


def test_conveyor_tls_false_turns_off_the_tls_of_the_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_TLS", "true")
    assert isinstance(transport(Settings(home=tmp_path))["tls"], TLSConfig)
    assert transport(Settings(home=tmp_path, temporal_tls=False))["tls"] is False


def test_temporal_tls_false_keeps_an_api_key_in_plaintext_as_the_cli_does(monkeypatch, tmp_path):
    # e.g. a local proxy in front of Temporal Cloud that adds TLS itself.
    monkeypatch.setenv("TEMPORAL_API_KEY", "k-proxy")
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    assert transport(Settings(home=tmp_path)) == {"tls": False, "api_key": "k-proxy", "rpc_metadata": {}}


def test_pem_data_in_a_variable_is_used_as_it_is(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_DATA", "-----ca data-----")
    tls = transport(Settings(home=tmp_path))["tls"]
    assert isinstance(tls, TLSConfig) and tls.server_root_ca_cert == b"-----ca data-----"


def test_an_unknown_profile_stops_with_a_message_naming_the_config(monkeypatch, tmp_path):
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.default]\naddress = "127.0.0.1:7233"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "staging")
    with pytest.raises(ValueError, match="Temporal client config.*staging"):
        Settings(home=tmp_path)


def test_an_unreadable_file_of_the_profile_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(TemporalSettingsError, match="Temporal client config's server CA certificate.*missing.pem"):
        transport(Settings(home=tmp_path))


def test_a_profile_certificate_without_its_key_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_DATA", "-----cert-----")
    with pytest.raises(TemporalSettingsError, match="client certificate without its key"):
        transport(Settings(home=tmp_path))
