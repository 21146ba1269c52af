"""Reader/writer compatibility by the Avro resolution rules, checked against fastavro."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from events_celery.avro import Incompatibility, PayloadSerializer, check_compatibility
from events_celery.exceptions import SchemaCompatibilityError

from .payloads import EVENT_TYPE, BreakingOrderV2, KitchenSinkData, OrderData, OrderV1


def record(*fields: dict[str, Any], name: str = "Payload") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": EVENT_TYPE, "fields": list(fields)}


def field(name: str, avro_type: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def paths(reader: Any, writer: Any) -> list[str]:
    return [problem.path for problem in check_compatibility(reader, writer)]


def test_a_schema_is_compatible_with_itself() -> None:
    schema = PayloadSerializer(EVENT_TYPE, {"sink": KitchenSinkData, "order": OrderData}).schema
    assert check_compatibility(schema, schema) == []


def test_added_field_without_default_breaks_backward_compatibility_naming_it() -> None:
    old = record(field("id", "long"))
    new = record(field("id", "long"), field("email", "string"))
    problems = check_compatibility(reader=new, writer=old)
    assert problems == [
        Incompatibility(
            "email",
            "the reader has this field without a default and the writer does not write it; "
            "give it a default (e.g. 'T | None = None') so older data can be read",
        )
    ]
    assert check_compatibility(reader=old, writer=new) == []  # forward: extra field ignored


def test_added_field_with_default_is_compatible_both_ways() -> None:
    old = record(field("id", "long"))
    new = record(field("id", "long"), field("email", ["null", "string"], default=None))
    assert check_compatibility(new, old) == []
    assert check_compatibility(old, new) == []


def test_removed_field_is_fine_for_the_new_reader_but_not_for_old_readers() -> None:
    old = record(field("id", "long"), field("note", "string"))
    new = record(field("id", "long"))
    assert check_compatibility(reader=new, writer=old) == []
    assert paths(reader=old, writer=new) == ["note"]


def test_removed_field_that_had_a_default_is_compatible_both_ways() -> None:
    old = record(field("id", "long"), field("note", "string", default=""))
    new = record(field("id", "long"))
    assert check_compatibility(new, old) == check_compatibility(old, new) == []


def test_changed_type_is_reported_with_the_nested_path() -> None:
    def with_total(avro_type: Any) -> dict[str, Any]:
        order = {"type": "record", "name": "OrderData", "fields": [field("total", avro_type)]}
        return record(field("order", order))

    problems = check_compatibility(with_total("long"), with_total("string"))
    assert [problem.path for problem in problems] == ["order.total"]
    assert "the writer writes string and the reader expects long" in problems[0].message
    assert str(problems[0]).startswith("field 'order.total': type changed")


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_avro_promotions_are_compatible(writer: str, reader: str) -> None:
    assert check_compatibility(record(field("x", reader)), record(field("x", writer))) == []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("long", "int"),
        ("double", "float"),
        ("double", "long"),
        ("string", "long"),
        ("boolean", "int"),
    ],
)
def test_narrowing_is_incompatible(writer: str, reader: str) -> None:
    assert paths(record(field("x", reader)), record(field("x", writer))) == ["x"]


def enum_schema(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Mode", "symbols": list(symbols), **extra}


def test_enum_symbol_removal_breaks_reading_data_that_used_it() -> None:
    old = record(field("mode", enum_schema("AUDIT", "HONOR")))
    new = record(field("mode", enum_schema("AUDIT")))
    problems = check_compatibility(reader=new, writer=old)
    assert [problem.path for problem in problems] == ["mode"]
    assert "['HONOR']" in problems[0].message
    assert check_compatibility(reader=old, writer=new) == []


def test_enum_with_a_default_symbol_reads_unknown_symbols() -> None:
    old = record(field("mode", enum_schema("AUDIT", "HONOR")))
    new = record(field("mode", enum_schema("AUDIT", default="AUDIT")))
    assert check_compatibility(reader=new, writer=old) == []


def test_renamed_record_is_incompatible_unless_aliased() -> None:
    def wrap(name: str, **extra: Any) -> dict[str, Any]:
        return record(field("user", {"type": "record", "name": name, "fields": [], **extra}))

    assert paths(wrap("Member"), wrap("UserData")) == ["user"]
    assert check_compatibility(wrap("Member", aliases=["UserData"]), wrap("UserData")) == []


def test_optional_reader_reads_a_required_writer_but_not_the_reverse() -> None:
    required = record(field("note", "string"))
    optional = record(field("note", ["null", "string"], default=None))
    assert check_compatibility(reader=optional, writer=required) == []
    problems = check_compatibility(reader=required, writer=optional)
    assert [problem.path for problem in problems] == ["note"]
    assert "writes null" in problems[0].message


def test_reader_union_must_have_a_branch_for_the_writer_type() -> None:
    reader = record(field("x", ["null", "string"]))
    problems = check_compatibility(reader, record(field("x", "boolean")))
    assert "no branch of the reader's union [null, string]" in problems[0].message


def test_array_and_map_items_are_checked_with_their_path() -> None:
    def schema(item: str) -> dict[str, Any]:
        return record(
            field("lines", {"type": "array", "items": item}),
            field("tags", {"type": "map", "values": item}),
        )

    assert paths(schema("long"), schema("string")) == ["lines[]", "tags[]"]
    assert paths(schema("long"), schema("int")) == []


def test_decimal_scale_change_is_incompatible() -> None:
    def schema(precision: int, scale: int) -> dict[str, Any]:
        decimal = {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": precision,
            "scale": scale,
        }
        return record(field("total", decimal))

    assert (
        "scale changed from 2 to 3" in check_compatibility(schema(12, 3), schema(12, 2))[0].message
    )
    assert "precision shrank" in check_compatibility(schema(10, 2), schema(12, 2))[0].message
    assert check_compatibility(schema(14, 2), schema(12, 2)) == []


def test_logical_type_change_is_incompatible() -> None:
    micros = record(field("at", {"type": "long", "logicalType": "timestamp-micros"}))
    millis = record(field("at", {"type": "long", "logicalType": "timestamp-millis"}))
    assert paths(micros, millis) == ["at"]
    assert check_compatibility(micros, record(field("at", "long"))) == []


def test_named_type_references_are_resolved() -> None:
    user = {"type": "record", "name": "UserData", "fields": [field("id", "long")]}
    reader = record(field("a", user), field("b", "UserData"))
    writer_user = {"type": "record", "name": "UserData", "fields": [field("id", "string")]}
    writer = record(field("a", writer_user), field("b", f"{EVENT_TYPE}.UserData"))
    assert paths(reader, writer) == ["a.id", "b.id"]


def test_recursive_schemas_are_checked_without_looping() -> None:
    pig = {
        "name": "PigValue",
        "type": "record",
        "fields": [field("value", ["null", "int", "long", "PigValue"])],
    }
    assert check_compatibility(pig, pig) == []


def test_unknown_type_name_raises() -> None:
    with pytest.raises(SchemaCompatibilityError, match="unknown type name 'Nope'"):
        check_compatibility(record(field("x", "Nope")), record())


def test_malformed_schema_raises() -> None:
    with pytest.raises(SchemaCompatibilityError, match="writer schema is not a valid Avro schema"):
        check_compatibility(record(), {"fields": []})


def test_derived_schemas_report_the_dotted_field_path() -> None:
    v1 = PayloadSerializer(EVENT_TYPE, {"order": OrderV1}).schema
    v2 = PayloadSerializer(EVENT_TYPE, {"order": BreakingOrderV2}).schema
    v2["fields"][0]["type"]["name"] = "OrderV1"  # the same class, changed
    assert paths(reader=v2, writer=v1) == ["order.coupon"]
    assert paths(reader=v1, writer=v2) == []


# Each case: reader, writer, a datum valid for the writer. fastavro must agree with the check.
AGREEMENT_CASES = [
    (record(field("x", "long")), record(field("x", "int")), {"x": 1}),
    (record(field("x", "int")), record(field("x", "long")), {"x": 1}),
    (record(field("x", "string")), record(field("x", "bytes")), {"x": b"a"}),
    (record(field("x", "long"), field("y", "long")), record(field("x", "long")), {"x": 1}),
    (
        record(field("x", "long"), field("y", "long", default=2)),
        record(field("x", "long")),
        {"x": 1},
    ),
    (record(field("x", ["null", "long"])), record(field("x", "long")), {"x": 1}),
    (record(field("x", "long")), record(field("x", ["null", "long"])), {"x": None}),
    (record(field("m", enum_schema("A"))), record(field("m", enum_schema("A", "B"))), {"m": "B"}),
    (
        record(field("m", enum_schema("A", default="A"))),
        record(field("m", enum_schema("A", "B"))),
        {"m": "B"},
    ),
    (
        record(field("a", {"type": "array", "items": "double"})),
        record(field("a", {"type": "array", "items": "int"})),
        {"a": [1]},
    ),
    (
        record(field("a", {"type": "map", "values": "int"})),
        record(field("a", {"type": "map", "values": "string"})),
        {"a": {"k": "v"}},
    ),
]


@pytest.mark.parametrize(("reader", "writer", "datum"), AGREEMENT_CASES)
def test_verdict_agrees_with_fastavro_resolution(reader: Any, writer: Any, datum: Any) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer), datum)
    try:
        fastavro.schemaless_reader(
            io.BytesIO(out.getvalue()), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        )
        readable = True
    except Exception:
        readable = False
    assert (check_compatibility(reader, writer) == []) == readable
