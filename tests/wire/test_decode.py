"""Decoding: messages into events, poison messages, schema evolution, the routing binding."""

# No `from __future__ import annotations`: two versions of one payload class are defined
# inside a test, so their annotations must be real types.

import io
from datetime import UTC, datetime
from decimal import Decimal

import attrs
import pytest
from django.core.management import call_command
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from events_celery import (
    DecodeError,
    EventRegistry,
    EventSignal,
    schema_store,
)
from events_celery.avro import fingerprint
from events_celery.testing import isolated_registry
from events_celery.wire import (
    HEADER_DATA_CONTENT_TYPE,
    HEADER_FINGERPRINT,
    HEADER_MINOR_VERSION,
    HEADER_PARTITION_KEY,
    HEADER_TYPE,
    PoisonMessageError,
    decode_event,
    metadata_headers,
    read_fingerprint,
    read_metadata,
    wire_message,
)
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, Mode, OrderData
from tests.wire.messages import (
    AVRO,
    MAX_SIZE,
    PARCEL,
    decode,
    encode,
    make_metadata,
    make_order,
    no_stored_schemas,
    poison_reason,
)

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

    event = decode_event(
        headers,
        message.body,
        content_type=AVRO,
        max_size=MAX_SIZE,
        writer_schemas=no_stored_schemas,
    )

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


def test_a_message_of_a_schema_defined_elsewhere_carries_its_fingerprint():
    metadata = make_metadata("org.example.elsewhere.thing.done.v1")

    message = wire_message(metadata, b"\x02", fingerprint="0123456789abcdef", partition_key="k")

    assert message.headers == {
        **metadata_headers(metadata),
        HEADER_FINGERPRINT: "0123456789abcdef",
        HEADER_PARTITION_KEY: "k",
    }
    assert message.properties["message_id"] == str(metadata.id)


def test_the_envelope_of_an_event_no_registry_knows_is_read_with_its_metadata():
    metadata = make_metadata("org.example.elsewhere.thing.done.v1")
    message = wire_message(metadata, b"\x02", fingerprint="0123456789abcdef")

    read = read_metadata(
        message.headers, message.body, content_type=AVRO, max_size=MAX_SIZE, routing_key=None
    )

    assert read == metadata
    assert read_fingerprint(message.headers) == "0123456789abcdef"
    assert read_fingerprint({HEADER_FINGERPRINT: b"0123456789abcdef"}) == "0123456789abcdef"


# --- poison messages ------------------------------------------------------------------------


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


def test_unknown_fingerprint_is_poison_to_replay_after_upgrade():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_FINGERPRINT: "0123456789abcdef"}
    asked = []

    reason = poison_reason(
        headers,
        message.body,
        writer_schemas=lambda signal, print_: asked.append((signal, print_)),
    )

    assert asked == [(PING, "0123456789abcdef")]

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
        decode(message, content_type="text/plain")


def test_unicode_digit_minor_version_is_poison():
    message = encode(PING, {"n": 1})
    headers = {**message.headers, HEADER_MINOR_VERSION: "²"}

    assert HEADER_MINOR_VERSION in poison_reason(headers, message.body)


# --- schema evolution -----------------------------------------------------------------------


def test_a_known_fingerprint_is_decoded_with_the_schema_it_names():
    message = encode(PING, {"n": 5})
    writer = {
        "type": "record",
        "name": "Payload",
        "namespace": PING.event_type,
        "fields": [{"name": "n", "type": "int"}],
    }
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(writer), {"n": 5})
    headers = {**message.headers, HEADER_FINGERPRINT: fingerprint(writer)}
    lookups = {(PING, fingerprint(writer)): writer}

    event = decode_event(
        headers,
        body.getvalue(),
        content_type=AVRO,
        max_size=MAX_SIZE,
        writer_schemas=lambda signal, print_: lookups.get((signal, print_)),
    )

    assert event.payload == {"n": 5}  # an int written, read as the long PING declares


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

        event = decode_event(
            headers,
            body.getvalue(),
            content_type=AVRO,
            max_size=MAX_SIZE,
            writer_schemas=schema_store.find_schema,
        )

    assert event.signal is current
    assert event.metadata == metadata
    assert event.payload == {"parcel": ParcelData(id=7, weight=0)}


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
