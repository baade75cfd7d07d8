"""Encryption of every Temporal payload (AES-256-GCM) and the one data converter.

Workflow and activity inputs carry an app's env (secrets included), so what
Temporal stores is ciphertext: each payload is serialised whole (metadata and
data), encrypted with the newest key, and wrapped in a payload whose metadata
names the encoding and the key id. Every key in the ring decrypts, so a key can
be rotated without losing older histories. Payloads without the encryption
marker pass through as they are: histories recorded before encryption (and the
replay tests' fixtures) still decode.

Keys come from `CONVEYOR_PAYLOAD_KEYS` (`id:base64key,...`, newest first) or
from the key file (`<home>/payload-keys`, one `id:base64key` a line, newest
first), which `conveyor up` creates with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)

from conveyor.settings import Settings

ENCODING = b"binary/encrypted"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """A key is missing, malformed, or a payload names a key the ring lacks."""


@dataclass(frozen=True)
class PayloadKey:
    id: str
    secret: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True)
class Keyring:
    """Keys newest first: the first encrypts, every one decrypts."""

    keys: tuple[PayloadKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise PayloadKeyError("the payload keyring is empty")
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise PayloadKeyError("payload key ids must be unique")

    @property
    def current(self) -> PayloadKey:
        return self.keys[0]

    def get(self, key_id: str) -> PayloadKey | None:
        return next((k for k in self.keys if k.id == key_id), None)

    def derive(self, purpose: str) -> bytes:
        """A key for another use (e.g. the env checksum), never the AES key itself."""
        return hmac.new(self.current.secret, f"conveyor/{purpose}".encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def _at_rest(key: PayloadKey) -> AESGCM:
    """The cipher that seals secrets at rest: its key derived from a payload
    key, never that key itself (derived once per key: a list of 10,000 apps
    opens 10,000 values)."""
    return AESGCM(hmac.new(key.secret, b"conveyor/at-rest", hashlib.sha256).digest())


def seal(keyring: Keyring, plain: bytes, context: str) -> str:
    """`plain` encrypted for the database with the newest key (AES-256-GCM):
    `<key id>:<base64 nonce + ciphertext>`. `context` (what the value is and
    whose) is authenticated, so a sealed value cannot be moved to another row."""
    key = keyring.current
    nonce = os.urandom(NONCE_BYTES)
    sealed = _at_rest(key).encrypt(nonce, plain, f"{key.id}/{context}".encode())
    return f"{key.id}:{base64.b64encode(nonce + sealed).decode()}"


def unseal(keyring: Keyring, sealed: str, context: str) -> bytes:
    """What `seal` sealed, with whichever key of the ring sealed it."""
    key_id, _, encoded = sealed.partition(":")
    key = keyring.get(key_id)
    if key is None:
        raise PayloadKeyError(f"a value sealed with key {key_id!r}, which is not in the keyring")
    data = base64.b64decode(encoded)
    try:
        return _at_rest(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], f"{key.id}/{context}".encode())
    except InvalidTag:
        raise PayloadKeyError(f"a value sealed with key {key_id!r} does not authenticate") from None


def new_key_line() -> tuple[str, str]:
    """A fresh key as (id, `id:base64key`): the id is random, never derived from the key."""
    key_id = "k" + secrets.token_hex(4)
    return key_id, f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)).decode()}"


def parse_keys(text: str, source: str) -> Keyring:
    """`id:base64key` entries separated by commas or newlines, newest first."""
    keys = []
    for number, entry in enumerate((e.strip() for e in re.split(r"[,\n]", text)), start=1):
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not KEY_ID.match(key_id):
            raise PayloadKeyError(f"{source}: entry {number} is not id:base64key (id: letters, digits, . _ -)")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeyError(f"{source}: key {key_id} is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise PayloadKeyError(f"{source}: key {key_id} must be {KEY_BYTES} bytes (AES-256), not {len(secret)}")
        keys.append(PayloadKey(key_id, secret))
    if not keys:
        raise PayloadKeyError(f"{source} holds no key")
    return Keyring(tuple(keys))


def load_keyring(settings: Settings) -> Keyring:
    """Blocking (reads the key file): call it at start-up or in a thread."""
    if settings.payload_keys:
        return parse_keys(settings.payload_keys.get_secret_value(), "CONVEYOR_PAYLOAD_KEYS")
    path = settings.effective_payload_key_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PayloadKeyError(
            f"no payload key: {path} is missing; run `conveyor up` (it creates one) or set CONVEYOR_PAYLOAD_KEYS"
        ) from None
    return parse_keys(text, str(path))


def ensure_key_file(path: Path) -> bool:
    """Create the key file with one key, readable by its owner only; False if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(new_key_line()[1] + "\n")
    return True


def add_key(path: Path) -> str:
    """Put a new key first in the key file (it encrypts from the next start on); return its id."""
    old = path.read_text() if path.exists() else ""
    existing = parse_keys(old, str(path)) if old.strip() else None
    key_id, line = new_key_line()
    while existing and existing.get(key_id):
        key_id, line = new_key_line()
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(line + "\n" + old)
    os.replace(tmp, path)
    return key_id


class EncryptionCodec(PayloadCodec):
    def __init__(self, keyring: Keyring):
        self.keyring = keyring

    def encrypt(self, payload: Payload) -> Payload:
        key = self.keyring.current
        nonce = os.urandom(NONCE_BYTES)
        # The key id is authenticated too: a payload cannot be relabelled to another key.
        sealed = AESGCM(key.secret).encrypt(nonce, payload.SerializeToString(), key.id.encode())
        return Payload(metadata={METADATA_ENCODING: ENCODING, METADATA_KEY_ID: key.id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            return payload
        key_id = payload.metadata.get(METADATA_KEY_ID, b"").decode(errors="replace")
        key = self.keyring.get(key_id)
        if key is None:
            raise PayloadKeyError(f"payload encrypted with key {key_id!r}, which is not in the keyring")
        try:
            plain = AESGCM(key.secret).decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key.id.encode())
        except InvalidTag:
            raise PayloadKeyError(f"payload encrypted with key {key_id!r} does not authenticate") from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]


@functools.lru_cache(maxsize=1024)
def _type_adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class _PydanticJSON(PydanticJSONPlainPayloadConverter):
    """Temporal's pydantic JSON converter, with one cache of type adapters
    for the process. The worker makes a payload converter for every workflow
    run, and each came with an empty cache: every payload a run decoded built
    its type's adapter again (about 2% of the worker's CPU). The types are
    the payload models of `conveyor.domain` and the standard ones, never a
    class of a (sandboxed) workflow module, which the cache would keep."""

    def __init__(self) -> None:
        super().__init__(max_cached_type_adapters=0)  # the base's own cache is not used

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint = type_hint if type_hint is not None else Any
        try:
            adapter = _type_adapter(hint)
        except TypeError:
            if _hashable(hint):
                raise  # the adapter's own TypeError
            adapter = TypeAdapter(hint)  # a hint that cannot be a cache key
        return adapter.validate_json(payload.data)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class PayloadConverter(CompositePayloadConverter):
    """Temporal's pydantic payload converter, with `_PydanticJSON` for JSON."""

    def __init__(self) -> None:
        json = _PydanticJSON()
        super().__init__(
            *(json if isinstance(c, JSONPlainPayloadConverter) else c for c in DefaultPayloadConverter.default_encoding_payload_converters)
        )


def data_converter(keyring: Keyring) -> DataConverter:
    """The pydantic converter, with every payload and failure message encrypted."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=PayloadConverter,
        payload_codec=EncryptionCodec(keyring),
        # Failure messages and stack traces are not payloads: this moves them
        # into an encoded attribute so the codec covers them too.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
