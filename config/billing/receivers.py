"""Billing reacts to orders: it charges placed orders and refunds cancelled ones.

It reacts to events that come over the bus (``from_event_bus``). In the one-process demo
(``config.settings.memory``) the orders code runs in this process too, and ``send_event`` also
calls the receivers connected in the sending process, with ``from_event_bus=False``.

Its log lines name ids only: a customer's email and the amounts are personal data, which
stay out of INFO logs.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.dispatch import receiver

from config.shop.events import ORDER_CANCELLED, ORDER_PLACED, CancelledOrderData, OrderData
from events_celery import EventMetadata

logger = logging.getLogger(__name__)

# Delivery is at-least-once: the same event can arrive twice (a worker dies before it acks).
# metadata.id is the same on every delivery, so it is what makes a receiver idempotent. This
# set is per process, for the example; real code records the id in its database under a unique
# constraint, in the same transaction as the charge.
_seen: set[UUID] = set()


def first_delivery(metadata: EventMetadata) -> bool:
    """Record this event as handled; False when it was already handled."""
    if metadata.id in _seen:
        logger.info("billing: %s %s already handled, skipped", metadata.event_type, metadata.id)
        return False
    _seen.add(metadata.id)
    return True


@receiver(ORDER_PLACED)
def charge_order(
    metadata: EventMetadata, order: OrderData, from_event_bus: bool, **kwargs: Any
) -> None:
    if from_event_bus and first_delivery(metadata):
        logger.info(
            "billing: received %s id=%s: charge order %s (%d lines)",
            metadata.event_type,
            metadata.id,
            order.id,
            len(order.lines),
        )


@receiver(ORDER_CANCELLED)
def refund_order(
    metadata: EventMetadata, order: CancelledOrderData, from_event_bus: bool, **kwargs: Any
) -> None:
    if from_event_bus and first_delivery(metadata):
        # The reason is free text a customer may have written: it is not logged.
        logger.info(
            "billing: received %s id=%s: refund order %s",
            metadata.event_type,
            metadata.id,
            order.id,
        )
