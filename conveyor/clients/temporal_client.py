"""One way to connect to Temporal, with the one data converter (payloads encrypted)
and the cluster's transport security (TLS, mTLS or an API key)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from conveyor.clients.payload_codec import data_converter, load_keyring
from conveyor.settings import Settings


class TemporalSettingsError(ValueError):
    """The Temporal connection settings contradict each other or name unreadable files."""


def converter(settings: Settings) -> DataConverter:
    """Blocking (reads the key file)."""
    return data_converter(load_keyring(settings))


def _read(setting: str, path) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalSettingsError(f"CONVEYOR_{setting.upper()}: cannot read {path}: {exc.strerror}") from None


def transport(settings: Settings) -> dict[str, Any]:
    """The `tls` and `api_key` arguments of Client.connect (blocking: reads the PEM files)."""
    cert = _read("temporal_tls_cert_file", settings.temporal_tls_cert_file)
    key = _read("temporal_tls_key_file", settings.temporal_tls_key_file)
    if (cert is None) != (key is None):
        raise TemporalSettingsError(
            "CONVEYOR_TEMPORAL_TLS_CERT_FILE and CONVEYOR_TEMPORAL_TLS_KEY_FILE go together (mTLS needs both)"
        )
    ca = _read("temporal_tls_ca_file", settings.temporal_tls_ca_file)
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    wants_tls = settings.temporal_tls or api_key is not None or any(
        x is not None for x in (cert, ca, settings.temporal_tls_server_name)
    )
    tls: bool | TLSConfig = False
    if wants_tls:
        tls = TLSConfig(
            server_root_ca_cert=ca,
            client_cert=cert,
            client_private_key=key,
            domain=settings.temporal_tls_server_name,
        )
    return {"tls": tls, "api_key": api_key}


async def connect(settings: Settings, interceptors: Sequence[Interceptor] = ()) -> Client:
    options = await asyncio.to_thread(transport, settings)
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=await asyncio.to_thread(converter, settings),
        interceptors=list(interceptors),
        **options,
    )
