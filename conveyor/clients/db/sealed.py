"""Columns encrypted at rest with the payload keyring (AES-256-GCM).

App and deployment env values and registry passwords are secrets; a database
backup must not be a list of them. `Sealed` is a JSON column whose value is
stored as an envelope:

    {"$sealed": 1, "kid": "<payload key id>", "data": "<base64 nonce + ciphertext>"}

sealed by `payload_codec.seal` (the one at-rest cipher, which certificate
keys use too: AES-256-GCM with a key derived from the payload key `kid`
names, never the payload key itself), the column's purpose bound in as
associated data, so a value cannot be moved to another kind of column. The newest key seals; every
key of the ring opens, so a rotation (`conveyor payload-key rotate`) keeps old
rows readable, and a row is sealed with the new key the next time it is
written. A plain JSON value (a row written before revision 0014, or by a
process of the previous release during a rolling upgrade) reads as it is:
`$sealed` is not an environment variable name, so no env is mistaken for an
envelope.

The API and the worker give the ring at start (`use_keyring`); any other
process loads it from the settings on first use.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from conveyor.clients import payload_codec
from conveyor.clients.payload_codec import Keyring, PayloadKeyError, load_keyring

MARKER = "$sealed"
VERSION = 1

_rings: list[Keyring] = []
_lock = threading.Lock()


def use_keyring(keyring: Keyring) -> None:
    """Seal with this ring's newest key from now on; every ring given stays able to open."""
    with _lock:
        if keyring in _rings:
            _rings.remove(keyring)
        _rings.insert(0, keyring)


def _keyrings() -> list[Keyring]:
    with _lock:
        if not _rings:
            from conveyor.settings import get_settings

            _rings.append(load_keyring(get_settings()))
        return list(_rings)


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARKER) == VERSION and "kid" in value and "data" in value


def seal(value: Any, purpose: str, keyring: Keyring | None = None) -> dict[str, Any]:
    kid, _, data = payload_codec.seal(keyring or _keyrings()[0], json.dumps(value, sort_keys=True).encode(), purpose).partition(":")
    return {MARKER: VERSION, "kid": kid, "data": data}


def open_sealed(value: Any, purpose: str, keyrings: list[Keyring] | None = None) -> Any:
    """The value of an envelope; anything else (a plaintext row) as it is."""
    if not is_sealed(value):
        return value
    kid = str(value["kid"])
    rings = [ring for ring in (keyrings or _keyrings()) if ring.get(kid) is not None]
    if not rings:
        raise PayloadKeyError(f"a {purpose} value is sealed with payload key {kid!r}, which is not in the keyring")
    for ring in rings:
        try:
            return json.loads(payload_codec.unseal(ring, f"{kid}:{value['data']}", purpose))
        except PayloadKeyError:
            continue
    raise PayloadKeyError(f"a {purpose} value sealed with payload key {kid!r} does not authenticate")


class Sealed(TypeDecorator[Any]):
    """A JSON column sealed at rest; reads open envelopes and pass plaintext through."""

    impl = JSON
    cache_ok = True

    def __init__(self, purpose: str):
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # Nothing to hide in an empty value (most apps' env): kept plain, it costs no cipher to list.
        if value is None or value == {} or is_sealed(value):
            return value
        return seal(value, self.purpose)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return open_sealed(value, self.purpose)


# How many rows a migration seals per statement batch.
BATCH = 500
# Every sealed column: (table, column, purpose).
SEALED_COLUMNS = (
    ("apps", "env", "env"),
    ("deployments", "env", "env"),
    ("registry_credentials", "password", "registry-password"),
    ("idempotency_keys", "body", "idempotent-answer"),
)


def reseal_rows(connection: Any, table: str, column: str, purpose: str, keyring: Keyring) -> int:
    """Every value of `table.column` sealed with the ring's newest key
    (`conveyor payload-key reseal`); returns how many changed."""
    from sqlalchemy import column as sa_column
    from sqlalchemy import select, update
    from sqlalchemy import table as sa_table

    rows_table = sa_table(table, sa_column("id"), sa_column(column, JSON))
    values = rows_table.c[column]
    changed = 0
    for row_id, value in connection.execute(select(rows_table.c.id, values).where(values.isnot(None))).all():
        if (is_sealed(value) and value["kid"] == keyring.current.id) or value == {}:
            continue
        plain = open_sealed(value, purpose)
        connection.execute(update(rows_table).where(rows_table.c.id == row_id).values({column: seal(plain, purpose, keyring)}))
        changed += 1
    return changed


def seal_plaintext_rows(connection: Any, table: str, column: str, purpose: str, keyring: Keyring | None = None) -> int:
    """Seal every plaintext value of `table.column` (revision 0014); returns
    how many rows it sealed. Envelopes are left as they are, so a second run
    (or a row a newer process already wrote) changes nothing. The keyring is
    loaded only when there is a row to seal."""
    from sqlalchemy import column as sa_column
    from sqlalchemy import select, update
    from sqlalchemy import table as sa_table

    rows_table = sa_table(table, sa_column("id"), sa_column(column, JSON))
    values = rows_table.c[column]
    sealed = 0
    rows = connection.execute(select(rows_table.c.id, values).where(values.isnot(None))).all()
    ring = keyring
    for start in range(0, len(rows), BATCH):
        for row_id, value in rows[start : start + BATCH]:
            if is_sealed(value) or value == {}:
                continue
            ring = ring or _keyrings()[0]
            connection.execute(update(rows_table).where(rows_table.c.id == row_id).values({column: seal(value, purpose, ring)}))
            sealed += 1
    return sealed


def open_sealed_rows(connection: Any, table: str, column: str, purpose: str) -> int:
    """The downgrade: every envelope of `table.column` back to plaintext."""
    from sqlalchemy import column as sa_column
    from sqlalchemy import select, update
    from sqlalchemy import table as sa_table

    rows_table = sa_table(table, sa_column("id"), sa_column(column, JSON))
    values = rows_table.c[column]
    opened = 0
    for row_id, value in connection.execute(select(rows_table.c.id, values).where(values.isnot(None))).all():
        if is_sealed(value):
            connection.execute(update(rows_table).where(rows_table.c.id == row_id).values({column: open_sealed(value, purpose)}))
            opened += 1
    return opened


def reseal_certificate_keys(connection: Any, keyring: Keyring) -> int:
    """The uploaded certificates' keys (sealed bound to their app and domain)
    sealed again with the ring's newest key; returns how many changed."""
    from sqlalchemy import select, update

    from conveyor.clients.db.models import AppCertificate
    from conveyor.domain.certificates import certificate_context

    table = AppCertificate.__table__
    changed = 0
    for app_id, domain, key_sealed in connection.execute(select(table.c.app_id, table.c.domain, table.c.key_sealed)).all():
        if key_sealed.partition(":")[0] == keyring.current.id:
            continue
        context = certificate_context(app_id, domain)
        resealed = payload_codec.seal(keyring, payload_codec.unseal(keyring, key_sealed, context), context)
        connection.execute(update(table).where(table.c.app_id == app_id, table.c.domain == domain).values(key_sealed=resealed))
        changed += 1
    return changed
