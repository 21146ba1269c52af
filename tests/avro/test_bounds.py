"""Bounded decoding: list and dict items per byte, an item budget, and no zero-byte list items."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import attrs
import pytest
from hypothesis import given, settings

from events_celery.avro.bounds import ItemBoundError, compile_item_check, zero_byte_arrays
from events_celery.avro.codec import CodecRegistry
from events_celery.avro.resolve import resolve_payload
from events_celery.avro.serializer import PayloadSerializer
from events_celery.exceptions import DecodeError, PayloadValidationError, UnsupportedTypeError
from tests.avro.payloads import EVENT_TYPE, AddressData, CourseKey, KitchenSinkData
from tests.avro.strategies import records
from tests.avro.test_serializer import COURSE_KEYS


@attrs.frozen
class EmptyData:
    pass


@attrs.frozen
class HollowData:
    inner: EmptyData


@attrs.frozen
class FlagData:
    on: bool


def zigzag(n: int) -> bytes:
    """The Avro (zig-zag varint) encoding of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def empty_items_schema(items: Any) -> dict[str, Any]:
    """A writer schema (an older version, say) whose list items are written in zero bytes."""
    return {
        "type": "record",
        "name": "Payload",
        "namespace": EVENT_TYPE,
        "fields": [{"name": "xs", "type": {"type": "array", "items": items}}],
    }


EMPTY_RECORD = {"type": "record", "name": "EmptyData", "fields": []}


@pytest.mark.parametrize("item", [EmptyData, HollowData])
def test_a_list_of_zero_byte_items_is_refused_when_the_event_is_defined(item: type) -> None:
    with pytest.raises(UnsupportedTypeError) as caught:
        PayloadSerializer(EVENT_TYPE, {"xs": list[item]})  # type: ignore[valid-type]
    message = str(caught.value)
    assert f"{EVENT_TYPE}: field 'xs'" in message
    assert "zero bytes" in message
    assert "give the item type a field, or send a count instead" in message


def test_zero_byte_items_are_fine_outside_lists() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"empty": EmptyData, "hollow": dict[str, EmptyData]})
    payload = {"empty": EmptyData(), "hollow": {"a": EmptyData()}}
    assert serializer.decode(serializer.encode(payload)) == payload


def test_zero_byte_arrays_names_each_path() -> None:
    schema = {
        "type": "record",
        "name": "Payload",
        "fields": [
            {"name": "a", "type": {"type": "array", "items": "null"}},
            {"name": "b", "type": {"type": "array", "items": EMPTY_RECORD}},
            {"name": "c", "type": {"type": "array", "items": "EmptyData"}},
            {"name": "d", "type": {"type": "array", "items": "long"}},
            {"name": "e", "type": ["null", {"type": "array", "items": ["null", "long"]}]},
        ],
    }
    assert zero_byte_arrays(schema) == ["a", "b", "c"]


def hostile_decode(items: Any, body: bytes) -> subprocess.CompletedProcess[str]:
    """Decode ``body`` with a zero-byte-item writer schema, in a process capped at 512 MiB."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
        from events_celery.avro.serializer import PayloadSerializer
        from tests.avro.test_bounds import FlagData, empty_items_schema
        serializer = PayloadSerializer({EVENT_TYPE!r}, {{"xs": list[FlagData]}})
        try:
            serializer.decode({body!r}, writer_schema=empty_items_schema({items!r}))
        except Exception as exc:
            print(type(exc).__name__, type(exc.__cause__).__name__, exc)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("items", "count"),
    [
        pytest.param(EMPTY_RECORD, 1 << 40, id="8 bytes claiming 2^40 field-less records"),
        pytest.param("null", 1_000_000, id="6 bytes claiming a million nulls"),
    ],
)
def test_a_body_claiming_more_items_than_bytes_fails_fast_as_a_decode_error(
    items: Any, count: int
) -> None:
    body = zigzag(count) + b"\x00"
    assert len(body) <= 8
    result = hostile_decode(items, body)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DecodeError ItemBoundError "), result.stdout
    assert f"field 'xs': a list block claims {count} items in the 1 bytes left" in result.stdout


def test_the_item_budget_holds_across_lists_and_dicts() -> None:
    data = {"tags": list[str], "scores": dict[str, int]}
    serializer = PayloadSerializer(EVENT_TYPE, data, max_items=5)
    fits = {"tags": ["a", "b"], "scores": {"x": 1, "y": 2, "z": 3}}
    assert serializer.decode(serializer.encode(fits)) == fits

    too_many = {"tags": ["a", "b", "c"], "scores": {"x": 1, "y": 2, "z": 3}}
    body = PayloadSerializer(EVENT_TYPE, data).encode(too_many)
    with pytest.raises(DecodeError, match="more than 5 list and dict items") as caught:
        serializer.decode(body)
    assert isinstance(caught.value.__cause__, ItemBoundError)
    assert caught.value.__cause__.field == "scores"


def test_sending_more_items_than_the_budget_is_a_payload_error() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"home": list[AddressData]}, max_items=2)
    payload = {"home": [AddressData("a"), AddressData("b"), AddressData("c")]}
    with pytest.raises(PayloadValidationError) as caught:
        serializer.encode(payload)
    assert caught.value.field == "home"
    assert "send fewer items per event" in str(caught.value)


def test_blocks_with_byte_sizes_are_bounded_too() -> None:
    check = compile_item_check(empty_items_schema("long"))
    assert check is not None
    # Two blocks written with sizes (negative counts): 2 items, then 1, then the end.
    body = zigzag(-2) + zigzag(2) + zigzag(5) + zigzag(6) + zigzag(-1) + zigzag(1) + b"\x02\x00"
    assert check(body, 10) == 3
    with pytest.raises(ItemBoundError, match="claims 9 items in the 2 bytes left"):
        check(zigzag(-9) + zigzag(9) + b"\x02\x00", 100)


def test_schemas_without_lists_or_dicts_are_not_scanned() -> None:
    assert compile_item_check({"type": "record", "name": "P", "fields": []}) is None
    assert PayloadSerializer(EVENT_TYPE, {"flag": FlagData})._item_bound is None


def count_items(value: Any) -> int:
    """The list and dict items in a payload value, counted the way Avro writes them."""
    if isinstance(value, list):
        return len(value) + sum(count_items(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(count_items(item) for item in value.values())
    if attrs.has(type(value)):
        return sum(count_items(getattr(value, field.name)) for field in attrs.fields(type(value)))
    return 0


def test_the_scan_counts_every_item_of_any_payload() -> None:
    data = {"sink": KitchenSinkData}
    serializer = PayloadSerializer(EVENT_TYPE, data)
    check = compile_item_check(serializer.schema)
    assert check is not None

    @settings(max_examples=60, deadline=None)
    @given(records(resolve_payload(EVENT_TYPE, data, CodecRegistry()), {CourseKey: COURSE_KEYS}))
    def counts(payload: dict[str, Any]) -> None:
        body = serializer.encode(payload)
        assert check(body, 1 << 30) == count_items(payload["sink"])
        assert serializer.decode(body) == payload

    counts()
