"""EventMetadata: creation, validation and the round trip through message headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events_celery import EventMetadata, __version__
from events_celery.exceptions import MetadataError
from events_celery.metadata import (
    AVRO_CONTENT_TYPE,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_ID,
    HEADER_MINOR_VERSION,
    HEADER_SOURCE,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TYPE,
)
from events_celery.signals import EVENT_TYPE_PATTERN

EVENT_TYPE = "org.example.shop.order.placed.v1"

#: Every header from_headers needs to rebuild the metadata.
REQUIRED_HEADERS = [
    HEADER_SPEC_VERSION,
    HEADER_ID,
    HEADER_TYPE,
    HEADER_SOURCE,
    HEADER_TIME,
    HEADER_MINOR_VERSION,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
]


def make_metadata(**overrides):
    values = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "event_type": EVENT_TYPE,
        "minor_version": 2,
        "source": "orders",
        "source_host": "web-1",
        "time": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    }
    values.update(overrides)
    return EventMetadata(**values)


texts = st.text(min_size=1, max_size=40)
metadata_strategy = st.builds(
    EventMetadata,
    id=st.uuids(),
    event_type=st.from_regex(EVENT_TYPE_PATTERN, fullmatch=True),
    minor_version=st.integers(min_value=0, max_value=2**63),
    source=texts,
    source_host=texts,
    time=st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.just(UTC),
    ),
    spec_version=st.just("1.0"),
    source_lib=texts,
)


# --- create ---------------------------------------------------------------------------------


def test_create_fills_a_fresh_id_utc_time_and_this_host():
    before = datetime.now(UTC)
    metadata = EventMetadata.create(EVENT_TYPE, minor_version=3, source="orders")
    after = datetime.now(UTC)

    assert isinstance(metadata.id, uuid.UUID)
    assert metadata.id.version == 4
    assert metadata.event_type == EVENT_TYPE
    assert metadata.minor_version == 3
    assert metadata.source == "orders"
    assert metadata.source_host
    assert before <= metadata.time <= after
    assert metadata.time.utcoffset() == timedelta(0)
    assert metadata.spec_version == "1.0"
    assert metadata.source_lib == __version__


def test_create_gives_every_event_its_own_id():
    ids = {EventMetadata.create(EVENT_TYPE, source="orders").id for _ in range(50)}

    assert len(ids) == 50


def test_metadata_is_immutable():
    metadata = make_metadata()

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        metadata.source = "billing"


def test_id_given_as_text_becomes_a_uuid():
    metadata = make_metadata(id="12345678-1234-5678-1234-567812345678")

    assert metadata.id == uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_id_that_is_not_a_uuid_is_rejected():
    with pytest.raises(MetadataError, match=r"EventMetadata\.id must be a UUID"):
        make_metadata(id="not-a-uuid")


# --- time -----------------------------------------------------------------------------------


def test_naive_time_is_rejected():
    with pytest.raises(MetadataError, match="timezone-aware UTC"):
        make_metadata(time=datetime(2024, 5, 1, 12, 30))


def test_non_utc_time_is_rejected_with_the_fix():
    paris = timezone(timedelta(hours=2))

    with pytest.raises(MetadataError) as excinfo:
        make_metadata(time=datetime(2024, 5, 1, 14, 30, tzinfo=paris))

    assert "+02:00" in str(excinfo.value)
    assert "datetime.now(UTC)" in str(excinfo.value)


def test_time_that_is_not_a_datetime_is_rejected():
    with pytest.raises(MetadataError, match="must be a datetime"):
        make_metadata(time="2024-05-01T12:30:00Z")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_type", ""),
        ("minor_version", -1),
        ("minor_version", True),
        ("source", ""),
        ("source_host", ""),
    ],
)
def test_invalid_field_is_rejected_naming_it(field, value):
    with pytest.raises(MetadataError, match=field):
        make_metadata(**{field: value})


# --- headers --------------------------------------------------------------------------------


def test_headers_carry_every_field_as_text():
    headers = make_metadata().to_headers()

    assert headers == {
        HEADER_SPEC_VERSION: "1.0",
        HEADER_ID: "12345678-1234-5678-1234-567812345678",
        HEADER_TYPE: EVENT_TYPE,
        HEADER_SOURCE: "orders",
        HEADER_TIME: "2024-05-01T12:30:15.123456Z",
        HEADER_MINOR_VERSION: "2",
        HEADER_DATA_CONTENT_TYPE: AVRO_CONTENT_TYPE,
        HEADER_SOURCE_HOST: "web-1",
        HEADER_SOURCE_LIB: __version__,
    }


def test_header_names_are_cloudevents_attributes():
    headers = make_metadata().to_headers()

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
    headers = metadata.to_headers()

    assert all(isinstance(value, str) for value in headers.values())
    assert EventMetadata.from_headers(headers) == metadata


@given(metadata_strategy)
def test_headers_received_as_bytes_are_accepted(metadata):
    headers = {name: value.encode() for name, value in metadata.to_headers().items()}

    assert EventMetadata.from_headers(headers) == metadata


def test_minor_version_round_trips():
    metadata = make_metadata(minor_version=17)

    assert EventMetadata.from_headers(metadata.to_headers()).minor_version == 17


def test_time_round_trips_to_the_microsecond():
    time = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)

    assert EventMetadata.from_headers(make_metadata(time=time).to_headers()).time == time


def test_time_with_another_offset_in_headers_is_read_as_utc():
    headers = make_metadata().to_headers()
    headers[HEADER_TIME] = "2024-05-01T14:30:15.123456+02:00"

    time = EventMetadata.from_headers(headers).time

    assert time == datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert time.utcoffset() == timedelta(0)


def test_times_before_year_1000_round_trip():
    time = datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)

    assert EventMetadata.from_headers(make_metadata(time=time).to_headers()).time == time


@pytest.mark.parametrize("name", REQUIRED_HEADERS)
def test_missing_header_is_named(name):
    headers = make_metadata().to_headers()
    del headers[name]

    with pytest.raises(MetadataError, match=f"'{name}'"):
        EventMetadata.from_headers(headers)


@pytest.mark.parametrize("name", REQUIRED_HEADERS)
def test_empty_header_counts_as_missing(name):
    headers = make_metadata().to_headers()
    headers[name] = ""

    with pytest.raises(MetadataError, match=f"'{name}'"):
        EventMetadata.from_headers(headers)


@pytest.mark.parametrize("value", ["one", "-1", "1.5", " 1"])
def test_non_numeric_minor_version_is_named(value):
    headers = make_metadata().to_headers()
    headers[HEADER_MINOR_VERSION] = value

    with pytest.raises(MetadataError) as excinfo:
        EventMetadata.from_headers(headers)

    assert HEADER_MINOR_VERSION in str(excinfo.value)
    assert repr(value) in str(excinfo.value)


def test_unicode_digit_minor_version_is_a_metadata_error():
    headers = make_metadata().to_headers()
    headers[HEADER_MINOR_VERSION] = "²"

    with pytest.raises(MetadataError, match=HEADER_MINOR_VERSION):
        EventMetadata.from_headers(headers)


@pytest.mark.parametrize("value", ["yesterday", "2024-05-01T12:30:15"])
def test_malformed_time_header_is_named(value):
    headers = make_metadata().to_headers()
    headers[HEADER_TIME] = value

    with pytest.raises(MetadataError) as excinfo:
        EventMetadata.from_headers(headers)

    assert HEADER_TIME in str(excinfo.value)
    assert value in str(excinfo.value)


def test_malformed_id_header_is_rejected():
    headers = make_metadata().to_headers()
    headers[HEADER_ID] = "42"

    with pytest.raises(MetadataError, match="UUID"):
        EventMetadata.from_headers(headers)


def test_unrelated_headers_are_ignored():
    metadata = make_metadata()
    headers = {**metadata.to_headers(), "x-death": "whatever", "schemafingerprint": "00"}

    assert EventMetadata.from_headers(headers) == metadata


def test_every_missing_and_malformed_header_is_named_at_once():
    headers = make_metadata().to_headers()
    del headers[HEADER_ID]
    del headers[HEADER_TIME]
    headers[HEADER_MINOR_VERSION] = "two"
    headers["sourcehost"] = 42

    with pytest.raises(MetadataError) as excinfo:
        EventMetadata.from_headers(headers)

    message = str(excinfo.value)
    assert f"'{HEADER_ID}' is missing" in message
    assert f"'{HEADER_TIME}' is missing" in message
    assert f"'{HEADER_MINOR_VERSION}' is 'two', not a number" in message
    assert "'sourcehost' is of type int, not text" in message


def test_a_header_that_is_not_utf8_is_malformed_not_missing():
    headers = {**make_metadata().to_headers(), "sourcehost": b"\xff\xfe"}

    with pytest.raises(MetadataError, match="'sourcehost' is not UTF-8 text"):
        EventMetadata.from_headers(headers)
