"""Settings of an Open edX service process in the adapter's tests (configured by env vars).

It switches openedx-events to RabbitMQ with settings alone, as the how-to says.
"""

import json
import os

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405 - events_celery is among them
    "openedx_events",
    "events_celery.contrib.openedx",
]
if os.environ.get("TEST_RECEIVERS") == "1":  # the consuming service
    INSTALLED_APPS.append("tests.contrib.openedx.receivers")

EVENT_BUS_PRODUCER = "events_celery.contrib.openedx.create_producer"
EVENT_BUS_CONSUMER = "events_celery.contrib.openedx.EventsCeleryConsumer"
EVENT_BUS_PRODUCER_CONFIG = {
    "org.openedx.learning.course.enrollment.created.v1": {
        "enrollments": {"event_key_field": "enrollment.course.course_key", "enabled": True},
    },
}
# consume_events orders a group's topic by key when this asks for it.
EVENT_BUS_CONSUMER_CONFIG = json.loads(os.environ.get("TEST_CONSUMER_CONFIG", "{}"))
EVENTS_SERVICE_NAME = os.environ["TEST_SERVICE"]  # openedx-events' source: openedx/<it>/web
EVENT_BUS_SERVICE_NAME = os.environ["TEST_SERVICE"]
EVENT_BUS_TOPIC_PREFIX = os.environ["TEST_PREFIX"]
EVENT_BUS_PUBLISH_MODE = "outbox"
EVENT_BUS_RETRY_POLICY = {"max_attempts": 3, "backoff": 0.2, "backoff_max": 0.4, "jitter": False}
EVENT_BUS_QUEUE_TYPE = os.environ.get("TEST_QUEUE_TYPE", "classic")
EVENT_BUS_MAX_REDELIVERIES = int(os.environ.get("TEST_MAX_REDELIVERIES", "3"))
CELERY_BROKER_URL = os.environ["TEST_BROKER_URL"]
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
