"""Billing reacts to orders: it charges placed orders and refunds cancelled ones.

It reacts to events that come over the bus (``from_event_bus``). In the one-process demo
(``config.settings.memory``) the orders code runs in this process too, and ``send_event`` also
calls the receivers connected in the sending process, with ``from_event_bus=False``.

Delivery is at least once: the same event (same ``metadata.id``) can arrive twice, for example
when a worker process dies before it acknowledges it. ``once_per_event`` remembers each event
that ``charge`` or ``refund`` handled in the service's default cache, which all its worker
processes share (``service_cache`` in ``config/settings/base.py``), and skips a later copy. It
wraps the functions that do the work, not the receivers: it remembers an event once the wrapped
function returns, so a receiver call with ``from_event_bus=False`` would mark the event handled
before it came over the bus. Real code also records the id in its database under a unique
constraint, in the same transaction as the charge.

Its log lines name ids only: a customer's email and the amounts are personal data, which
stay out of INFO logs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from config.shop.events import ORDER_CANCELLED, ORDER_PLACED, CancelledOrderData, OrderData
from events_celery import EventMetadata, once_per_event

logger = logging.getLogger(__name__)


@receiver(ORDER_PLACED)
def charge_order(
    metadata: EventMetadata, order: OrderData, from_event_bus: bool, **kwargs: Any
) -> None:
    if from_event_bus:
        charge(metadata=metadata, order=order)


@once_per_event  # skips a redelivered copy of an event it already handled (by metadata.id)
def charge(metadata: EventMetadata, order: OrderData) -> None:
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
    if from_event_bus:
        refund(metadata=metadata, order=order)


@once_per_event
def refund(metadata: EventMetadata, order: CancelledOrderData) -> None:
    # The reason is free text a customer may have written: it is not logged.
    logger.info(
        "billing: received %s id=%s: refund order %s",
        metadata.event_type,
        metadata.id,
        order.id,
    )
