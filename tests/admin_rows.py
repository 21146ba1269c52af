"""Dead letters for the admin tests: real encoded events, written by the dead-letter store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from events_celery import EventMetadata
from events_celery.bus.dead_letters.store import Failure, Reason, record
from events_celery.conf import bus_settings
from events_celery.models import DeadLetter
from events_celery.wire import encode_event
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, Mode, OrderData

TOPIC = "orders"
RECEIVER = "tests.admin.charge_order"
ERROR = "receiver failed after 3 attempt(s): RuntimeError: card declined <script>alert(1)</script>"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "billing/receivers.py", line 12, in charge_order\n'
    "    raise RuntimeError(...)\n"
    "RuntimeError: card declined <script>alert(1)</script>"
)


def order(note: str = "gift wrap") -> OrderData:
    """An order whose fields are easy to spot on a page."""
    return OrderData(
        id=uuid.UUID("9f1c1b0e-8a5d-4c38-9d4e-2f0b7d5c1a11"),
        customer=CustomerData(
            id=uuid.UUID("0b7e7d2a-3c1f-4d5e-8f9a-1b2c3d4e5f60"), email="ada@example.org"
        ),
        total=Decimal("12.50"),
        placed_at=datetime(2026, 11, 28, 12, 30, tzinfo=UTC),
        mode=Mode.VERIFIED,
        note=note,
    )


def _store(body: bytes, headers: dict[str, str], failure: Failure, **fields: Any) -> DeadLetter:
    """Write the row as a worker does, then give it the fields a test asks for."""
    settings = bus_settings()
    age = fields.pop("age", timedelta(0))
    at = timezone.now() - age
    row = record(
        settings,
        settings.require_service_name(),
        body,
        headers,
        failure,
        content_type="application/avro",
        at=at,
    )
    if fields:
        DeadLetter.objects.filter(pk=row.pk).update(**fields)
        row.refresh_from_db()
    return row


def order_dead_letter(*, note: str = "gift wrap", **fields: Any) -> DeadLetter:
    """A receiver of ORDER_PLACED that used up its attempts."""
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="orders")
    message = encode_event(
        ORDER_PLACED, metadata, ORDER_PLACED.serializer.encode({"order": order(note)})
    )
    failure = Failure(
        Reason.RECEIVER_FAILED,
        ERROR,
        receiver=RECEIVER,
        traceback=TRACEBACK,
        attempts=3,
        origin=f"{bus_settings().topic_prefix}{TOPIC}/{metadata.event_type}",
    )
    return _store(message.body, message.headers, failure, **fields)


def poison_dead_letter(**fields: Any) -> DeadLetter:
    """A message that never became an event: a PING whose body is not Avro."""
    metadata = EventMetadata.create(PING.event_type, source="pinger")
    message = encode_event(PING, metadata, b"\xff\xfe not avro")
    failure = Failure(
        Reason.POISON,
        "undecodable Avro body: the body ends before the payload does",
        origin=f"{bus_settings().topic_prefix}{TOPIC}/{metadata.event_type}",
    )
    return _store(message.body, message.headers, failure, **fields)
