"""Custom codecs: registering a type, its schema, validation and round trips."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from events_celery.avro import (
    Codec,
    CodecRegistry,
    PayloadSerializer,
    codec,
    codecs,
    register_codec,
)
from events_celery.exceptions import (
    EventDefinitionError,
    PayloadValidationError,
    UnsupportedTypeError,
)

from .payloads import EVENT_TYPE, CourseKey


@attrs.frozen
class EnrollmentData:
    course: CourseKey
    previous: CourseKey | None = None


def test_registered_codec_type_round_trips(registry: CodecRegistry) -> None:
    serializer = PayloadSerializer(
        EVENT_TYPE, {"enrollment": EnrollmentData}, codec_registry=registry
    )
    payload = {
        "enrollment": EnrollmentData(CourseKey("X", "CS1", "T1"), CourseKey("X", "CS0", "T0"))
    }
    assert serializer.decode(serializer.encode(payload)) == payload


def test_codec_schema_is_used_in_the_payload_schema(registry: CodecRegistry) -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"course": CourseKey}, codec_registry=registry)
    assert serializer.schema["fields"] == [{"name": "course", "type": "string"}]


def test_codec_value_is_written_as_its_avro_value(registry: CodecRegistry) -> None:
    with_codec = PayloadSerializer(EVENT_TYPE, {"course": CourseKey}, codec_registry=registry)
    plain = PayloadSerializer(EVENT_TYPE, {"course": str})
    key = CourseKey("X", "CS1", "T1")
    assert with_codec.encode({"course": key}) == plain.encode({"course": str(key)})


def test_codec_value_is_validated_with_isinstance(registry: CodecRegistry) -> None:
    serializer = PayloadSerializer(
        EVENT_TYPE, {"enrollment": EnrollmentData}, codec_registry=registry
    )
    with pytest.raises(PayloadValidationError) as info:
        serializer.validate({"enrollment": EnrollmentData("course-v1:X+CS1+T1")})  # type: ignore[arg-type]
    assert info.value.field == "enrollment.course"
    assert info.value.problem == "expects CourseKey, got str ('course-v1:X+CS1+T1')"


def test_type_without_codec_is_unsupported_with_a_hint_to_register_one() -> None:
    with pytest.raises(UnsupportedTypeError, match=r"field 'course' .*register_codec\(\)"):
        PayloadSerializer(EVENT_TYPE, {"course": CourseKey}, codec_registry=CodecRegistry())


def test_fresh_registries_do_not_share_codecs(registry: CodecRegistry) -> None:
    assert CourseKey in registry
    assert CourseKey not in CodecRegistry()
    assert len(CodecRegistry()) == 0


def test_codec_registered_for_a_base_class_applies_to_subclasses(registry: CodecRegistry) -> None:
    class LibraryKey(CourseKey):
        pass

    assert registry.lookup(LibraryKey) is registry.lookup(CourseKey)


def test_registering_again_replaces_the_codec(registry: CodecRegistry) -> None:
    replacement = registry.register(
        CourseKey, "bytes", lambda key: str(key).encode(), CourseKey.from_string
    )
    assert registry.lookup(CourseKey) is replacement
    assert list(registry) == [replacement]


def test_unregister_forgets_the_codec(registry: CodecRegistry) -> None:
    registry.unregister(CourseKey)
    registry.unregister(CourseKey)  # twice is fine
    assert registry.lookup(CourseKey) is None


def test_serializer_uses_the_default_registry_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = CodecRegistry()
    monkeypatch.setattr(codec, "codecs", fresh)
    register_codec(CourseKey, "string", str, CourseKey.from_string)
    serializer = PayloadSerializer(EVENT_TYPE, {"course": CourseKey})
    assert serializer.codec_registry is fresh
    assert CourseKey not in codecs  # the package-level instance was not touched


def test_register_codec_returns_the_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "codecs", CodecRegistry())
    registered = register_codec(CourseKey, "string", str, CourseKey.from_string)
    assert registered == Codec(CourseKey, "string", str, CourseKey.from_string)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ((CourseKey(" ", "", ""), "string", str, str), "python_type must be a class"),
        ((CourseKey, "strin", str, CourseKey.from_string), "is not a valid Avro schema"),
        ((CourseKey, {"type": "record"}, str, CourseKey.from_string), "is not a valid Avro schema"),
        ((CourseKey, "string", "str", CourseKey.from_string), "to_avro must be callable"),
        ((CourseKey, "string", str, None), "from_avro must be callable"),
    ],
    ids=["not-a-class", "bad-name", "bad-record", "to_avro", "from_avro"],
)
def test_unusable_codec_is_refused_at_registration(
    arguments: tuple[Any, ...], problem: str
) -> None:
    with pytest.raises(EventDefinitionError, match=problem):
        CodecRegistry().register(*arguments)


def test_codec_with_a_logical_schema_round_trips() -> None:
    @attrs.frozen
    class Millis:
        value: int

    fresh = CodecRegistry()
    fresh.register(Millis, {"type": "long", "logicalType": "x-millis"}, lambda m: m.value, Millis)
    serializer = PayloadSerializer(EVENT_TYPE, {"at": Millis}, codec_registry=fresh)
    assert serializer.decode(serializer.encode({"at": Millis(5)})) == {"at": Millis(5)}


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


def point_registry() -> CodecRegistry:
    fresh = CodecRegistry()
    schema = {
        "type": "record",
        "name": "Point",
        "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": "long"}],
    }
    fresh.register(Point, schema, lambda p: {"x": p.x, "y": p.y}, lambda d: Point(d["x"], d["y"]))
    return fresh


def test_named_codec_schema_used_twice_is_defined_once() -> None:
    serializer = PayloadSerializer(
        EVENT_TYPE, {"start": Point, "end": Point | None}, codec_registry=point_registry()
    )
    assert serializer.schema["fields"][1]["type"] == ["null", "Point"]
    payload = {"start": Point(1, 2), "end": Point(3, 4)}
    assert serializer.decode(serializer.encode(payload)) == payload


def test_named_codec_schema_clashing_with_a_class_name_is_refused() -> None:
    other = attrs.make_class("Point", {"x": attrs.field(type=int)})
    with pytest.raises(UnsupportedTypeError, match="also named 'Point'"):
        PayloadSerializer(EVENT_TYPE, {"a": Point, "b": other}, codec_registry=point_registry())
