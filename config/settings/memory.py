"""All three roles in one process, on kombu's in-memory broker (``python -m config.demo``).

Django settings are global to a process, so one process is one service: this one publishes
like orders and receives like billing and notifications. Used when RabbitMQ is not reachable.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, service_cache, service_database
from config.settings.orders import EVENT_BUS_PRODUCER_CONFIG  # noqa: F401

INSTALLED_APPS = [*INSTALLED_APPS, "config.orders", "config.billing", "config.notifications"]
DATABASES = service_database("memory")
CACHES = service_cache("memory")

CELERY_BROKER_URL = "memory://localhost/"
CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.1}  # memory:// polls, 1 s by default
EVENT_BUS_SERVICE_NAME = "demo"
CELERY_TASK_DEFAULT_QUEUE = "demo.celery"
EVENT_BUS_CONSUMER_CONFIG = {"orders": {}}
