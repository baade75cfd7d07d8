"""Values sealed at rest with the payload keyring (conveyor/clients/db/sealed.py)."""

from __future__ import annotations

import base64
import json
import os

import pytest

from conveyor.clients.db import sealed
from conveyor.clients.payload_codec import Keyring, PayloadKey, PayloadKeyError


def ring(*ids: str) -> Keyring:
    return Keyring(tuple(PayloadKey(i, os.urandom(32)) for i in ids))


def test_a_sealed_value_holds_no_plaintext_and_opens_again():
    keys = ring("k1")
    value = {"API_TOKEN": "s3cret-value", "GREETING": "hello"}
    envelope = sealed.seal(value, "env", keys)
    assert envelope["kid"] == "k1" and sealed.is_sealed(envelope)
    assert b"s3cret" not in json.dumps(envelope).encode() and b"s3cret" not in base64.b64decode(envelope["data"])
    assert sealed.open_sealed(envelope, "env", [keys]) == value


def test_plaintext_rows_from_before_read_as_they_are():
    assert sealed.open_sealed({"A": "1"}, "env", [ring("k1")]) == {"A": "1"}
    assert sealed.open_sealed({"$sealed": "no", "kid": "x"}, "env", [ring("k1")]) == {"$sealed": "no", "kid": "x"}


def test_rotation_seals_with_the_newest_key_and_opens_with_the_older():
    old = ring("k1")
    envelope = sealed.seal({"A": "1"}, "env", old)
    rotated = Keyring((PayloadKey("k2", os.urandom(32)), *old.keys))
    assert sealed.open_sealed(envelope, "env", [rotated]) == {"A": "1"}
    assert sealed.seal({"A": "1"}, "env", rotated)["kid"] == "k2"
    with pytest.raises(PayloadKeyError, match="not in the keyring"):
        sealed.open_sealed(envelope, "env", [ring("k9")])


def test_a_value_is_bound_to_its_purpose_and_key():
    keys = ring("k1")
    envelope = sealed.seal("hunter2", "registry-password", keys)
    with pytest.raises(PayloadKeyError, match="does not authenticate"):
        sealed.open_sealed(envelope, "env", [keys])
    with pytest.raises(PayloadKeyError):
        sealed.open_sealed({**envelope, "kid": "k1"}, "registry-password", [ring("k1")])  # same id, another secret
