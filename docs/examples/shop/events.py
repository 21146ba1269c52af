"""Events of the shop app: the worked example of the documentation."""

import enum
from decimal import Decimal
from uuid import UUID

import attrs

from events_celery import EventSignal


class OrderStatus(enum.Enum):
    PLACED = "placed"
    PAID = "paid"
    SHIPPED = "shipped"


@attrs.frozen
class CustomerData:
    customer_id: UUID
    email: str


@attrs.frozen
class OrderData:
    order_id: UUID
    customer: CustomerData
    total: Decimal = attrs.field(metadata={"precision": 12, "scale": 2})
    status: OrderStatus = OrderStatus.PLACED
    note: str | None = None


ORDER_PLACED = EventSignal("org.example.shop.order.placed.v1", data={"order": OrderData})
