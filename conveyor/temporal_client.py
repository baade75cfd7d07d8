"""One way to connect to Temporal, with the one data converter."""

from __future__ import annotations

from typing import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from conveyor.settings import Settings


async def connect(settings: Settings, interceptors: Sequence[Interceptor] = ()) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=list(interceptors),
    )
