"""Django settings of the services the throughput benchmark runs (configured by env vars).

``bench/throughput.py`` sets the variables for itself and for the workers it starts:

``BENCH_RUN_ID``
    Unique per run; every queue and exchange name of the run contains it.
``BENCH_RESULTS_DIR``
    Directory where receivers and no-op tasks record when they ran (see
    :mod:`bench.receivers.timings`).
``BENCH_BROKER_URL``
    AMQP URL of the broker; default the local RabbitMQ.
``BENCH_SERVICE``
    A suffix of the service name: the ordered figures (``bench/ordered.py``) run services of
    their own, side by side on one topic.
``BENCH_PARTITIONS``
    When set, the service's subscription is ordered by key, with this many partitions.
``BENCH_DATABASE``
    ``sqlite`` (default: in memory) or ``postgresql``: the local server, database
    ``events_celery_bench`` (``bench/outbox.py`` creates it).
"""

from __future__ import annotations

import os

RUN_ID = os.environ.get("BENCH_RUN_ID", "local")
#: The topic the benchmark publishes to and consumes, and its one event type.
BENCH_TOPIC = "orders"
BENCH_EVENT_TYPE = "org.example.bench.order.placed.v1"

SECRET_KEY = "events-celery-bench"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "events_celery",
    "bench.receivers",
]
if os.environ.get("BENCH_DATABASE") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "events_celery_bench",
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "/var/run/postgresql"),
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None

EVENT_BUS_SERVICE_NAME = f"bench-{RUN_ID}" + (
    f"-{os.environ['BENCH_SERVICE']}" if os.environ.get("BENCH_SERVICE") else ""
)
EVENT_BUS_TOPIC_PREFIX = f"bench-{RUN_ID}."
EVENT_BUS_PRODUCER_CONFIG = {
    BENCH_EVENT_TYPE: {BENCH_TOPIC: {"event_key_field": "order.order_id", "enabled": True}},
}
EVENT_BUS_CONSUMER_CONFIG: dict[str, dict[str, object]] = {
    BENCH_TOPIC: {"event_types": [BENCH_EVENT_TYPE]}
}
if os.environ.get("BENCH_PARTITIONS"):
    EVENT_BUS_CONSUMER_CONFIG[BENCH_TOPIC] |= {
        "order_by_key": True,
        "partitions": int(os.environ["BENCH_PARTITIONS"]),
    }
# throughput.py measures direct publishing; outbox.py switches the publishing process to the
# outbox. The workers only consume either way.
EVENT_BUS_PUBLISH_MODE = "direct"

CELERY_BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Plain Celery tasks of this run get a queue (and exchange) of their own, never "celery".
CELERY_TASK_DEFAULT_QUEUE = f"bench-{RUN_ID}.celery"
CELERY_ACCEPT_CONTENT = ["json"]
# No pidbox queue left behind, and nothing but the measured work in the worker.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
