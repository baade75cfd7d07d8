"""The payload codec: AES-GCM with a key id, rotation, plaintext pass-through,
key files; the converter encrypts failure messages too."""

from __future__ import annotations

import base64
import stat
from typing import Annotated

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from conveyor.clients import payload_codec
from conveyor.domain.payloads import ReleaseSpec
from conveyor.settings import Settings

SECRET = "postgres://app:s3cr3t-pa55@db:5432/app"


def keyring(*ids: str) -> payload_codec.Keyring:
    return payload_codec.Keyring(tuple(payload_codec.PayloadKey(i, bytes([n + 1]) * 32) for n, i in enumerate(ids)))


def release() -> ReleaseSpec:
    return ReleaseSpec(
        app_id="app_1", project_id="proj_default", deployment_id="dep_1", name="api", slug="api",
        namespace="conveyor-default", image_ref="r/x:v1", port=8080, replicas=1, env={"DATABASE_URL": SECRET},
    )  # fmt: skip


async def test_payloads_are_ciphertext_with_the_key_id_and_decode_back():
    converter = payload_codec.data_converter(keyring("k1"))
    [payload] = await converter.encode([release()])
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"] == b"k1"
    assert SECRET.encode() not in payload.SerializeToString()
    [back] = await converter.decode([payload], [ReleaseSpec])
    assert back == release()


async def test_every_payload_converter_of_the_process_shares_its_type_adapters(monkeypatch):
    """The worker makes a payload converter for each workflow run: the second
    run's first decode of a type must not build its adapter again."""
    converter = payload_codec.data_converter(keyring("k1"))
    [payload] = converter.payload_converter.to_payloads([release()])
    built: list[object] = []
    real = payload_codec.TypeAdapter
    monkeypatch.setattr(payload_codec, "TypeAdapter", lambda hint: built.append(hint) or real(hint))
    payload_codec._type_adapter.cache_clear()
    runs = [converter.payload_converter_class() for _ in range(3)]
    assert [run.from_payloads([payload], [ReleaseSpec]) for run in runs] == [[release()]] * 3
    assert built == [ReleaseSpec]
    # A hint that cannot be a cache key still decodes.
    assert runs[0].from_payloads(runs[0].to_payloads([["a"]]), [Annotated[list[str], {"unhashable": True}]]) == [["a"]]


async def test_rotation_new_key_encrypts_old_keys_still_decrypt():
    [old] = await payload_codec.data_converter(keyring("old")).encode([release()])
    rotated = payload_codec.data_converter(payload_codec.Keyring((payload_codec.PayloadKey("new", b"\x09" * 32), *keyring("old").keys)))
    [new] = await rotated.encode([release()])
    assert new.metadata["encryption-key-id"] == b"new"
    assert (await rotated.decode([old], [ReleaseSpec]))[0] == release()
    # Without the old key the old payload is refused, naming the key.
    with pytest.raises(payload_codec.PayloadKeyError, match="'old'"):
        await payload_codec.data_converter(payload_codec.Keyring((payload_codec.PayloadKey("new", b"\x09" * 32),))).decode([old], [ReleaseSpec])


async def test_plaintext_payloads_from_before_encryption_pass_through():
    converter = payload_codec.data_converter(keyring("k1"))
    plain = converter.payload_converter.to_payloads([release()])
    assert (await converter.decode(plain, [ReleaseSpec]))[0] == release()


async def test_a_tampered_or_relabelled_payload_is_refused():
    ring = payload_codec.Keyring((payload_codec.PayloadKey("a", b"\x01" * 32), payload_codec.PayloadKey("b", b"\x01" * 32)))
    sealed = payload_codec.EncryptionCodec(ring).encrypt(Payload(metadata={"encoding": b"json/plain"}, data=b'"x"'))
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata["encryption-key-id"] = b"b"
    for bad in (flipped, relabelled):
        with pytest.raises(payload_codec.PayloadKeyError, match="does not authenticate"):
            payload_codec.EncryptionCodec(ring).decrypt(bad)


async def test_failure_messages_and_stack_traces_are_encrypted():
    converter = payload_codec.data_converter(keyring("k1"))
    failure = Failure()
    try:
        raise ApplicationError(f"could not connect to {SECRET}", non_retryable=True)
    except ApplicationError as exc:
        await converter.encode_failure(exc, failure)
    assert SECRET.encode() not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert SECRET in str(decoded)


def test_keys_parse_from_the_setting_newest_first_and_bad_ones_are_named():
    a, b = base64.b64encode(b"\x01" * 32).decode(), base64.b64encode(b"\x02" * 32).decode()
    ring = payload_codec.load_keyring(Settings(payload_keys=f"new:{b}, old:{a}"))
    assert [k.id for k in ring.keys] == ["new", "old"] and ring.current.secret == b"\x02" * 32
    for text, problem in (
        ("nocolon", "not id:base64key"),
        (f"k:{base64.b64encode(b'short').decode()}", "must be 32 bytes"),
        ("k:!!!", "not valid base64"),
        (f"k:{a},k:{b}", "unique"),
        ("", "holds no key"),
    ):
        with pytest.raises(payload_codec.PayloadKeyError, match=problem) as err:
            payload_codec.parse_keys(text, "CONVEYOR_PAYLOAD_KEYS")
        assert b not in str(err.value) and a not in str(err.value)


def test_the_key_file_is_created_owner_only_and_rotation_puts_the_new_key_first(tmp_path):
    settings = Settings(home=tmp_path)
    path = settings.effective_payload_key_file
    with pytest.raises(payload_codec.PayloadKeyError, match="conveyor up"):
        payload_codec.load_keyring(settings)
    assert payload_codec.ensure_key_file(path) is True
    assert payload_codec.ensure_key_file(path) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = payload_codec.load_keyring(settings).current
    added = payload_codec.add_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = payload_codec.load_keyring(settings)
    assert [k.id for k in ring.keys] == [added, first.id] and ring.get(first.id) == first
