"""Messages the wire format tests build and read."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from events_celery import (
    EventMetadata,
)
from events_celery.wire import (
    PoisonMessageError,
    decode_event,
    encode_event,
)
from tests.testapp.events import CustomerData, Mode, OrderData

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


def poison_reason(headers, body, **kwargs):
    options = {"content_type": AVRO, "max_size": MAX_SIZE, "writer_schemas": no_stored_schemas}
    options.update(kwargs)
    with pytest.raises(PoisonMessageError) as excinfo:
        decode_event(headers, body, **options)
    return excinfo.value.reason
