"""The notifications service: a Celery worker that emails customers about placed orders."""

from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, ORDER_PLACED, service_cache, service_database

INSTALLED_APPS = [*INSTALLED_APPS, "config.notifications"]
DATABASES = service_database("notifications")
CACHES = service_cache("notifications")

EVENT_BUS_SERVICE_NAME = "notifications"
CELERY_TASK_DEFAULT_QUEUE = "notifications.celery"  # not "celery", which every service reads
# Only ORDER_PLACED: the queue "notifications.orders" is bound with that routing key alone.
EVENT_BUS_CONSUMER_CONFIG = {"orders": {"event_types": [ORDER_PLACED]}}
