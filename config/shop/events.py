"""Events of the shop, shared by every service of the example.

The orders service sends them; billing and notifications receive them. In a real deployment
this module ships as a small package that every service installs.
"""

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
class LineData:
    sku: str
    quantity: int
    unit_price: Decimal = attrs.field(metadata={"precision": 10, "scale": 2})


@attrs.frozen
class OrderData:
    id: UUID
    customer: CustomerData
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    placed_at: datetime
    lines: list[LineData]


@attrs.frozen
class CancelledOrderData:
    id: UUID
    reason: str
    cancelled_at: datetime


ORDER_PLACED = EventSignal("org.example.shop.order.placed.v1", data={"order": OrderData})
ORDER_CANCELLED = EventSignal(
    "org.example.shop.order.cancelled.v1", data={"order": CancelledOrderData}
)
