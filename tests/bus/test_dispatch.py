"""The wire format: events to (headers, properties, body) and back, poison messages, keys."""

# No `from __future__ import annotations`: two versions of one payload class are defined
# inside a test, so their annotations must be real types.

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import attrs
import pytest
from django.core.management import call_command
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from events_celery import DecodeError, EventMetadata, EventRegistry, EventSignal, __version__
from events_celery.avro import fingerprint
from events_celery.bus.dispatch import (
    HEADER_FINGERPRINT,
    HEADER_PARTITION_KEY,
    PoisonMessageError,
    decode_event,
    encode_event,
    key_getter,
)
from events_celery.metadata import HEADER_DATA_CONTENT_TYPE, HEADER_MINOR_VERSION, HEADER_TYPE
from events_celery.testing import isolated_registry
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, Mode, OrderData

AVRO = "application/avro"
MAX_SIZE = 1 << 20
PARCEL = "org.example.test.dispatch.parcel.shipped.v1"


def make_order(**overrides):
    values = {
        "id": uuid.UUID("9f1c1b0e-8a5d-4c38-9d4e-2f0b7d5c1a11"),
        "customer": CustomerData(
            id=uuid.UUID("0b7e7d2a-3c1f-4d5e-8f9a-1b2c3d4e5f60"), email="ada@example.org"
        ),
        "total": Decimal("12.50"),
        "placed_at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "mode": Mode.VERIFIED,
        "note": "gift wrap",
    }
    values.update(overrides)
    return OrderData(**values)


def make_metadata(event_type, **overrides):
    values = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "event_type": event_type,
        "minor_version": 1,
        "source": "shop",
        "source_host": "web-1",
        "time": datetime(2024, 5, 1, 12, 30, 15, 654321, tzinfo=UTC),
    }
    values.update(overrides)
    return EventMetadata(**values)


def encode(signal, payload, **kwargs):
    metadata = kwargs.pop("metadata", None) or make_metadata(signal.event_type)
    return encode_event(signal, metadata, signal.serializer.encode(payload), **kwargs)


def decode(message, **kwargs):
    options = {"content_type": message.properties["content_type"], "max_size": MAX_SIZE}
    options.update(kwargs)
    return decode_event(message.headers, message.body, **options)


# --- encode_event ---------------------------------------------------------------------------


def test_properties_follow_the_wire_format():
    metadata = make_metadata(ORDER_PLACED.event_type)

    message = encode(ORDER_PLACED, {"order": make_order()}, metadata=metadata)

    assert message.properties["content_type"] == "application/avro"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["message_id"] == "12345678-1234-5678-1234-567812345678"
    assert message.properties["type"] == ORDER_PLACED.event_type
    assert message.properties["app_id"] == "shop"
    assert message.properties["timestamp"] == int(metadata.time.timestamp())


def test_headers_follow_the_wire_format():
    message = encode(ORDER_PLACED, {"order": make_order()})

    assert message.headers == {
        "ce_specversion": "1.0",
        "ce_id": "12345678-1234-5678-1234-567812345678",
        "ce_type": ORDER_PLACED.event_type,
        "ce_source": "shop",
        "ce_time": "2024-05-01T12:30:15.654321Z",
        "ce_minorversion": "1",
        "ce_datacontenttype": "application/avro",
        "sourcehost": "web-1",
        "sourcelib": __version__,
        "schemafingerprint": ORDER_PLACED.serializer.fingerprint,
    }


def test_fingerprint_header_is_the_schemas_crc64():
    message = encode(PING, {"n": 1})

    assert message.headers[HEADER_FINGERPRINT] == fingerprint(PING.serializer.schema)
    assert len(message.headers[HEADER_FINGERPRINT]) == 16


def test_partition_key_header_only_when_given():
    without = encode(PING, {"n": 1})
    with_key = encode(PING, {"n": 1}, partition_key="customer-42")

    assert HEADER_PARTITION_KEY not in without.headers
    assert with_key.headers[HEADER_PARTITION_KEY] == "customer-42"


def test_body_is_the_avro_payload_unchanged():
    body = PING.serializer.encode({"n": 7})

    message = encode_event(PING, make_metadata(PING.event_type), body)

    assert message.body == body


# --- decode_event ---------------------------------------------------------------------------


def test_decoded_event_equals_the_sent_one():
    order = make_order()
    metadata = make_metadata(ORDER_PLACED.event_type)

    event = decode(encode(ORDER_PLACED, {"order": order}, metadata=metadata))

    assert event.signal is ORDER_PLACED
    assert event.metadata == metadata
    assert event.payload == {"order": order}


def test_headers_received_as_bytes_are_decoded():
    message = encode(PING, {"n": 3})
    headers = {name: value.encode() for name, value in message.headers.items()}

    event = decode_event(headers, message.body, content_type=AVRO, max_size=MAX_SIZE)

    assert event.payload == {"n": 3}
    assert event.metadata == make_metadata(PING.event_type)


def test_decoding_uses_the_given_registry():
    events = EventRegistry()
    local = EventSignal(PING.event_type, data={"n": int}, event_registry=events)

    event = decode(encode(PING, {"n": 3}), event_registry=events)

    assert event.signal is local


def test_body_exactly_at_the_size_limit_is_accepted():
    message = encode(PING, {"n": 3})

    assert decode(message, max_size=len(message.body)).payload == {"n": 3}


orders = st.builds(
    OrderData,
    id=st.uuids(),
    customer=st.builds(CustomerData, id=st.uuids(), email=st.text()),
    total=st.decimals(
        min_value=Decimal("-9999999999.99"),
        max_value=Decimal("9999999999.99"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    ),
    placed_at=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    mode=st.sampled_from(Mode),
    note=st.none() | st.text(),
)


@given(order=orders, event_id=st.uuids(), minor=st.integers(min_value=0, max_value=1000))
def test_any_order_round_trips_through_the_wire_format(order, event_id, minor):
    metadata = make_metadata(ORDER_PLACED.event_type, id=event_id, minor_version=minor)

    event = decode(encode(ORDER_PLACED, {"order": order}, metadata=metadata))

    assert event.metadata == metadata
    assert event.payload == {"order": order}


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_64_bit_int_round_trips_through_the_wire_format(n):
    assert decode(encode(PING, {"n": n})).payload == {"n": n}


# --- poison messages ------------------------------------------------------------------------


def poison_reason(headers, body, **kwargs):
    options = {"content_type": AVRO, "max_size": MAX_SIZE}
    options.update(kwargs)
    with pytest.raises(PoisonMessageError) as excinfo:
        decode_event(headers, body, **options)
    return excinfo.value.reason


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-python-serialize", None]
)
def test_wrong_content_type_is_poison(content_type):
    message = encode(PING, {"n": 1})

    reason = poison_reason(message.headers, message.body, content_type=content_type)

    assert f"content type is {content_type!r}" in reason
    assert "'application/avro'" in reason


def test_declared_data_content_type_must_be_avro():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_DATA_CONTENT_TYPE: "application/json"}

    reason = poison_reason(headers, message.body)

    assert HEADER_DATA_CONTENT_TYPE in reason


def test_too_large_body_is_poison():
    message = encode(PING, {"n": 2**40})

    reason = poison_reason(message.headers, message.body, max_size=len(message.body) - 1)

    assert f"body is {len(message.body)} bytes" in reason
    assert "EVENT_BUS_MAX_MESSAGE_SIZE" in reason


@pytest.mark.parametrize("name", ["ce_id", "ce_type", "ce_time", "ce_minorversion", "ce_source"])
def test_missing_header_is_poison_naming_it(name):
    message = encode(PING, {"n": 1})
    headers = dict(message.headers)
    del headers[name]

    assert name in poison_reason(headers, message.body)


def test_malformed_header_is_poison_naming_it():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_MINOR_VERSION: "latest"}

    assert HEADER_MINOR_VERSION in poison_reason(headers, message.body)


def test_unknown_event_type_is_poison():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_TYPE: "org.example.test.unheard_of.v1"}

    reason = poison_reason(headers, message.body)

    assert reason == "unknown event type 'org.example.test.unheard_of.v1'"


def test_missing_fingerprint_is_poison():
    message = encode(PING, {"n": 1})
    headers = dict(message.headers)
    del headers[HEADER_FINGERPRINT]

    assert poison_reason(headers, message.body) == (
        f"message header {HEADER_FINGERPRINT!r} is missing"
    )


def test_unknown_fingerprint_is_poison_to_replay_after_upgrade(settings, tmp_path):
    settings.EVENT_BUS_SCHEMA_DIR = str(tmp_path)
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_FINGERPRINT: "0123456789abcdef"}

    reason = poison_reason(headers, message.body)

    assert PING.event_type in reason
    assert "unknown writer schema fingerprint 0123456789abcdef" in reason
    assert "replay it after upgrading" in reason
    assert "(manage.py event_dead_letters replay)" in reason


@pytest.mark.parametrize("body", [b"", b"\xff\xff\xff\xff", b"\x80"])
def test_garbage_avro_body_is_poison(body):
    message = encode(PING, {"n": 1})

    reason = poison_reason(message.headers, body)

    assert reason.startswith("undecodable Avro body:")
    assert PING.event_type in reason


def test_body_with_bytes_left_over_is_poison():
    message = encode(PING, {"n": 1})

    reason = poison_reason(message.headers, message.body + b"junk")

    assert reason.startswith("undecodable Avro body:")


def test_poison_message_error_is_a_decode_error():
    message = encode(PING, {"n": 1})

    with pytest.raises(DecodeError):
        decode_event(message.headers, message.body, content_type="text/plain", max_size=MAX_SIZE)


def test_unicode_digit_minor_version_is_poison():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_MINOR_VERSION: "²"}

    assert HEADER_MINOR_VERSION in poison_reason(headers, message.body)


# --- schema evolution -----------------------------------------------------------------------


def test_message_written_with_an_older_stored_schema_is_resolved(settings, tmp_path):
    settings.EVENT_BUS_SCHEMA_DIR = str(tmp_path)

    with isolated_registry():

        @attrs.frozen
        class ParcelData:
            id: int

        old = EventSignal(PARCEL, data={"parcel": ParcelData})
        call_command("generate_avro_schemas", PARCEL, stdout=io.StringIO())
        old_schema = old.serializer.schema

    with isolated_registry():

        @attrs.frozen
        class ParcelData:  # the current definition: a field with a default was added
            id: int
            weight: int = 0

        current = EventSignal(PARCEL, data={"parcel": ParcelData})
        call_command("generate_avro_schemas", PARCEL, stdout=io.StringIO())
        old_print = fingerprint(old_schema)
        assert old_print != current.serializer.fingerprint
        assert (tmp_path / f"{PARCEL}.{old_print}.avsc").exists()

        body = io.BytesIO()
        schemaless_writer(body, parse_schema(old_schema), {"parcel": {"id": 7}})
        metadata = make_metadata(PARCEL)
        headers = {**metadata.to_headers(), HEADER_FINGERPRINT: old_print}

        event = decode_event(headers, body.getvalue(), content_type=AVRO, max_size=MAX_SIZE)

    assert event.signal is current
    assert event.metadata == metadata
    assert event.payload == {"parcel": ParcelData(id=7, weight=0)}


# --- key_getter -----------------------------------------------------------------------------


def test_key_of_a_nested_field_is_its_text():
    order = make_order()

    get = key_getter(ORDER_PLACED, "order.customer.id")

    assert get({"order": order}) == str(order.customer.id)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("order.total", "12.50"), ("order.note", "gift wrap"), ("order.id", str(make_order().id))],
)
def test_key_of_a_field_is_str_of_its_value(path, expected):
    assert key_getter(ORDER_PLACED, path)({"order": make_order()}) == expected


def test_key_of_a_top_level_argument():
    assert key_getter(PING, "n")({"n": 42}) == "42"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("customer.id", "'customer'"),
        ("order.nope", "'nope'"),
        ("order.customer.phone", "'phone'"),
        ("order.total.cents", "'cents'"),
    ],
)
def test_key_path_that_is_not_in_the_payload_is_an_attribute_error(path, named):
    with pytest.raises(AttributeError) as excinfo:
        key_getter(ORDER_PLACED, path)

    assert ORDER_PLACED.event_type in str(excinfo.value)
    assert named in str(excinfo.value)


def test_an_enum_partition_key_is_the_member_name_as_on_the_wire():
    get = key_getter(ORDER_PLACED, "order.mode")

    assert get({"order": make_order(mode=Mode.VERIFIED)}) == "VERIFIED"


# --- trusting the binding, not the header -----------------------------------------------------


def test_a_ce_type_that_disagrees_with_the_routing_key_is_poison():
    message = encode(PING, {"n": 1})

    with pytest.raises(PoisonMessageError) as raised:
        decode(message, routing_key=ORDER_PLACED.event_type)

    assert f"'{PING.event_type}'" in raised.value.reason
    assert f"routed with '{ORDER_PLACED.event_type}'" in raised.value.reason


def test_an_event_type_the_service_does_not_subscribe_to_is_poison():
    message = encode(PING, {"n": 1})

    with pytest.raises(PoisonMessageError, match="not an event type this service subscribes"):
        decode(message, routing_key=PING.event_type, subscribed=lambda t: t != PING.event_type)


def test_a_subscribed_event_routed_by_its_own_type_decodes():
    message = encode(PING, {"n": 1})

    event = decode(message, routing_key=PING.event_type, subscribed=lambda t: True)

    assert event.payload == {"n": 1}
