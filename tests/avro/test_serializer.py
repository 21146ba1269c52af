"""PayloadSerializer: encode/decode round trips, schema resolution and error wrapping."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from uuid import UUID, uuid4

import attrs
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events_celery.avro import CodecRegistry, PayloadSerializer
from events_celery.avro.resolve import resolve_payload
from events_celery.exceptions import DecodeError, SerializationError

from .payloads import (
    EVENT_TYPE,
    CourseKey,
    KitchenSinkData,
    LineData,
    Mode,
    OrderData,
    OrderV1,
    OrderV2,
    UserData,
)
from .strategies import records

COURSE_KEYS = st.builds(
    CourseKey,
    st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True),
)


def order() -> OrderData:
    return OrderData(
        order_id=UUID("12345678-1234-5678-1234-567812345678"),
        user=UserData(id=UUID(int=7), username="ada", email=None),
        total=Decimal("12.50"),
        lines=[LineData("SKU-1", 2, Decimal("6.25"))],
    )


def payload_property(data: dict[str, Any], registry: CodecRegistry | None = None) -> Any:
    """A hypothesis test: every generated valid payload validates and round-trips exactly."""
    registry = registry or CodecRegistry()
    serializer = PayloadSerializer(EVENT_TYPE, data, codec_registry=registry)
    root = resolve_payload(EVENT_TYPE, data, registry)

    @settings(max_examples=60, deadline=None)
    @given(records(root, {CourseKey: COURSE_KEYS}))
    def round_trip(payload: dict[str, Any]) -> None:
        serializer.validate(payload)
        body = serializer.encode(payload)
        assert serializer.decode(body) == payload
        # The schema-resolution path (used for other schema versions) must agree.
        assert serializer.decode(body, writer_schema=serializer.schema) == payload

    return round_trip


def test_round_trip_rebuilds_attrs_instances() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    decoded = serializer.decode(serializer.encode({"order": order()}))
    assert decoded == {"order": order()}
    assert type(decoded["order"].user) is UserData
    assert type(decoded["order"].lines[0]) is LineData


def test_kitchen_sink_payloads_round_trip() -> None:
    payload_property({"sink": KitchenSinkData})()


@pytest.mark.parametrize(
    "annotation",
    [
        bool,
        int,
        float,
        str,
        bytes,
        datetime,
        date,
        UUID,
        Mode,
        list[int],
        dict[str, str],
        str | None,
        list[UserData | None],
        dict[str, list[Mode]],
    ],
    ids=repr,
)
def test_each_supported_type_round_trips_as_a_top_level_kwarg(annotation: Any) -> None:
    payload_property({"value": annotation, "other": int})()


def test_codec_values_round_trip(registry: CodecRegistry) -> None:
    payload_property({"course": CourseKey, "courses": list[CourseKey | None]}, registry)()


def test_decimal_keeps_its_value_at_the_schema_scale() -> None:
    @attrs.frozen
    class PriceData:
        amount: Decimal = attrs.field(metadata={"precision": 6, "scale": 2})

    serializer = PayloadSerializer(EVENT_TYPE, {"price": PriceData})
    for text in ("12.5", "12.500", "-0.01", "0", "1E+2"):
        payload = {"price": PriceData(Decimal(text))}
        serializer.validate(payload)
        body = serializer.encode(payload)
        assert serializer.decode(body) == payload
        # The schema-resolution path (used for other schema versions) must agree.
        assert serializer.decode(body, writer_schema=serializer.schema) == payload


def test_decoded_datetime_is_the_same_instant_in_utc() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"at": datetime})
    sent = datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5)))
    received = serializer.decode(serializer.encode({"at": sent}))["at"]
    assert received == sent
    assert received.utcoffset() == timedelta(0)


def test_int_sent_as_float_is_received_as_float() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"ratio": float, "ratios": list[float]})
    decoded = serializer.decode(serializer.encode({"ratio": 3, "ratios": [1, 2.5]}))
    assert decoded == {"ratio": 3.0, "ratios": [1.0, 2.5]}
    assert type(decoded["ratio"]) is float


def test_encoding_matches_fastavro_on_the_equivalent_record() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData, "mode": Mode})
    record = {
        "order": {
            **attrs.asdict(order(), recurse=False),
            "user": attrs.asdict(order().user),
            "lines": [attrs.asdict(line) for line in order().lines],
        },
        "mode": "VERIFIED",
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(serializer.schema), record)
    assert serializer.encode({"order": order(), "mode": Mode.VERIFIED}) == out.getvalue()


def test_payload_may_be_any_mapping() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"count": int, "name": str})
    payload = MappingProxyType({"count": 0, "name": ""})
    serializer.validate(payload)
    assert serializer.decode(serializer.encode(payload)) == dict(payload)


def test_construction_does_not_parse_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_schema must not run when a serializer is created")

    monkeypatch.setattr("events_celery.avro.serializer.parse_schema", refuse)
    PayloadSerializer(EVENT_TYPE, {"order": OrderData})


def test_parsed_schema_is_built_once() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    assert serializer.parsed_schema is serializer.parsed_schema
    assert serializer.schema is serializer.schema


def test_encode_wraps_fastavro_errors_naming_the_event_type() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"count": int})
    with pytest.raises(SerializationError, match=EVENT_TYPE) as info:
        serializer.encode({"count": "not a number"})
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "body",
    [b"", b"\x02", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"],
    ids=["empty", "truncated", "garbage"],
)
def test_bad_bytes_raise_decode_error_naming_the_event_type(body: bytes) -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    with pytest.raises(DecodeError, match=EVENT_TYPE) as info:
        serializer.decode(body)
    assert info.value.__cause__ is not None


def test_bytes_left_over_after_the_payload_raise_decode_error() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    body = serializer.encode({"order": order()})
    with pytest.raises(DecodeError, match="2 bytes are left over"):
        serializer.decode(body + b"\x02\x04")


def test_non_bytes_body_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match=EVENT_TYPE):
        PayloadSerializer(EVENT_TYPE, {"count": int}).decode(None)  # type: ignore[arg-type]


def test_truncated_message_raises_decode_error() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    body = serializer.encode({"order": order()})
    with pytest.raises(DecodeError):
        serializer.decode(body[:-3])


def test_payload_class_refusing_the_values_raises_decode_error() -> None:
    @attrs.frozen
    class StrictData:
        count: int = attrs.field(validator=attrs.validators.gt(0))

    writer = PayloadSerializer(EVENT_TYPE, {"data": StrictData})
    body = writer.encode({"data": StrictData(5)})
    # The same bytes hold a 0 when read with a schema whose record accepts it.
    zero = PayloadSerializer(EVENT_TYPE, {"data": int}).encode({"data": 0})
    assert writer.decode(body) == {"data": StrictData(5)}
    with pytest.raises(DecodeError, match=r"StrictData|count"):
        writer.decode(zero)


def rename(schema: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The schema with the record named ``old`` renamed (classes must differ in tests)."""
    text = repr(schema).replace(f"'{old}'", f"'{new}'")
    return eval(text)


def test_old_data_is_read_with_reader_defaults() -> None:
    old = PayloadSerializer(EVENT_TYPE, {"order": OrderV1})
    new = PayloadSerializer(EVENT_TYPE, {"order": OrderV2})
    body = old.encode({"order": OrderV1(uuid4(), Decimal("1.00"))})
    decoded = new.decode(body, writer_schema=rename(old.schema, "OrderV1", "OrderV2"))
    assert decoded["order"].note is None
    assert decoded["order"].lines == []


def test_new_data_is_read_by_old_reader_ignoring_added_fields() -> None:
    old = PayloadSerializer(EVENT_TYPE, {"order": OrderV1})
    new = PayloadSerializer(EVENT_TYPE, {"order": OrderV2})
    order_id = uuid4()
    body = new.encode({"order": OrderV2(order_id, Decimal("2.50"), "gift", ["a"])})
    decoded = old.decode(body, writer_schema=rename(new.schema, "OrderV2", "OrderV1"))
    assert decoded == {"order": OrderV1(order_id, Decimal("2.50"))}


def test_writer_schema_equal_to_own_schema_decodes() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"order": OrderData})
    body = serializer.encode({"order": order()})
    writer = dict(serializer.schema)
    assert serializer.decode(body, writer_schema=writer) == {"order": order()}
    assert serializer.decode(body, writer_schema=writer) == {"order": order()}


def test_unresolvable_writer_schema_raises_decode_error() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"count": int})
    writer = PayloadSerializer(EVENT_TYPE, {"count": str})
    body = writer.encode({"count": "three"})
    with pytest.raises(DecodeError, match=EVENT_TYPE):
        serializer.decode(body, writer_schema=writer.schema)


def test_enum_symbols_decode_to_members() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"mode": Mode, "modes": dict[str, Mode]})
    payload = {"mode": Mode.AUDIT, "modes": {"a": Mode.VERIFIED}}
    assert serializer.decode(serializer.encode(payload)) == payload


def test_private_attributes_round_trip_through_their_init_alias() -> None:
    @attrs.frozen
    class SecretData:
        _token: str
        visible: int = 0

    serializer = PayloadSerializer(EVENT_TYPE, {"secret": SecretData})
    assert [field["name"] for field in serializer.schema["fields"][0]["type"]["fields"]] == [
        "_token",
        "visible",
    ]
    payload = {"secret": SecretData(token="t", visible=1)}
    assert serializer.decode(serializer.encode(payload)) == payload


def test_fields_with_init_false_are_not_carried() -> None:
    @attrs.frozen
    class DerivedData:
        price: int
        doubled: int = attrs.field(init=False)

        @doubled.default
        def _double(self) -> int:
            return self.price * 2

    serializer = PayloadSerializer(EVENT_TYPE, {"derived": DerivedData})
    assert [field["name"] for field in serializer.schema["fields"][0]["type"]["fields"]] == [
        "price"
    ]
    decoded = serializer.decode(serializer.encode({"derived": DerivedData(21)}))
    assert decoded["derived"].doubled == 42


def test_empty_payload_round_trips() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {})
    assert serializer.encode({}) == b""
    assert serializer.decode(b"") == {}


def test_repr_names_the_event_type() -> None:
    assert EVENT_TYPE in repr(PayloadSerializer(EVENT_TYPE, {}))


def test_aware_datetime_at_utc_now_round_trips() -> None:
    serializer = PayloadSerializer(EVENT_TYPE, {"at": datetime})
    now = datetime.now(UTC)
    assert serializer.decode(serializer.encode({"at": now})) == {"at": now}
