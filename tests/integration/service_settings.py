"""Settings of a service process started by the integration tests (configured by env vars)."""

import json
import os

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.integration.receivers"]  # noqa: F405

EVENT_BUS_SERVICE_NAME = os.environ["TEST_SERVICE"]
EVENT_BUS_TOPIC_PREFIX = os.environ["TEST_PREFIX"]
EVENT_BUS_CONSUMER_CONFIG = json.loads(os.environ.get("TEST_CONSUMER_CONFIG", "{}"))
EVENT_BUS_PRODUCER_CONFIG = json.loads(os.environ.get("TEST_PRODUCER_CONFIG", "{}"))
_BACKOFF = float(os.environ.get("TEST_BACKOFF", "0.05"))
EVENT_BUS_RETRY_POLICY = {
    "max_attempts": 3,
    "backoff": _BACKOFF,
    "backoff_max": max(_BACKOFF, 0.2),
    "jitter": True,
}
EVENT_BUS_QUEUE_TYPE = os.environ.get("TEST_QUEUE_TYPE", "classic")
EVENT_BUS_MAX_REDELIVERIES = int(os.environ.get("TEST_MAX_REDELIVERIES", "3"))
EVENT_BUS_PUBLISH_MODE = os.environ.get("TEST_PUBLISH_MODE", "direct")
EVENT_BUS_OUTBOX_LEASE = float(os.environ.get("TEST_OUTBOX_LEASE", "30"))
EVENT_BUS_PUBLISH_TIMEOUT = float(os.environ.get("TEST_PUBLISH_TIMEOUT", "5"))
EVENT_BUS_OUTBOX_SWEEP_INTERVAL = float(os.environ.get("TEST_SWEEP_INTERVAL", "0.5"))
EVENT_BUS_CONSUMER_BATCH_SIZE = int(os.environ.get("TEST_BATCH_SIZE", "32"))
CELERY_BROKER_URL = os.environ.get("TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
EVENT_BUS_SCHEMA_DIR = os.environ.get("TEST_SCHEMA_DIR") or None
# Celery's own default queue, the service's (deleted after the test with the others);
# "quorum" on a cluster, where a classic queue lives on one node.
CELERY_TASK_DEFAULT_QUEUE = f"{EVENT_BUS_SERVICE_NAME}.celery"
CELERY_TASK_DEFAULT_QUEUE_TYPE = os.environ.get("TEST_CELERY_QUEUE_TYPE", "classic")
# Authenticity: what the service requires of an event's publisher (JSON, as the settings).
EVENT_BUS_TRUSTED_PUBLISHERS = json.loads(os.environ.get("TEST_TRUSTED_PUBLISHERS", "{}"))
EVENT_BUS_TRUSTED_KEYS = json.loads(os.environ.get("TEST_TRUSTED_KEYS", "{}"))
EVENT_BUS_REQUIRE_SIGNATURES = os.environ.get("TEST_REQUIRE_SIGNATURES") == "1"
# TLS (tests/faults/test_tls.py): Celery's options, which the bus uses too.
if os.environ.get("TEST_BROKER_USE_SSL"):
    CELERY_BROKER_USE_SSL = json.loads(os.environ["TEST_BROKER_USE_SSL"])
if os.environ.get("TEST_BROKER_LOGIN_METHOD"):
    CELERY_BROKER_LOGIN_METHOD = os.environ["TEST_BROKER_LOGIN_METHOD"]
if os.environ.get("TEST_OWN_CELERY_NAMES"):
    # Celery's remote-control and event names of the service's own (least privilege).
    CELERY_CONTROL_EXCHANGE = EVENT_BUS_SERVICE_NAME
    CELERY_EVENT_EXCHANGE = f"{EVENT_BUS_SERVICE_NAME}.celeryev"
    CELERY_EVENT_QUEUE_PREFIX = f"{EVENT_BUS_SERVICE_NAME}.celeryev"
