"""The wire format's headers: the module, time as text, metadata ⇄ headers."""

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events_celery import (
    __version__,
    wire,
)
from events_celery.exceptions import MetadataError
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    DEAD_LETTER_PREFIX,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_ID,
    HEADER_MINOR_VERSION,
    HEADER_SIGNATURE,
    HEADER_SOURCE,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TYPE,
    REQUIRED_HEADERS,
    WIRE_HEADERS,
    format_time,
    metadata_from_headers,
    metadata_headers,
    parse_time,
)
from tests.strategies import metadata_strategy
from tests.testapp.events import ORDER_PLACED, PING
from tests.wire.messages import (
    encode,
    make_metadata,
    make_order,
)

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
        "events_celery.authenticity",  # for a type only: the checks a consumer passes in
        "events_celery.event_registry",
        "events_celery.exceptions",
        "events_celery.metadata",
        "events_celery.signals",  # for type hints only
    }


def test_every_header_name_of_an_event_is_a_wire_header():
    message = encode(ORDER_PLACED, {"order": make_order()}, partition_key="k")

    # The signature is added by a producer that signs (events_celery.authenticity).
    assert set(message.headers) == WIRE_HEADERS - {HEADER_SIGNATURE}
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
