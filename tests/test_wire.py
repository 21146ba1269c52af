"""The wire format: header names, metadata ⇄ headers, events ⇄ messages, poison, dead letters."""

# No `from __future__ import annotations`: two versions of one payload class are defined
# inside a test, so their annotations must be real types.

import ast
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from django.core.management import call_command
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from events_celery import (
    DecodeError,
    EventMetadata,
    EventRegistry,
    EventSignal,
    __version__,
    schema_store,
    wire,
)
from events_celery.avro import fingerprint
from events_celery.bus.publish.routes import key_getter
from events_celery.exceptions import MetadataError
from events_celery.testing import isolated_registry
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    DEAD_LETTER_PREFIX,
    HEADER_ATTEMPTS,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_DEAD_LETTERED_AT,
    HEADER_ERROR,
    HEADER_FINGERPRINT,
    HEADER_ID,
    HEADER_MINOR_VERSION,
    HEADER_ORIGIN,
    HEADER_PARTITION_KEY,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_SOURCE,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TRACEBACK,
    HEADER_TYPE,
    KEPT_PROPERTIES,
    MAX_ERROR,
    MAX_TRACEBACK,
    REQUIRED_HEADERS,
    WIRE_HEADERS,
    PoisonMessageError,
    dead_letter_message,
    decode_event,
    encode_event,
    format_time,
    metadata_from_headers,
    metadata_headers,
    parse_time,
    plain_headers,
    read_fingerprint,
    read_metadata,
    wire_message,
)
from tests.strategies import metadata_strategy
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, Mode, OrderData

AVRO = "application/avro"
MAX_SIZE = 1 << 20
PARCEL = "org.example.test.wire.parcel.shipped.v1"


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


def no_stored_schemas(signal, fingerprint):
    return None


def decode(message, **kwargs):
    options = {
        "content_type": message.properties["content_type"],
        "max_size": MAX_SIZE,
        "writer_schemas": no_stored_schemas,
    }
    options.update(kwargs)
    return decode_event(message.headers, message.body, **options)


# --- the module -----------------------------------------------------------------------------


def test_the_wire_module_imports_nothing_of_django_the_settings_or_the_bus():
    tree = ast.parse(Path(wire.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }

    assert {name.split(".")[0] for name in imported} <= {
        "__future__",
        "attrs",
        "collections",
        "datetime",
        "enum",
        "events_celery",
        "operator",
        "re",
        "typing",
        "uuid",
    }
    assert {name for name in imported if name.startswith("events_celery")} == {
        "events_celery.event_registry",
        "events_celery.exceptions",
        "events_celery.metadata",
        "events_celery.signals",  # for type hints only
    }


def test_every_header_name_of_an_event_is_a_wire_header():
    message = encode(ORDER_PLACED, {"order": make_order()}, partition_key="k")

    assert set(message.headers) == WIRE_HEADERS
    assert not any(name.startswith(DEAD_LETTER_PREFIX) for name in WIRE_HEADERS)


# --- time -----------------------------------------------------------------------------------


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_any_utc_time_round_trips_through_rfc3339_text(time):
    text = format_time(time)

    assert text.endswith("Z")
    assert parse_time(text) == time


@pytest.mark.parametrize("text", ["yesterday", "2024-05-01T12:30:15", "9999-12-31T23:59:59-01:00"])
def test_text_that_is_no_utc_time_is_a_value_error_quoting_it(text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_time(text)


# --- headers ⇄ metadata ---------------------------------------------------------------------


def test_headers_carry_every_field_as_text():
    headers = metadata_headers(make_metadata(PING.event_type))

    assert headers == {
        HEADER_SPEC_VERSION: "1.0",
        HEADER_ID: "12345678-1234-5678-1234-567812345678",
        HEADER_TYPE: PING.event_type,
        HEADER_SOURCE: "shop",
        HEADER_TIME: "2024-05-01T12:30:15.654321Z",
        HEADER_MINOR_VERSION: "1",
        HEADER_DATA_CONTENT_TYPE: AVRO_CONTENT_TYPE,
        HEADER_SOURCE_HOST: "web-1",
        HEADER_SOURCE_LIB: __version__,
    }


def test_header_names_are_cloudevents_attributes():
    headers = metadata_headers(make_metadata(PING.event_type))

    assert {name for name in headers if name.startswith("ce_")} == {
        "ce_specversion",
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_time",
        "ce_minorversion",
        "ce_datacontenttype",
    }


@given(metadata_strategy)
def test_every_field_round_trips_through_headers(metadata):
    headers = metadata_headers(metadata)

    assert all(isinstance(value, str) for value in headers.values())
    assert metadata_from_headers(headers) == metadata


@given(metadata_strategy)
def test_headers_received_as_bytes_are_accepted(metadata):
    headers = {name: value.encode() for name, value in metadata_headers(metadata).items()}

    assert metadata_from_headers(headers) == metadata


def test_minor_version_round_trips():
    metadata = make_metadata(PING.event_type, minor_version=17)

    assert metadata_from_headers(metadata_headers(metadata)).minor_version == 17


def test_time_round_trips_to_the_microsecond():
    time = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)

    assert (
        metadata_from_headers(metadata_headers(make_metadata(PING.event_type, time=time))).time
        == time
    )


def test_time_with_another_offset_in_headers_is_read_as_utc():
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[HEADER_TIME] = "2024-05-01T14:30:15.123456+02:00"

    time = metadata_from_headers(headers).time

    assert time == datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert time.utcoffset() == timedelta(0)


def test_times_before_year_1000_round_trip():
    time = datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)

    assert (
        metadata_from_headers(metadata_headers(make_metadata(PING.event_type, time=time))).time
        == time
    )


@pytest.mark.parametrize("name", REQUIRED_HEADERS)
def test_missing_header_is_named(name):
    headers = metadata_headers(make_metadata(PING.event_type))
    del headers[name]

    with pytest.raises(MetadataError, match=f"'{name}'"):
        metadata_from_headers(headers)


@pytest.mark.parametrize("name", REQUIRED_HEADERS)
def test_empty_header_counts_as_missing(name):
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[name] = ""

    with pytest.raises(MetadataError, match=f"'{name}'"):
        metadata_from_headers(headers)


@pytest.mark.parametrize("value", ["one", "-1", "1.5", " 1"])
def test_non_numeric_minor_version_is_named(value):
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[HEADER_MINOR_VERSION] = value

    with pytest.raises(MetadataError) as excinfo:
        metadata_from_headers(headers)

    assert HEADER_MINOR_VERSION in str(excinfo.value)
    assert repr(value) in str(excinfo.value)


def test_unicode_digit_minor_version_is_a_metadata_error():
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[HEADER_MINOR_VERSION] = "²"

    with pytest.raises(MetadataError, match=HEADER_MINOR_VERSION):
        metadata_from_headers(headers)


@pytest.mark.parametrize("value", ["yesterday", "2024-05-01T12:30:15"])
def test_malformed_time_header_is_named(value):
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[HEADER_TIME] = value

    with pytest.raises(MetadataError) as excinfo:
        metadata_from_headers(headers)

    assert HEADER_TIME in str(excinfo.value)
    assert value in str(excinfo.value)


def test_malformed_id_header_is_rejected():
    headers = metadata_headers(make_metadata(PING.event_type))
    headers[HEADER_ID] = "42"

    with pytest.raises(MetadataError, match="UUID"):
        metadata_from_headers(headers)


def test_unrelated_headers_are_ignored():
    metadata = make_metadata(PING.event_type)
    headers = {**metadata_headers(metadata), "x-death": "whatever", "schemafingerprint": "00"}

    assert metadata_from_headers(headers) == metadata


def test_every_missing_and_malformed_header_is_named_at_once():
    headers = metadata_headers(make_metadata(PING.event_type))
    del headers[HEADER_ID]
    del headers[HEADER_TIME]
    headers[HEADER_MINOR_VERSION] = "two"
    headers["sourcehost"] = 42

    with pytest.raises(MetadataError) as excinfo:
        metadata_from_headers(headers)

    message = str(excinfo.value)
    assert f"'{HEADER_ID}' is missing" in message
    assert f"'{HEADER_TIME}' is missing" in message
    assert f"'{HEADER_MINOR_VERSION}' is 'two', not a number" in message
    assert "'sourcehost' is of type int, not text" in message


def test_a_header_that_is_not_utf8_is_malformed_not_missing():
    headers = {**metadata_headers(make_metadata(PING.event_type)), "sourcehost": b"\xff\xfe"}

    with pytest.raises(MetadataError, match="'sourcehost' is not UTF-8 text"):
        metadata_from_headers(headers)


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


def poison_reason(headers, body, **kwargs):
    options = {"content_type": AVRO, "max_size": MAX_SIZE, "writer_schemas": no_stored_schemas}
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


# --- dead letters ---------------------------------------------------------------------------

DEAD_AT = datetime(2024, 5, 1, 12, 30, 15, 654321, tzinfo=UTC)


def test_plain_headers_keep_text_and_numbers_and_decode_bytes():
    headers = {"text": "a", "count": 3, "ratio": 0.5, "flag": True, "raw": b"caf\xc3\xa9"}
    assert plain_headers(headers) == {
        "text": "a",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "raw": "café",
    }


def test_plain_headers_replace_bytes_that_are_not_utf8():
    assert plain_headers({"raw": b"\xff ok"}) == {"raw": "\ufffd ok"}


def test_plain_headers_drop_what_is_not_text_or_a_number():
    headers = {
        "x-death": [{"queue": "shop.orders", "count": 1}],
        "table": {"a": 1},
        "none": None,
        "at": datetime(2024, 5, 1, tzinfo=UTC),
        "amount": Decimal("1.50"),
        "kept": "yes",
    }
    assert plain_headers(headers) == {"kept": "yes"}


def test_no_headers_are_no_plain_headers():
    assert plain_headers(None) == {}
    assert plain_headers({}) == {}


HEADER_VALUES = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.datetimes(timezones=st.just(UTC)),
)


@given(headers=st.dictionaries(st.text(max_size=10), HEADER_VALUES, max_size=8))
def test_plain_headers_are_the_text_and_numbers_and_survive_json(headers):
    plain = plain_headers(headers)
    assert set(plain) == {k for k, v in headers.items() if isinstance(v, str | bytes | int | float)}
    assert json.loads(json.dumps(plain)) == plain


def test_a_dead_letter_keeps_body_and_plain_headers_and_says_why_and_when():
    headers = {"ce_id": "e-1", "ce_type": b"org.example.test.ping.v1", "x-death": [{"count": 1}]}

    message = dead_letter_message(
        b"\x00\xff not Avro", headers, reason="undecodable", content_type=AVRO, time=DEAD_AT
    )

    assert message.body == b"\x00\xff not Avro"
    assert message.headers == {
        "ce_id": "e-1",
        "ce_type": "org.example.test.ping.v1",
        HEADER_REASON: "undecodable",
        HEADER_DEAD_LETTERED_AT: "2024-05-01T12:30:15.654321Z",
    }
    assert parse_time(message.headers[HEADER_DEAD_LETTERED_AT]) == DEAD_AT


def test_a_failed_receiver_is_named_with_its_error_traceback_attempts_and_origin():
    message = dead_letter_message(
        b"body",
        {"ce_id": "e-2"},
        reason="receiver failed after 3 attempt(s)",
        content_type=AVRO,
        time=DEAD_AT,
        origin="shop/org.example.test.ping.v1",
        receiver="billing.receivers.on_ping",
        error="ValueError: no such customer",
        traceback="Traceback (most recent call last):\nValueError: no such customer\n",
        attempts=3,
    )

    assert {k: v for k, v in message.headers.items() if k != HEADER_DEAD_LETTERED_AT} == {
        "ce_id": "e-2",
        HEADER_REASON: "receiver failed after 3 attempt(s)",
        HEADER_ORIGIN: "shop/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_ERROR: "ValueError: no such customer",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: no such customer\n",
        HEADER_ATTEMPTS: "3",  # every header events_celery adds is text
    }


def test_a_long_error_keeps_its_start_and_a_long_traceback_its_end():
    error = "ValueError: " + "x" * 5000
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: end\n"

    message = dead_letter_message(
        b"body",
        {},
        reason="receiver failed after 1 attempt(s)",
        content_type=AVRO,
        time=DEAD_AT,
        error=error,
        traceback=traceback,
    )

    assert message.headers[HEADER_ERROR] == error[:MAX_ERROR]
    assert len(message.headers[HEADER_TRACEBACK]) == MAX_TRACEBACK
    assert message.headers[HEADER_TRACEBACK].endswith("  frame\nValueError: end\n")


def test_dead_lettering_again_replaces_the_reasons_of_the_first_time():
    earlier = {
        "ce_id": "e-3",
        HEADER_REASON: "the first reason",
        HEADER_ATTEMPTS: "5",
        HEADER_RECEIVER: "an.earlier.receiver",
        HEADER_TRACEBACK: "the first traceback",
    }

    message = dead_letter_message(
        b"body", earlier, reason="the second reason", content_type=AVRO, time=DEAD_AT, attempts=1
    )

    assert message.headers[HEADER_REASON] == "the second reason"
    assert message.headers[HEADER_ATTEMPTS] == "1"
    assert HEADER_RECEIVER not in message.headers  # nothing of the first time is left over
    assert HEADER_TRACEBACK not in message.headers
    assert message.headers["ce_id"] == "e-3"


def test_only_the_properties_that_identify_the_event_are_kept():
    identifying = {
        "message_id": "e-4",
        "type": "org.example.test.ping.v1",
        "timestamp": 1_714_566_615,
        "app_id": "shop",
        "correlation_id": "c-1",
    }
    assert set(identifying) == KEPT_PROPERTIES
    others = {"reply_to": "somewhere", "expiration": "1000", "priority": 9, "content_type": "x/y"}

    message = dead_letter_message(
        b"body",
        {},
        reason="r",
        content_type=AVRO,
        time=DEAD_AT,
        properties={**identifying, **others},
    )

    assert message.properties == {
        **identifying,
        "content_type": AVRO,  # the argument, not the original's property
        "content_encoding": "binary",
        "delivery_mode": 2,
    }


def test_a_body_of_unknown_content_type_is_parked_as_persistent_binary():
    message = dead_letter_message(b"\x01", None, reason="r", content_type=None, time=DEAD_AT)

    assert message.properties == {
        "content_type": "application/octet-stream",
        "content_encoding": "binary",
        "delivery_mode": 2,
    }


@given(event_id=st.uuids(), n=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_a_dead_lettered_event_still_decodes_as_the_event(event_id, n):
    sent = encode(PING, {"n": n}, metadata=make_metadata(PING.event_type, id=event_id))

    parked = dead_letter_message(
        sent.body,
        sent.headers,
        reason="receiver failed after 1 attempt(s)",
        content_type=sent.properties["content_type"],
        time=DEAD_AT,
        receiver="billing.receivers.on_ping",
        properties=sent.properties,
    )

    assert {k: v for k, v in parked.properties.items() if k in KEPT_PROPERTIES} == {
        k: v for k, v in sent.properties.items() if k in KEPT_PROPERTIES
    }
    event = decode(parked)
    assert (event.metadata.id, event.payload) == (event_id, {"n": n})
