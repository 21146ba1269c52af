"""The event the throughput benchmark sends: an order, about 100 bytes of Avro."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

import attrs

from events_celery import EventSignal


@attrs.frozen
class CustomerData:
    id: UUID
    email: str


@attrs.frozen
class OrderData:
    order_id: UUID
    customer: CustomerData
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    placed_at: datetime
    note: str | None = None


ORDER_PLACED = EventSignal("org.example.bench.order.placed.v1", data={"order": OrderData})
