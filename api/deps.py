"""Dependencies: settings, database session, Temporal client, the caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.orm import Session
from temporalio.client import Client

from conveyor.clients.db import tokens
from conveyor.clients.db.session import read_scope
from conveyor.clients.payload_codec import Keyring
from conveyor.clients.temporal_client import connect
from conveyor.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    """A read session for plain `def` routes (FastAPI runs them in its thread pool)."""
    with read_scope(settings.effective_database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]

T = TypeVar("T")


# Each event loop's limiter of the short reads' threads (`api_read_threads`).
_read_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = WeakKeyDictionary()


def read_limiter(settings: Settings) -> CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _read_limiters.get(loop)
    if limiter is None:
        limiter = _read_limiters[loop] = CapacityLimiter(settings.api_read_threads)
    return limiter


async def read_off_loop(settings: Settings, work: Callable[..., T], *args: Any) -> T:
    """Run `work(session, *args)` in a short read session on a thread.

    For `async` routes: nothing touches the database on the event loop, and no
    transaction stays open while the route awaits Temporal or Kubernetes.

    The reads have threads of their own (`api_read_threads`), apart from the
    pool that runs writes and plain routes: a burst of writes waiting their
    turn on the database (200 apps created at once) never holds up the
    caller's token or a list behind it. Measured with 200 concurrent deploys:
    `GET /apps?limit=50` p99 while their POSTs arrived, 1944 ms with one
    pool, 391 ms with the reads apart."""

    def run() -> T:
        with read_scope(settings.effective_database_url) as session:
            return work(session, *args)

    return await to_thread.run_sync(run, limiter=read_limiter(settings))


# After a failed connection attempt, the next one waits this long.
RECONNECT_AFTER_SECONDS = 2.0


class TemporalConnector:
    """Connects on first use, so the API starts even while Temporal is down."""

    def __init__(self, settings: Settings, interceptors: list | None = None):
        self.settings = settings
        self.interceptors = interceptors or []
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._failed: tuple[float, Exception] | None = None

    async def client(self) -> Client:
        """The shared client; raises when Temporal cannot be reached yet.

        A failed attempt is remembered for a moment, so that requests arriving
        while Temporal is away fail at once instead of queueing behind one
        another's connection attempts."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                now = time.monotonic()
                if self._failed is not None and now - self._failed[0] < RECONNECT_AFTER_SECONDS:
                    raise self._failed[1]
                try:
                    self._client = await connect(self.settings, self.interceptors)
                except Exception as exc:
                    self._failed = (now, exc)
                    raise
            return self._client

    async def get(self) -> Client:
        try:
            return await self.client()
        except Exception as exc:  # noqa: BLE001
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal at {self.settings.temporal_address} is unreachable: {exc}"
            ) from exc


async def get_temporal(request: Request) -> Client:
    return await request.app.state.temporal.get()


TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_keyring(request: Request) -> Keyring:
    """The payload keyring (loaded at start): it also seals secrets kept in the database."""
    keyring: Keyring = request.app.state.codec.keyring
    return keyring


KeyringDep = Annotated[Keyring, Depends(get_keyring)]


async def get_temporal_connector(request: Request) -> TemporalConnector:
    """The connector itself, for a route that decides what Temporal's absence means."""
    return request.app.state.temporal


TemporalConnectorDep = Annotated[TemporalConnector, Depends(get_temporal_connector)]


@dataclass(frozen=True)
class Caller:
    token_id: str
    name: str
    role: str
    project_id: str


def bearer_secret(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing Authorization: Bearer <token> header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return authorization[7:].strip()


def caller_by_secret(session: Session, secret: str) -> Caller:
    token = tokens.find_token(session, secret)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return caller_of(token)


async def get_caller(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> Caller:
    # Its own short read: the caller's identity must not keep a transaction open.
    return await read_off_loop(settings, caller_by_secret, bearer_secret(authorization))


def caller_of(token: Any) -> Caller:
    return Caller(token_id=token.id, name=token.name, role=token.role, project_id=token.project_id)


def check_role(caller: Caller, role: str) -> Caller:
    if not tokens.role_allows(caller.role, role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role; your token has {caller.role}")
    return caller


def require(role: str):
    async def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        return check_role(caller, role)

    return check


Viewer = Annotated[Caller, Depends(require("viewer"))]
Deployer = Annotated[Caller, Depends(require("deployer"))]
Admin = Annotated[Caller, Depends(require("admin"))]
