"""Notifications reacts to placed orders: it emails the customer a confirmation.

Like billing, it reacts to events that come over the bus (``from_event_bus``); see
:mod:`config.billing.receivers`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from config.shop.events import ORDER_PLACED, OrderData
from events_celery import EventMetadata

logger = logging.getLogger(__name__)


@receiver(ORDER_PLACED)
def send_confirmation(
    metadata: EventMetadata, order: OrderData, from_event_bus: bool, **kwargs: Any
) -> None:
    if not from_event_bus:
        return
    # A real service would send_mail(...) here. The log names the customer by id: the email
    # address and the total are personal data.
    logger.info(
        "notifications: received %s id=%s: email customer %s that order %s is confirmed",
        metadata.event_type,
        metadata.id,
        order.customer.id,
        order.id,
    )
