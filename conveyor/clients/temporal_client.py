"""One way to connect to Temporal, with the one data converter (payloads encrypted)
and the cluster's transport security (TLS, mTLS or an API key).

The connection is the one the `temporal` CLI would make: the TEMPORAL_*
variables and the profile of its TOML config file (temporalio.envconfig, loaded
by Settings), with each CONVEYOR_TEMPORAL_* setting that is set in place of
what it names. The address and the namespace are merged by Settings; TLS, the
API key and gRPC metadata here, where the PEM files are read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigTLS, DataSource
from temporalio.service import TLSConfig

from conveyor.clients.payload_codec import data_converter, load_keyring
from conveyor.settings import Settings


class TemporalSettingsError(ValueError):
    """The Temporal connection settings contradict each other or name unreadable files."""


def converter(settings: Settings) -> DataConverter:
    """Blocking (reads the key file)."""
    return data_converter(load_keyring(settings))


def _read(setting: str, path: Path | None) -> bytes | None:
    """A PEM file a CONVEYOR_TEMPORAL_* setting names."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalSettingsError(f"CONVEYOR_{setting.upper()}: cannot read {path}: {exc.strerror}") from None


def _read_profile(what: str, source: DataSource | None) -> bytes | None:
    """A PEM of the Temporal client config: a path (TEMPORAL_TLS_*_PATH, `path`
    in the TOML file) or the data itself (TEMPORAL_TLS_*_DATA, `data`)."""
    if source is None:
        return None
    if isinstance(source, Path):
        try:
            return source.read_bytes()
        except OSError as exc:
            raise TemporalSettingsError(
                f"the Temporal client config's {what} (TEMPORAL_TLS_* or the profile's tls): cannot read {source}: {exc.strerror}"
            ) from None
    return source.encode() if isinstance(source, str) else source


def _client_pair(settings: Settings, profile_tls: ClientConfigTLS) -> tuple[bytes | None, bytes | None]:
    """The mTLS client certificate and key: both from CONVEYOR_* or both from the profile."""
    if settings.temporal_tls_cert_file is not None or settings.temporal_tls_key_file is not None:
        cert = _read("temporal_tls_cert_file", settings.temporal_tls_cert_file)
        key = _read("temporal_tls_key_file", settings.temporal_tls_key_file)
        if cert is None or key is None:
            raise TemporalSettingsError(
                "CONVEYOR_TEMPORAL_TLS_CERT_FILE and CONVEYOR_TEMPORAL_TLS_KEY_FILE go together (mTLS needs both)"
            )
        return cert, key
    cert = _read_profile("client certificate", profile_tls.client_cert)
    key = _read_profile("client key", profile_tls.client_private_key)
    if (cert is None) != (key is None):
        raise TemporalSettingsError(
            "the Temporal client config has a client certificate without its key or a key without its certificate "
            "(TEMPORAL_TLS_CLIENT_CERT_* and TEMPORAL_TLS_CLIENT_KEY_*, or the profile's tls.client_cert and tls.client_key)"
        )
    return cert, key


def transport(settings: Settings) -> dict[str, Any]:
    """The `tls`, `api_key` and `rpc_metadata` arguments of Client.connect
    (blocking: reads the PEM files)."""
    profile = settings.temporal_profile
    profile_tls = (profile.tls if profile else None) or ClientConfigTLS()
    if settings.temporal_api_key is not None:
        api_key: str | None = settings.temporal_api_key.get_secret_value()
    else:
        api_key = profile.api_key if profile else None
    if settings.temporal_tls_ca_file is not None:
        ca = _read("temporal_tls_ca_file", settings.temporal_tls_ca_file)
    else:
        ca = _read_profile("server CA certificate", profile_tls.server_root_ca_cert)
    cert, key = _client_pair(settings, profile_tls)
    server_name = settings.temporal_tls_server_name or profile_tls.server_name

    # On or off: CONVEYOR_TEMPORAL_TLS=true, or any CONVEYOR_* file, server name
    # or API key, turns TLS on; CONVEYOR_TEMPORAL_TLS=false (without those)
    # turns it off; else the profile decides as the `temporal` CLI does
    # (TEMPORAL_TLS / tls.disabled, else on when it names an API key or TLS material).
    conveyor_asks = any(
        value is not None
        for value in (
            settings.temporal_api_key,
            settings.temporal_tls_ca_file,
            settings.temporal_tls_cert_file,
            settings.temporal_tls_server_name,
        )
    )
    if settings.temporal_tls or conveyor_asks:
        wants_tls = True
    elif settings.temporal_tls is False:
        wants_tls = False
    elif profile_tls.disabled is not None:
        wants_tls = not profile_tls.disabled
    else:
        wants_tls = any(value is not None for value in (api_key, ca, cert, server_name))
    tls: bool | TLSConfig = False
    if wants_tls:
        tls = TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=server_name)
    return {"tls": tls, "api_key": api_key, "rpc_metadata": dict(profile.grpc_meta) if profile else {}}


async def connect(settings: Settings, interceptors: Sequence[Interceptor] = ()) -> Client:
    options = await asyncio.to_thread(transport, settings)
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=await asyncio.to_thread(converter, settings),
        interceptors=list(interceptors),
        **options,
    )
