"""The billing service: a Celery worker that charges placed orders and refunds cancelled ones."""

from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, service_cache, service_database

INSTALLED_APPS = [*INSTALLED_APPS, "config.billing"]
DATABASES = service_database("billing")
CACHES = service_cache("billing")

EVENT_BUS_SERVICE_NAME = "billing"
CELERY_TASK_DEFAULT_QUEUE = "billing.celery"  # not "celery", which every service reads
# Every event type of the "orders" topic: its worker consumes the queue "billing.orders".
EVENT_BUS_CONSUMER_CONFIG = {"orders": {}}
