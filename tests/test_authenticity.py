"""Authenticity of an event's publisher: broker users, Ed25519 signatures and their bytes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events_celery.authenticity import Authenticity, SigningKey, TrustedKey, sign
from events_celery.wire import (
    HEADER_PARTITION_KEY,
    HEADER_SIGNATURE,
    PoisonMessageError,
    check_message,
    signed_bytes,
)
from tests.testapp.events import PING
from tests.wire.messages import AVRO, MAX_SIZE, make_metadata, no_stored_schemas

SHOP = PING.event_type


def signing_key(key_id: str) -> SigningKey:
    return SigningKey(key_id, Ed25519PrivateKey.generate())


def trusted(key: SigningKey, sources: Any = ("shop",), types: Any = (SHOP,)) -> TrustedKey:
    return TrustedKey(
        key.key_id, key.private_key.public_key(), frozenset(sources), frozenset(types)
    )


def message(source: str = "shop", **extra: str) -> tuple[dict[str, Any], bytes]:
    metadata = make_metadata(SHOP, source=source)
    from events_celery.wire import encode_event

    out = encode_event(PING, metadata, PING.serializer.encode({"n": 7}))
    return {**out.headers, **extra}, out.body


def signed(keys: list[SigningKey], **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    headers, body = message(**kwargs)
    return {**headers, HEADER_SIGNATURE: sign(headers, body, keys)}, body


def check(
    authenticity: Authenticity, headers: dict[str, Any], body: bytes, user_id: str | None = None
) -> None:
    check_message(
        headers,
        body,
        content_type=AVRO,
        max_size=MAX_SIZE,
        writer_schemas=no_stored_schemas,
        routing_key=SHOP,
        authenticity=authenticity,
        user_id=user_id,
    )


def reason(authenticity: Authenticity, headers: dict[str, Any], body: bytes, **kw: Any) -> str:
    with pytest.raises(PoisonMessageError) as raised:
        check(authenticity, headers, body, **kw)
    return raised.value.reason


# --- the signed bytes -------------------------------------------------------------------------


def test_signed_bytes_are_the_headers_in_a_fixed_order_then_the_body_each_with_its_length() -> None:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": "i",
        "ce_source": "shop",
        "ce_type": "t",
        "ce_time": "2024-05-01T12:30:15Z",
        "ce_minorversion": "0",
        "ce_datacontenttype": "application/avro",
        "sourcehost": "h",
        "sourcelib": "0.1",
        "schemafingerprint": "00",
        "traceparent": "not signed",
    }
    expected = (
        b"events-celery-signature/1\n"
        b"\x00\x00\x00\x031.0"
        b"\x00\x00\x00\x01i"
        b"\x00\x00\x00\x04shop"
        b"\x00\x00\x00\x01t"
        b"\x00\x00\x00\x142024-05-01T12:30:15Z"
        b"\x00\x00\x00\x010"
        b"\x00\x00\x00\x10application/avro"
        b"\x00\x00\x00\x01h"
        b"\x00\x00\x00\x030.1"
        b"\x00\x00\x00\x0200"
        b"\xff\xff\xff\xff"  # no ce_partitionkey
        b"\x00\x00\x00\x02\x01\x02"
    )
    assert signed_bytes(headers, b"\x01\x02") == expected


def test_an_empty_partition_key_is_not_the_same_bytes_as_none() -> None:
    headers, body = message()
    assert signed_bytes(headers, body) != signed_bytes({**headers, HEADER_PARTITION_KEY: ""}, body)


# --- signatures -------------------------------------------------------------------------------


def test_a_signed_event_verifies_with_the_trusted_key() -> None:
    key = signing_key("shop-1")
    headers, body = signed([key])
    check(
        Authenticity(trusted_keys={"shop-1": trusted(key)}, require_signatures=True), headers, body
    )


def test_during_a_rotation_either_key_alone_accepts_an_event_signed_by_both() -> None:
    old, new = signing_key("shop-1"), signing_key("shop-2")
    headers, body = signed([old, new])
    assert len(headers[HEADER_SIGNATURE].split()) == 2
    for key in (old, new):
        only = Authenticity(trusted_keys={key.key_id: trusted(key)}, require_signatures=True)
        check(only, headers, body)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h, b: (h, b + b"\x00"), id="body"),
        pytest.param(lambda h, b: ({**h, "ce_source": "shop "}, b), id="source"),
        pytest.param(lambda h, b: ({**h, "ce_id": h["ce_id"][:-1] + "0"}, b), id="id"),
        pytest.param(lambda h, b: ({**h, HEADER_PARTITION_KEY: "k"}, b), id="added-header"),
    ],
)
def test_a_changed_body_or_signed_header_is_poison(change: Any) -> None:
    key = signing_key("shop-1")
    authenticity = Authenticity(
        trusted_keys={"shop-1": trusted(key, sources=("shop", "shop "))}, require_signatures=True
    )
    headers, body = change(*signed([key]))
    assert "the signature of key 'shop-1' does not match" in reason(authenticity, headers, body)


def test_an_unsigned_event_is_poison_when_signatures_are_required() -> None:
    key = signing_key("shop-1")
    headers, body = message()
    authenticity = Authenticity(trusted_keys={"shop-1": trusted(key)}, require_signatures=True)
    assert reason(authenticity, headers, body) == (
        f"{SHOP} from 'shop' is not signed (no 'ce_signature' header), and "
        "EVENT_BUS_REQUIRE_SIGNATURES is on"
    )


def test_a_signature_of_a_key_not_trusted_is_poison() -> None:
    headers, body = signed([signing_key("intruder")])
    authenticity = Authenticity(
        trusted_keys={"shop-1": trusted(signing_key("shop-1"))}, require_signatures=True
    )
    assert "key 'intruder' is not in EVENT_BUS_TRUSTED_KEYS" in reason(authenticity, headers, body)


def test_a_trusted_key_id_with_another_keys_signature_is_poison() -> None:
    impostor = signing_key("shop-1")  # same id, other key
    headers, body = signed([impostor])
    authenticity = Authenticity(
        trusted_keys={"shop-1": trusted(signing_key("shop-1"))}, require_signatures=True
    )
    assert "does not match" in reason(authenticity, headers, body)


def test_a_key_signing_for_a_source_it_is_not_trusted_for_is_poison() -> None:
    key = signing_key("billing-1")
    headers, body = signed([key], source="shop")
    authenticity = Authenticity(
        trusted_keys={"billing-1": trusted(key, sources=("billing",))}, require_signatures=True
    )
    assert "key 'billing-1' may sign sources ['billing'], not 'shop'" in reason(
        authenticity, headers, body
    )


def test_a_key_signing_an_event_type_it_is_not_trusted_for_is_poison() -> None:
    key = signing_key("shop-1")
    headers, body = signed([key])
    authenticity = Authenticity(
        trusted_keys={"shop-1": trusted(key, types=("org.example.other.v1",))},
        require_signatures=True,
    )
    assert f"key 'shop-1' may not sign event type '{SHOP}'" in reason(authenticity, headers, body)


@pytest.mark.parametrize("value", ["", "shop-1", "shop-1:!!", "bad id:" + "A" * 88, "a:b " * 5])
def test_a_malformed_signature_header_is_poison(value: str) -> None:
    headers, body = message(**{HEADER_SIGNATURE: value})
    authenticity = Authenticity(
        trusted_keys={"shop-1": trusted(signing_key("shop-1"))}, require_signatures=True
    )
    assert f"header '{HEADER_SIGNATURE}'" in reason(authenticity, headers, body)


def test_signatures_are_not_checked_unless_required() -> None:
    headers, body = message(**{HEADER_SIGNATURE: "garbage"})
    check(Authenticity(), headers, body)
    assert Authenticity().active is False


def test_a_signature_made_by_any_ed25519_library_over_the_documented_bytes_verifies() -> None:
    # The key as another client would hold it: raw bytes, signing the documented bytes.
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    other = Ed25519PrivateKey.from_private_bytes(raw)
    headers, body = message()
    signature = base64.b64encode(other.sign(signed_bytes(headers, body))).decode()
    headers[HEADER_SIGNATURE] = f"ext-1:{signature}"
    key = TrustedKey("ext-1", private.public_key(), frozenset({"shop"}), frozenset({SHOP}))
    check(Authenticity(trusted_keys={"ext-1": key}, require_signatures=True), headers, body)


# --- broker users -----------------------------------------------------------------------------


def test_the_mapped_user_passes_and_others_or_none_are_poison() -> None:
    headers, body = message()
    authenticity = Authenticity(publishers={SHOP: frozenset({"shop"})})
    check(authenticity, headers, body, user_id="shop")
    assert reason(authenticity, headers, body, user_id="billing") == (
        f"{SHOP} from 'shop' was published by broker user 'billing', but "
        f"EVENT_BUS_TRUSTED_PUBLISHERS[{SHOP!r}] allows only 'shop'"
    )
    assert "has no user_id" in reason(authenticity, headers, body, user_id=None)


def test_a_source_entry_binds_every_event_claiming_that_source() -> None:
    headers, body = message(source="billing")
    authenticity = Authenticity(publishers={"source:billing": frozenset({"billing"})})
    check(authenticity, headers, body, user_id="billing")
    assert "EVENT_BUS_TRUSTED_PUBLISHERS['source:billing'] allows only 'billing'" in reason(
        authenticity, headers, body, user_id="shop"
    )


def test_an_event_no_entry_names_is_not_checked() -> None:
    headers, body = message()
    check(Authenticity(publishers={"org.example.other.v1": frozenset({"x"})}), headers, body)


def test_users_are_checked_before_signatures() -> None:
    key = signing_key("shop-1")
    headers, body = signed([key])
    authenticity = Authenticity(
        publishers={SHOP: frozenset({"shop"})},
        trusted_keys={"shop-1": trusted(key)},
        require_signatures=True,
    )
    check(authenticity, headers, body, user_id="shop")
    assert "published by broker user 'x'" in reason(authenticity, headers, body, user_id="x")
