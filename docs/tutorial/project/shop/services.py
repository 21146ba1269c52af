from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from django.db import transaction

from shop.events import ORDER_PLACED, CustomerData, LineData, OrderData


def place_order(email: str, lines: list[LineData]) -> OrderData:
    order = OrderData(
        id=uuid4(),
        customer=CustomerData(id=uuid4(), email=email),
        total=sum((line.quantity * line.unit_price for line in lines), Decimal("0.00")),
        placed_at=datetime.now(UTC),
        lines=lines,
    )
    with transaction.atomic():
        # Saving the order goes here. Once ORDER_PLACED is routed to the bus, send_event
        # writes it to the outbox in this transaction: it is published if the order commits.
        ORDER_PLACED.send_event(order=order)
    return order
