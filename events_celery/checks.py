"""Django system checks: ``manage.py check`` reports every misconfiguration at once."""

from __future__ import annotations

import os
from typing import Any

import attrs
import django
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.db import connections

from events_celery.bus.dispatch import key_getter
from events_celery.bus.topology import RESERVED_SEGMENT
from events_celery.conf import bus_settings
from events_celery.event_registry import registry


@register("events_celery")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the ``EVENT_BUS_*`` settings against each other and the event definitions."""
    settings = bus_settings()
    messages: list[CheckMessage] = [
        Error(problem.message, hint=problem.hint, id=f"events_celery.{problem.id}")
        for problem in settings.problems
    ]
    routed = [route for routes in settings.routes.values() for route in routes]
    # Disabled or invalid routes are checked too: one run reports every problem of a route.
    for route in sorted({*routed, *settings.unrouted_keys}, key=attrs.astuple):
        event_type = route.event_type
        signal = registry.find(event_type)
        if signal is None or route.event_key_field is None:
            continue
        try:
            key_getter(signal, route.event_key_field)
        except AttributeError as exc:
            messages.append(
                Error(
                    f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}][{route.topic!r}]: "
                    f"event_key_field {route.event_key_field!r} is not a payload field ({exc})",
                    hint="use a dotted path to a field of the payload, starting with one of "
                    f"{sorted(signal.data)}, e.g. 'order.id'",
                    id="events_celery.E031",
                )
            )
    for event_type in settings.routes:
        signal = registry.find(event_type)
        if signal is None:
            messages.append(
                Error(
                    f"EVENT_BUS_PRODUCER_CONFIG routes {event_type!r}, which no installed app "
                    "defines",
                    hint="fix the event type, or add the app defining it (in its events.py) to "
                    "INSTALLED_APPS",
                    id="events_celery.E030",
                )
            )
    for subscription in settings.subscriptions:
        if subscription.topic.startswith(f"{RESERVED_SEGMENT}."):
            messages.append(
                Error(
                    f"EVENT_BUS_CONSUMER_CONFIG topic {subscription.topic!r} starts with the "
                    f"reserved '{RESERVED_SEGMENT}.'",
                    hint="rename the topic",
                    id="events_celery.E033",
                )
            )
        for event_type in subscription.event_types or ():
            if event_type not in registry:
                messages.append(
                    Error(
                        f"EVENT_BUS_CONSUMER_CONFIG[{subscription.topic!r}] subscribes to "
                        f"{event_type!r}, which no installed app defines",
                        hint="a consumer decodes events with their definition: install the app "
                        "that defines it, or fix the event type",
                        id="events_celery.E032",
                    )
                )
    publishes = any(settings.routes.values())
    if (
        publishes
        and settings.publish_mode == "outbox"
        and settings.db_alias not in connections.settings
    ):
        messages.append(
            Error(
                f"EVENT_BUS_PUBLISH_MODE 'outbox' writes events to the database "
                f"EVENT_BUS_DB_ALIAS={settings.db_alias!r}, which is not in DATABASES",
                hint="set EVENT_BUS_DB_ALIAS to one of your databases (and run migrate), or use "
                "EVENT_BUS_PUBLISH_MODE = 'direct' in a service without a database",
                id="events_celery.E012",
            )
        )
    database = connections.settings.get(settings.db_alias, {})
    if (
        publishes
        and settings.publish_mode == "outbox"
        and django.VERSION >= (5, 1)  # where SQLite's transaction_mode can be set
        and "sqlite" in str(database.get("ENGINE", ""))
        and str(database.get("OPTIONS", {}).get("transaction_mode", "")).upper() != "IMMEDIATE"
    ):
        messages.append(
            Warning(
                "the outbox is on SQLite in deferred transaction mode: SQLite allows one writer, "
                "and a request whose transaction read first then writes an event fails at once "
                "with 'database is locked' when the outbox publisher is deleting rows",
                hint="set DATABASES[...]['OPTIONS'] = {'transaction_mode': 'IMMEDIATE'} "
                "(Django 5.1+), or keep the outbox on PostgreSQL",
                id="events_celery.W003",
            )
        )
    messages.extend(_check_task_serialization())
    event_bus_url = getattr(django_settings, "EVENT_BUS_BROKER_URL", None)
    celery_url = os.environ.get("CELERY_BROKER_URL") or getattr(
        django_settings, "CELERY_BROKER_URL", None
    )
    if settings.subscriptions and event_bus_url and celery_url and event_bus_url != celery_url:
        messages.append(
            Error(
                "EVENT_BUS_BROKER_URL differs from Celery's broker URL in a service that consumes "
                "events: workers consume events over Celery's connection, but hand them to "
                "receiver tasks on EVENT_BUS_BROKER_URL, where no worker reads them",
                hint="leave EVENT_BUS_BROKER_URL unset in consuming services (Celery's broker is "
                "used), or set it to the same URL",
                id="events_celery.E041",
            )
        )
    if settings.subscriptions and _task_default_queue() == "celery":
        messages.append(
            Warning(
                "Celery's default task queue is 'celery': the workers of every service on "
                "this broker that keeps it consume it, and take each other's tasks",
                hint=f"give this service its own, e.g. CELERY_TASK_DEFAULT_QUEUE = "
                f"'{settings.service_name}.celery' (events_celery's receiver tasks already "
                "use a queue of the service's own)",
                id="events_celery.W002",
            )
        )
    published = {route.topic for routes in settings.routes.values() for route in routes}
    if published and not settings.broker_url:
        messages.append(
            Warning(
                "EVENT_BUS_BROKER_URL and CELERY_BROKER_URL are not set; events are published "
                "to the Celery app's broker_url (amqp://guest@localhost// by default)",
                hint="set CELERY_BROKER_URL (or EVENT_BUS_BROKER_URL) explicitly",
                id="events_celery.W001",
            )
        )
    return messages


#: Celery settings whose values name serializers a worker accepts or uses.
_SERIALIZER_SETTINGS = (
    "CELERY_ACCEPT_CONTENT",
    "CELERY_TASK_SERIALIZER",
    "CELERY_RESULT_SERIALIZER",
    "CELERY_RESULT_ACCEPT_CONTENT",
)


def _check_task_serialization() -> list[CheckMessage]:
    """Receiver tasks travel as JSON; a worker that also unpickles can be made to run code."""
    messages: list[CheckMessage] = []
    for name in _SERIALIZER_SETTINGS:
        value = getattr(django_settings, name, None)
        values = [value] if isinstance(value, str) else list(value or ())
        unsafe = [v for v in values if isinstance(v, str) and "pickle" in v.lower()]
        if unsafe:
            messages.append(
                Error(
                    f"{name} allows {unsafe}: a worker that unpickles messages runs whatever code "
                    "a message carries",
                    hint="use JSON only (Celery's default): remove pickle from this setting",
                    id="events_celery.E040",
                )
            )
    return messages


def _task_default_queue() -> str:
    # The Django setting, where the Celery app reads its configuration (namespace CELERY), else
    # what the current app says.
    from celery import current_app

    configured = getattr(django_settings, "CELERY_TASK_DEFAULT_QUEUE", None)
    return str(configured or current_app.conf.task_default_queue)
