"""Dead-letter rows for the admin tests, holding real encoded events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from events_celery import EventMetadata
from events_celery.bus.dead_letters import HEADER_ERROR, HEADER_REASON, HEADER_RECEIVER
from events_celery.bus.dispatch import encode_event
from events_celery.models import DeadLetter
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, Mode, OrderData

RECEIVER = "tests.testapp.receivers.charge_order"
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


def order_dead_letter(
    *, age: timedelta = timedelta(0), note: str = "gift wrap", **fields: Any
) -> DeadLetter:
    """A receiver of ORDER_PLACED that used up its attempts, as a worker records it."""
    now = timezone.now()
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="orders")
    message = encode_event(
        ORDER_PLACED, metadata, ORDER_PLACED.serializer.encode({"order": order(note)})
    )
    error = "RuntimeError: card declined <script>alert(1)</script>"
    values: dict[str, Any] = {
        "service": "tests",
        "event_id": metadata.id,
        "event_type": metadata.event_type,
        "receiver": RECEIVER,
        "reason": DeadLetter.Reason.RECEIVER_FAILED,
        "error": error,
        "traceback": TRACEBACK,
        "attempts": 3,
        "headers": {
            **message.headers,
            HEADER_REASON: DeadLetter.Reason.RECEIVER_FAILED.value,
            HEADER_RECEIVER: RECEIVER,
            HEADER_ERROR: error,
        },
        "body": message.body,
        "content_type": message.properties["content_type"],
        "origin": "tests.orders/" + metadata.event_type,
        "first_failed_at": now - age - timedelta(minutes=5),
        "last_failed_at": now - age,
    }
    values.update(fields)
    return DeadLetter.objects.create(**values)


def poison_dead_letter(*, age: timedelta = timedelta(0), **fields: Any) -> DeadLetter:
    """A message that never became an event: a PING whose body is not Avro."""
    now = timezone.now()
    metadata = EventMetadata.create(PING.event_type, source="pinger")
    message = encode_event(PING, metadata, b"\xff\xfe not avro")
    values: dict[str, Any] = {
        "service": "tests",
        "event_id": metadata.id,
        "event_type": metadata.event_type,
        "reason": DeadLetter.Reason.POISON,
        "error": "undecodable Avro body: the body ends before the payload does",
        "headers": message.headers,
        "body": message.body,
        "content_type": message.properties["content_type"],
        "first_failed_at": now - age,
        "last_failed_at": now - age,
    }
    values.update(fields)
    return DeadLetter.objects.create(**values)
