"""attrs defaults as Avro field defaults, and filling them in when an older writer lacks a field."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import attrs
import fastavro
import pytest

from events_celery.avro import CodecRegistry, PayloadSerializer

from .payloads import EVENT_TYPE, CourseKey


def schema_of(data: dict[str, Any], registry: CodecRegistry | None = None) -> dict[str, Any]:
    return PayloadSerializer(EVENT_TYPE, data, codec_registry=registry or CodecRegistry()).schema


def fields_of(record_class: type, registry: CodecRegistry | None = None) -> dict[str, Any]:
    """The Avro fields of ``record_class`` (sent as the only kwarg), by name."""
    record = schema_of({"value": record_class}, registry)["fields"][0]["type"]
    return {field["name"]: field for field in record["fields"]}


def decode_from_empty_writer(record_class: type, registry: CodecRegistry | None = None) -> Any:
    """Decode data written by an older version of ``record_class`` that had no fields."""
    serializer = PayloadSerializer(
        EVENT_TYPE, {"value": record_class}, codec_registry=registry or CodecRegistry()
    )
    empty = {"type": "record", "name": record_class.__name__, "fields": []}
    writer = {**serializer.schema, "fields": [{"name": "value", "type": empty}]}
    return serializer.decode(b"", writer_schema=writer)["value"]


class Colour(enum.Enum):
    RED = "r"
    BLUE = "b"


@attrs.frozen
class DefaultsData:
    flag: bool = False
    count: int = 0
    ratio: float = 0.5
    whole_ratio: float = 2
    name: str = ""
    blob: bytes = b"\x00\xff"
    at: datetime = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    day: date = date(1970, 1, 3)
    ident: UUID = UUID(int=1)  # noqa: RUF009 - UUIDs are immutable
    price: Decimal = attrs.field(default=Decimal("-1.28"), metadata={"precision": 5, "scale": 2})
    colour: Colour = Colour.BLUE
    tags: list[str] = attrs.Factory(list)
    scores: dict[str, int] = attrs.Factory(dict)
    listed: list[int] = [1, 2]  # noqa: RUF008 - a plain (shared) default on purpose
    maybe_at: datetime | None = datetime(2000, 1, 1, tzinfo=UTC)
    when: list[date] = [date(1970, 1, 2)]  # noqa: RUF008 - as above


def test_plain_defaults_become_avro_defaults() -> None:
    defaults = {name: field["default"] for name, field in fields_of(DefaultsData).items()}
    assert defaults == {
        "flag": False,
        "count": 0,
        "ratio": 0.5,
        "whole_ratio": 2,
        "name": "",
        "blob": "\x00\xff",
        "at": 1_000_000,
        "day": 2,
        "ident": "00000000-0000-0000-0000-000000000001",
        "price": "\xff\x80",  # -128 as big-endian two's complement, one code point per byte
        "colour": "BLUE",
        "tags": [],
        "scores": {},
        "listed": [1, 2],
        "maybe_at": 946_684_800_000_000,
        "when": [1],
    }
    fastavro.parse_schema(schema_of({"value": DefaultsData}))


def test_fields_an_older_writer_did_not_send_are_filled_with_their_defaults() -> None:
    decoded = decode_from_empty_writer(DefaultsData)
    assert decoded == DefaultsData()
    assert type(decoded.blob) is bytes
    assert type(decoded.ratio) is float
    assert type(decoded.whole_ratio) is float
    assert decoded.colour is Colour.BLUE


def test_optional_field_defaulting_to_a_value_puts_the_value_branch_first() -> None:
    @attrs.frozen
    class RetryData:
        attempts: int | None = 3

    assert fields_of(RetryData)["attempts"] == {
        "name": "attempts",
        "type": ["long", "null"],
        "default": 3,
    }
    assert decode_from_empty_writer(RetryData) == RetryData()


@attrs.frozen
class PrefsData:
    language: str = "en"
    email: str | None = None


@attrs.frozen
class AccountData:
    prefs: PrefsData = PrefsData()
    backup: PrefsData | None = None


def test_record_defaults_become_avro_defaults() -> None:
    fields = fields_of(AccountData)
    assert fields["prefs"]["default"] == {"language": "en", "email": None}
    assert fields["backup"]["default"] is None
    assert decode_from_empty_writer(AccountData) == AccountData()


@attrs.frozen
class NoteData:
    note: str | None = None


@attrs.frozen
class NotedData:
    inner: NoteData = NoteData(note="set")


def test_record_default_that_does_not_match_a_nested_union_is_left_out() -> None:
    # inner.note's union is ["null", "string"]: a default for it can only be null.
    assert "default" not in fields_of(NotedData)["inner"]


@pytest.mark.parametrize(
    ("annotation", "default"),
    [
        (float, float("nan")),
        (float, float("inf")),
        (int, "not an int"),
        (UUID, attrs.Factory(uuid4)),
        (datetime, datetime(2024, 1, 1)),  # naive: not a valid value
        (list[int], attrs.Factory(lambda: [1])),
    ],
    ids=["nan", "inf", "wrong-type", "factory", "naive", "other-factory"],
)
def test_defaults_that_cannot_be_represented_are_left_out(annotation: Any, default: Any) -> None:
    holder = attrs.make_class(
        "HolderData", {"value": attrs.field(type=annotation, default=default)}
    )
    assert "default" not in fields_of(holder)["value"]


def test_codec_default_is_its_avro_value(registry: CodecRegistry) -> None:
    holder = attrs.make_class(
        "HolderData",
        {"value": attrs.field(type=CourseKey, default=CourseKey("X", "Y", "Z"))},
        frozen=True,
    )
    assert fields_of(holder, registry)["value"]["default"] == "course-v1:X+Y+Z"
    assert decode_from_empty_writer(holder, registry) == holder()


def test_codec_that_cannot_convert_its_default_leaves_it_out() -> None:
    fresh = CodecRegistry()

    def refuse(value: CourseKey) -> str:
        raise ValueError("no")

    fresh.register(CourseKey, "string", to_avro=refuse, from_avro=CourseKey.from_string)
    holder = attrs.make_class(
        "HolderData", {"value": attrs.field(type=CourseKey, default=CourseKey("X", "Y", "Z"))}
    )
    assert "default" not in fields_of(holder, fresh)["value"]
