"""One way to connect to Temporal, with the one data converter (payloads encrypted)."""

from __future__ import annotations

import asyncio
from typing import Sequence

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter

from conveyor.codec import data_converter, load_keyring
from conveyor.settings import Settings


def converter(settings: Settings) -> DataConverter:
    """Blocking (reads the key file)."""
    return data_converter(load_keyring(settings))


async def connect(settings: Settings, interceptors: Sequence[Interceptor] = ()) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=await asyncio.to_thread(converter, settings),
        interceptors=list(interceptors),
    )
