"""The derived Avro schema (names, defaults, named types) and schema fingerprints."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import attrs
import fastavro
import pytest

from events_celery.avro import CodecRegistry, PayloadSerializer, fingerprint
from events_celery.exceptions import SchemaCompatibilityError

from .payloads import EVENT_TYPE, KitchenSinkData, Mode, OrderData, UserData


def schema_of(data: dict[str, Any], registry: CodecRegistry | None = None) -> dict[str, Any]:
    return PayloadSerializer(EVENT_TYPE, data, codec_registry=registry or CodecRegistry()).schema


def fields_of(record_class: type) -> dict[str, dict[str, Any]]:
    """The Avro fields of ``record_class`` (sent as the only kwarg), by name."""
    record = schema_of({"value": record_class})["fields"][0]["type"]
    return {field["name"]: field for field in record["fields"]}


def test_top_level_record_is_named_payload_in_the_event_namespace() -> None:
    schema = schema_of({"count": int})
    assert schema == {
        "type": "record",
        "name": "Payload",
        "namespace": EVENT_TYPE,
        "fields": [{"name": "count", "type": "long"}],
    }


def test_fields_follow_the_order_of_data() -> None:
    schema = schema_of({"zeta": int, "alpha": str, "mid": bool})
    assert [field["name"] for field in schema["fields"]] == ["zeta", "alpha", "mid"]


def test_nested_records_are_named_after_their_class() -> None:
    order = schema_of({"order": OrderData})["fields"][0]["type"]
    assert (order["type"], order["name"]) == ("record", "OrderData")
    assert "namespace" not in order  # inherits the event type
    user = order["fields"][1]["type"]
    assert (user["type"], user["name"]) == ("record", "UserData")


def test_same_class_twice_is_defined_once() -> None:
    @attrs.frozen
    class TransferData:
        sender: UserData
        receiver: UserData
        witnesses: list[UserData]

    schema = schema_of({"transfer": TransferData, "approver": UserData})
    text = json.dumps(schema)
    assert text.count('"name": "UserData"') == 1
    transfer = schema["fields"][0]["type"]
    assert transfer["fields"][1]["type"] == "UserData"
    assert transfer["fields"][2]["type"] == {"type": "array", "items": "UserData"}
    assert schema["fields"][1]["type"] == "UserData"
    fastavro.parse_schema(schema)


def test_enum_is_named_after_its_class_with_member_names_as_symbols() -> None:
    schema = schema_of({"mode": Mode, "again": Mode | None})
    assert schema["fields"][0]["type"] == {
        "type": "enum",
        "name": "Mode",
        "symbols": ["AUDIT", "VERIFIED"],
    }
    assert schema["fields"][1]["type"] == ["null", "Mode"]


def test_decimal_carries_precision_and_scale() -> None:
    assert fields_of(OrderData)["total"]["type"] == {
        "type": "bytes",
        "logicalType": "decimal",
        "precision": 12,
        "scale": 2,
    }


def test_optional_field_defaulting_to_none_has_null_first_and_a_null_default() -> None:
    assert fields_of(UserData)["email"] == {
        "name": "email",
        "type": ["null", "string"],
        "default": None,
    }


def test_optional_field_without_default_has_no_avro_default() -> None:
    assert schema_of({"email": str | None})["fields"][0] == {
        "name": "email",
        "type": ["null", "string"],
    }


def test_every_derived_schema_parses_with_fastavro() -> None:
    fastavro.parse_schema(schema_of({"sink": KitchenSinkData, "order": OrderData}))


# From the Avro specification's test suite (share/test/data/schema-tests.txt): each
# fingerprint is the CRC-64-AVRO as a signed long.
SPEC_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"string"', -8142146995180207161),
    ("[]", -1241056759729112623),
    ('["int", {"type": "boolean"}]', 5392556393470105090),
    ('{"fields": [], "type": "record", "name": "foo", "namespace": "x.y"}', 5916914534497305771),
    ('{"fields": [], "type": "record", "name": "foo", "doc": "Useful info"}', -4824392279771201922),
    (
        '{"namespace": "x.y.z", "type": "enum", "name": "foo", "symbols": ["A1", "A2"]}',
        -4448647247586288245,
    ),
    ('{"items": {"type": "null"}, "type": "array"}', -589620603366471059),
    ('{"values": "string", "type": "map"}', -8732877298790414990),
    (
        '{"name": "PigValue", "type": "record", "fields": [{"name": "value", '
        '"type": ["null", "int", "long", "PigValue"]}]}',
        -1759257747318642341,
    ),
]


@pytest.mark.parametrize(("schema", "long_value"), SPEC_VECTORS)
def test_fingerprint_matches_the_avro_specification(schema: str, long_value: int) -> None:
    # Avro writes the fingerprint as 8 little-endian bytes (single-object encoding).
    expected = struct.pack("<q", long_value).hex()
    assert fingerprint(json.loads(schema)) == expected


def rabin_fingerprint(data: bytes) -> int:
    """The reference CRC-64-AVRO from the Avro specification, written out independently."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_reference_fingerprint_of_nothing_is_the_empty_constant() -> None:
    assert rabin_fingerprint(b"") == 0xC15D213AA4D7A795


def test_fingerprint_of_a_derived_schema_matches_the_reference_algorithm() -> None:
    schema = schema_of({"sink": KitchenSinkData})
    canonical = fastavro.schema.to_parsing_canonical_form(schema).encode()
    expected = rabin_fingerprint(canonical).to_bytes(8, "little").hex()
    assert fingerprint(schema) == expected


def test_serializer_fingerprint_is_16_lowercase_hex_digits() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    assert re.fullmatch(r"[0-9a-f]{16}", serializer.fingerprint)
    assert serializer.fingerprint == fingerprint(serializer.schema)


def test_fingerprint_ignores_defaults_and_docs_but_not_types() -> None:
    base = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]}
    documented = {**base, "doc": "about A", "fields": [{"name": "x", "type": "long", "default": 1}]}
    changed = {**base, "fields": [{"name": "x", "type": "int"}]}
    assert fingerprint(base) == fingerprint(documented)
    assert fingerprint(base) != fingerprint(changed)


def test_fingerprint_changes_with_the_event_type() -> None:
    first = PayloadSerializer("org.example.a.v1", {"x": int}).fingerprint
    second = PayloadSerializer("org.example.b.v1", {"x": int}).fingerprint
    assert first != second


def test_fingerprint_of_an_invalid_schema_raises() -> None:
    with pytest.raises(SchemaCompatibilityError, match="not a valid Avro schema"):
        fingerprint({"type": "no-such-type"})
