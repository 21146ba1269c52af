"""EventMetadata: creation, validation, and its methods for the message headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given

from events_celery import EventMetadata, __version__
from events_celery.exceptions import MetadataError
from events_celery.wire import metadata_from_headers, metadata_headers
from tests.strategies import metadata_strategy

EVENT_TYPE = "org.example.shop.order.placed.v1"


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


# --- headers (the wire format's; tests/test_wire.py tests them in full) ----------------------


@given(metadata_strategy)
def test_to_headers_and_from_headers_are_the_wire_formats_round_trip(metadata):
    headers = metadata.to_headers()

    assert headers == metadata_headers(metadata)
    assert EventMetadata.from_headers(headers) == metadata_from_headers(headers) == metadata


def test_from_headers_names_every_problem_as_the_wire_format_does():
    headers = {**make_metadata().to_headers(), "ce_id": "42", "sourcehost": ""}

    with pytest.raises(MetadataError) as excinfo:
        EventMetadata.from_headers(headers)

    assert str(excinfo.value) == (
        "message headers: 'sourcehost' is empty; 'ce_id' is '42', not a UUID"
    )
