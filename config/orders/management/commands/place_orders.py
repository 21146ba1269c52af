"""``manage.py place_orders --count N``: place N orders, then cancel the first one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from config.orders.services import cancel_order, place_order


class Command(BaseCommand):
    help = "Place N orders (sending ORDER_PLACED for each), then cancel the first one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=5, help="how many orders (default 5)")

    def handle(self, *args: Any, count: int, **options: Any) -> None:
        placed = []
        for _ in range(count):
            order = place_order()
            placed.append(order)
            # Ids only: the customer's email and the amounts are personal data.
            self.stdout.write(
                f"orders: placed {order.id} (customer {order.customer.id}, "
                f"{len(order.lines)} lines)"
            )
        if placed:
            cancelled = cancel_order(placed[0].id, reason="customer changed their mind")
            self.stdout.write(f"orders: cancelled {cancelled.id}")
