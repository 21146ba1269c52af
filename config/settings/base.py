"""Settings shared by the example's services: orders, billing and notifications.

Each service is the same Django project started with its own settings module
(``DJANGO_SETTINGS_MODULE=config.settings.<service>``), as separate deployments would be.
"""

import os
import tempfile
from pathlib import Path

import django

SECRET_KEY = "events-celery-example-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
TIME_ZONE = "UTC"
USE_TZ = True
ROOT_URLCONF = "config.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    # The admin shows each service's dead letters at /admin/ (run `manage.py createsuperuser`).
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "events_celery",
    "config.shop",  # the event definitions every service shares
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"


def service_database(service: str) -> dict[str, dict[str, object]]:
    """One SQLite database per service, in the temp directory (each service owns its data).

    Transactions take SQLite's write lock when they begin (``IMMEDIATE``): the outbox's
    publisher thread writes too, and SQLite allows one writer at a time.
    """
    path = Path(tempfile.gettempdir()) / f"events_celery_demo_{service}.sqlite3"
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {"transaction_mode": "IMMEDIATE"} if django.VERSION >= (5, 1) else {},
        }
    }


def service_cache(service: str) -> dict[str, dict[str, object]]:
    """The service's default cache: files in a directory of its own, in the temp directory.

    ``once_per_event`` (``config/billing/receivers.py``) remembers handled events there, so the
    cache must be one that every process of the service's worker shares: a redelivered event
    can run in another prefork child than the first copy (its child was killed mid-event), or
    after a restart. Django's local-memory cache is per process; this file-based one is seen
    by every process on the host (each entry is written to a temporary file and renamed into
    place, so a reader never sees half an entry) and needs no table or server. Services that
    run workers on several hosts use a cache all hosts reach (Redis, Memcached, the database
    cache) instead.
    """
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(Path(tempfile.gettempdir()) / f"events_celery_demo_{service}_cache"),
            # Past MAX_ENTRIES Django culls a third of the entries: events remembered for
            # less than once_per_event's timeout (a week) could then run again.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }


# Celery, and the broker the event bus publishes to (EVENT_BUS_BROKER_URL defaults to it).
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
CELERY_ACCEPT_CONTENT = ["json"]
# Each service module sets CELERY_TASK_DEFAULT_QUEUE = "<service>.celery": services that share
# one broker and Celery's default queue "celery" would run each other's tasks.

# The event bus: one topic exchange per topic ("orders"). The services share the broker's
# default virtual host; another environment (staging, production) would use a virtual host of
# its own, e.g. CELERY_BROKER_URL = "amqp://user:password@host:5672/staging".
# EVENT_BUS_PUBLISH_MODE is left at its default, "outbox": send_event writes the event to the
# outbox table (run `manage.py migrate`) in the caller's transaction, and a background thread
# publishes it after the commit; nothing is published when the transaction rolls back.

# Event types, as the services' routing settings name them.
ORDER_PLACED = "org.example.shop.order.placed.v1"
ORDER_CANCELLED = "org.example.shop.order.cancelled.v1"
