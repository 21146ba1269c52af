"""Turning annotations into the type tree: what is supported, and how refusals read."""

from __future__ import annotations

import enum
import typing
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Optional, Union
from uuid import UUID

import attrs
import pytest

from events_celery.avro import CodecRegistry, PayloadSerializer
from events_celery.avro.resolve import resolve_payload
from events_celery.avro.types import (
    ArrayNode,
    CodecNode,
    DecimalNode,
    EnumNode,
    MapNode,
    OptionalNode,
    RecordNode,
    ScalarNode,
)
from events_celery.exceptions import InvalidEventTypeError, UnsupportedTypeError

from . import payloads
from .payloads import EVENT_TYPE, CourseKey, Mode, OrderData, UserData


def unsupported(data: dict[str, Any], registry: CodecRegistry | None = None) -> str:
    """The message of the UnsupportedTypeError that defining ``data`` raises."""
    with pytest.raises(UnsupportedTypeError) as info:
        PayloadSerializer(EVENT_TYPE, data, codec_registry=registry or CodecRegistry())
    return str(info.value)


def node_of(annotation: Any, registry: CodecRegistry | None = None) -> Any:
    return (
        resolve_payload(EVENT_TYPE, {"value": annotation}, registry or CodecRegistry())
        .fields[0]
        .node
    )


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (bool, "boolean"),
        (int, "long"),
        (float, "double"),
        (str, "string"),
        (bytes, "bytes"),
        (datetime, {"type": "long", "logicalType": "timestamp-micros"}),
        (date, {"type": "int", "logicalType": "date"}),
        (UUID, {"type": "string", "logicalType": "uuid"}),
    ],
)
def test_plain_types_become_scalar_nodes(annotation: type, schema: Any) -> None:
    assert node_of(annotation) == ScalarNode(annotation, schema)


@pytest.mark.parametrize(
    "annotation",
    [Optional[int], Union[int, None], int | None, None | int],  # noqa: UP007, UP045
    ids=repr,
)
def test_every_spelling_of_optional_is_an_optional_node(annotation: Any) -> None:
    assert node_of(annotation) == OptionalNode(ScalarNode(int, "long"))


def test_containers_nest() -> None:
    node = node_of(dict[str, list[Mode | None]])
    assert node == MapNode(ArrayNode(OptionalNode(EnumNode(Mode, ("AUDIT", "VERIFIED")))))


def test_typing_aliases_of_containers_are_accepted() -> None:
    assert node_of(typing.List[int]) == ArrayNode(ScalarNode(int, "long"))  # noqa: UP006
    assert node_of(typing.Dict[str, int]) == MapNode(ScalarNode(int, "long"))  # noqa: UP006


def test_annotated_is_unwrapped() -> None:
    assert node_of(Annotated[int, "meaning"]) == ScalarNode(int, "long")


def test_future_annotations_are_resolved() -> None:
    # payloads.py uses `from __future__ import annotations`: its annotations are strings.
    assert isinstance(attrs.fields(payloads.AddressData).street.type, str | type)
    record = node_of(OrderData)
    assert isinstance(record, RecordNode)
    assert [field.name for field in record.fields] == ["order_id", "user", "total", "lines", "note"]
    assert record.fields[2].node == DecimalNode(12, 2)


def test_codec_types_become_codec_nodes(registry: CodecRegistry) -> None:
    node = node_of(CourseKey, registry)
    assert isinstance(node, CodecNode)
    assert node.codec.python_type is CourseKey


def test_decimal_without_precision_names_the_field_and_the_fix() -> None:
    @attrs.frozen
    class TotalData:
        total: Decimal

    message = unsupported({"order": TotalData})
    assert message == (
        "org.example.shop.order.placed.v1: field 'order.total' has type Decimal without "
        "precision/scale; declare it with attrs.field(metadata={'precision': 12, 'scale': 2})"
    )


@pytest.mark.parametrize("annotation", [Decimal, Decimal | None, list[Decimal]], ids=repr)
def test_decimal_as_a_direct_kwarg_asks_to_wrap_it_in_an_attrs_class(annotation: Any) -> None:
    message = unsupported({"total": annotation})
    assert "field 'total" in message
    assert "wrap it in an attrs class" in message


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"precision": 0, "scale": 0}, "precision 0"),
        ({"precision": "12", "scale": 2}, "precision '12'"),
        ({"precision": 4, "scale": 5}, "scale 5"),
        ({"precision": 4, "scale": -1}, "scale -1"),
    ],
)
def test_invalid_decimal_precision_or_scale_is_refused(
    metadata: dict[str, Any], problem: str
) -> None:
    @attrs.frozen
    class TotalData:
        total: Decimal = attrs.field(metadata=metadata)

    assert problem in unsupported({"order": TotalData})


def test_decimal_scale_defaults_to_zero() -> None:
    @attrs.frozen
    class CountData:
        count: Decimal = attrs.field(metadata={"precision": 20})

    assert node_of(CountData).fields[0].node == DecimalNode(20, 0)


class PlainClass:
    pass


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        (set[int], "set[int]"),
        (tuple[int, str], "tuple[int, str]"),
        (object, "object"),
        (Any, "Any"),
        (PlainClass, "PlainClass"),
        (Sequence[int], "Sequence[int]"),
        (complex, "complex"),
    ],
    ids=str,
)
def test_unsupported_types_name_the_field_and_list_what_is_supported(
    annotation: Any, shown: str
) -> None:
    holder = attrs.make_class("HolderData", {"thing": attrs.field(type=annotation)})
    message = unsupported({"holder": holder})
    assert "field 'holder.thing' has type" in message
    assert shown in message
    assert "supported types are bool, int, float, str" in message
    assert "register_codec()" in message


def test_union_of_two_types_is_refused() -> None:
    message = unsupported({"value": int | str})
    assert "the only union supported is T | None" in message


def test_dict_with_non_str_keys_is_refused() -> None:
    assert "map keys are strings" in unsupported({"value": dict[int, str]})


@pytest.mark.parametrize("annotation", [list, dict], ids=repr)
def test_container_without_item_types_is_refused(annotation: Any) -> None:
    assert "without item types" in unsupported({"value": annotation})


def test_string_annotation_in_data_is_refused() -> None:
    assert "has type 'OrderData'" in unsupported({"order": "OrderData"})


def test_two_different_classes_with_the_same_name_are_refused() -> None:
    other = attrs.make_class("UserData", {"id": attrs.field(type=int)}, frozen=True)
    message = unsupported({"user": UserData, "other": other})
    assert "field 'other' has type" in message
    assert "is also named 'UserData'" in message
    assert "rename one of them" in message


def test_class_named_payload_is_refused() -> None:
    payload_class = attrs.make_class("Payload", {"id": attrs.field(type=int)})
    assert "reserved for the top-level record" in unsupported({"p": payload_class})


@attrs.frozen
class TreeData:
    label: str
    children: list[TreeData]


def test_recursive_class_is_refused() -> None:
    message = unsupported({"tree": TreeData})
    assert "field 'tree.children[]'" in message
    assert "recursive payload types are not supported" in message


def test_unresolvable_annotation_is_reported() -> None:
    @attrs.frozen
    class BrokenData:
        thing: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

    message = unsupported({"broken": BrokenData})
    assert "cannot be resolved" in message
    assert "NotDefinedAnywhere" in message


def test_missing_annotation_is_reported() -> None:
    untyped = attrs.make_class("UntypedData", ["thing"])
    assert "field 'untyped.thing' has no type annotation" in unsupported({"untyped": untyped})


class BadSymbols(enum.Enum):
    ok = 1
    also_ok = 2


def test_enum_with_names_that_are_not_avro_symbols_is_refused() -> None:
    bad = enum.Enum("BadEnum", {"fine": 1, "not-fine": 2})
    assert "['not-fine'] are not valid Avro enum symbols" in unsupported({"value": bad})


def test_flag_enum_is_refused() -> None:
    class Permission(enum.Flag):
        READ = 1
        WRITE = 2

    assert "Flag enum" in unsupported({"value": Permission})


def test_empty_enum_is_refused() -> None:
    class Nothing(enum.Enum):
        pass

    assert "without members" in unsupported({"value": Nothing})


def test_int_enum_is_an_avro_enum_not_an_int() -> None:
    assert isinstance(node_of(payloads.Level), EnumNode)


@pytest.mark.parametrize("name", ["has-dash", "1starts_with_digit", "ünïcode", ""])
def test_kwarg_names_must_be_avro_names(name: str) -> None:
    assert "is not a valid Avro field name" in unsupported({name: int})


@pytest.mark.parametrize(
    "event_type", ["", "org.example..v1", "org.example.9lives.v1", "org-example.v1"]
)
def test_event_type_must_be_an_avro_namespace(event_type: str) -> None:
    with pytest.raises(InvalidEventTypeError, match="not a valid Avro namespace"):
        PayloadSerializer(event_type, {})


def test_str_subclass_needs_a_codec() -> None:
    class Slug(str):
        __slots__ = ()

    message = unsupported({"slug": Slug})
    assert "Slug" in message
    assert "register_codec()" in message
