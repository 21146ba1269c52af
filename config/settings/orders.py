"""The orders service: takes orders (web, ``place_orders``) and publishes their events."""

from config.settings.base import *  # noqa: F403
from config.settings.base import (
    INSTALLED_APPS,
    ORDER_CANCELLED,
    ORDER_PLACED,
    service_cache,
    service_database,
)

INSTALLED_APPS = [*INSTALLED_APPS, "config.orders"]
DATABASES = service_database("orders")
CACHES = service_cache("orders")

EVENT_BUS_SERVICE_NAME = "orders"
CELERY_TASK_DEFAULT_QUEUE = "orders.celery"  # not "celery", which every service reads
# Open edX shape: event type -> topic -> options. The key (the order id) travels in the
# ce_partitionkey header.
EVENT_BUS_PRODUCER_CONFIG = {
    ORDER_PLACED: {"orders": {"event_key_field": "order.id", "enabled": True}},
    ORDER_CANCELLED: {"orders": {"event_key_field": "order.id", "enabled": True}},
}
