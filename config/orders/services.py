"""What the orders service does: place and cancel orders, sending their events."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction

from config.shop.events import (
    ORDER_CANCELLED,
    ORDER_PLACED,
    CancelledOrderData,
    CustomerData,
    LineData,
    OrderData,
)

CATALOGUE = {"TEA-1": Decimal("4.50"), "MUG-2": Decimal("12.00"), "POT-3": Decimal("29.90")}
CUSTOMERS = ["ada@example.org", "grace@example.org", "linus@example.org"]


def place_order(email: str | None = None) -> OrderData:
    """Place an order of a few random catalogue items and send ORDER_PLACED."""
    lines = [
        LineData(sku=sku, quantity=random.randint(1, 3), unit_price=price)
        for sku, price in random.sample(sorted(CATALOGUE.items()), k=2)
    ]
    order = OrderData(
        id=uuid.uuid4(),
        customer=CustomerData(id=uuid.uuid4(), email=email or random.choice(CUSTOMERS)),
        total=sum((line.unit_price * line.quantity for line in lines), Decimal("0.00")),
        placed_at=datetime.now(UTC),
        lines=lines,
    )
    with transaction.atomic():
        # A real service saves the order here. send_event writes the event to the outbox
        # table in this transaction (EVENT_BUS_PUBLISH_MODE "outbox", the default), and it is
        # published once the transaction commits: nobody hears of an order that was rolled
        # back, and an order that committed is announced even if the broker is down then.
        ORDER_PLACED.send_event(order=order)
    return order


def cancel_order(order_id: uuid.UUID, reason: str) -> CancelledOrderData:
    """Cancel an order and send ORDER_CANCELLED."""
    cancelled = CancelledOrderData(id=order_id, reason=reason, cancelled_at=datetime.now(UTC))
    with transaction.atomic():
        ORDER_CANCELLED.send_event(order=cancelled)
    return cancelled
