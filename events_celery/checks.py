"""Django system checks: ``manage.py check`` reports every misconfiguration at once.

The checks read only the parsed settings, :func:`~events_celery.conf.bus_settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
import django
from django.core.checks import CheckMessage, Error, Warning, register
from kombu.utils.url import url_to_parts

from events_celery.bus.broker.topology import RESERVED_SEGMENT
from events_celery.bus.publish.routes import key_getter
from events_celery.conf import BusSettings, Route, Subscription, bus_settings
from events_celery.conf.declarations import tls_problems
from events_celery.event_registry import registry

#: Predicates telling whether another library defines an event type and publishes it itself.
_other_definitions: list[Callable[[str], bool]] = []


def define_events_elsewhere(defines: Callable[[str], bool]) -> Callable[[], None]:
    """Accept routes to event types that ``defines`` says another library defines.

    :mod:`events_celery.contrib.openedx` adds Open edX's signals this way when its app is
    ready, so ``EVENT_BUS_PRODUCER_CONFIG`` may route them (check E030 skips them).

    Returns:
        a function that removes ``defines`` again.
    """
    _other_definitions.append(defines)
    return lambda: _other_definitions.remove(defines)


@register("events_celery")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the ``EVENT_BUS_*`` settings against each other and the event definitions."""
    settings = bus_settings()
    configured = [route for routes in settings.producer_config.values() for route in routes]
    # A route or topic with a problem still says what the service means to do: the checks
    # that depend on it are not hidden by that problem.
    publishes = any(route.enabled for route in configured)
    consumes = bool(settings.consumer_config)
    return [
        *_reading(settings),
        *_routes(settings, configured),
        *_subscriptions(settings),
        *_outbox(settings, publishes=publishes),
        *_check_task_serialization(settings),
        *_broker(settings, publishes=publishes, consumes=consumes),
    ]


def _reading(settings: BusSettings) -> list[CheckMessage]:
    """What reading the settings found, and settings whose names are close to one of ours."""
    messages: list[CheckMessage] = [
        (Error if problem.is_error else Warning)(
            problem.message, hint=problem.hint, id=f"events_celery.{problem.id}"
        )
        for problem in settings.problems
    ]
    for name, declared in sorted(settings.misspelled_settings.items()):
        messages.append(
            Warning(
                f"{name} is not a setting of events_celery; did you mean {declared}?",
                hint=f"events_celery ignores {name}: rename it to {declared}, or remove it",
                id="events_celery.W004",
            )
        )
    return messages


def _routes(settings: BusSettings, configured: list[Route]) -> list[CheckMessage]:
    """Routes of EVENT_BUS_PRODUCER_CONFIG: defined events, partition key fields."""
    messages: list[CheckMessage] = []
    # Disabled routes, and routes with a problem, are checked too: one run reports every
    # problem of a route.
    for route in sorted(configured, key=attrs.astuple):
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
                    f"{sorted(signal.data)}, e.g. {_key_field_example(signal.data)!r}",
                    id="events_celery.E031",
                )
            )
    for event_type in settings.routes:
        signal = registry.find(event_type)
        if signal is None and not any(defines(event_type) for defines in _other_definitions):
            messages.append(
                Error(
                    f"EVENT_BUS_PRODUCER_CONFIG routes {event_type!r}, which no installed app "
                    "defines",
                    hint="fix the event type, or add the app defining it (in its events.py) to "
                    "INSTALLED_APPS",
                    id="events_celery.E030",
                )
            )
    return messages


def _subscriptions(settings: BusSettings) -> list[CheckMessage]:
    """Topics of EVENT_BUS_CONSUMER_CONFIG: their names and the event types they name."""
    messages: list[CheckMessage] = []
    for subscription in settings.consumer_config:
        if subscription.topic.startswith(f"{RESERVED_SEGMENT}."):
            messages.append(
                Error(
                    f"EVENT_BUS_CONSUMER_CONFIG topic {subscription.topic!r} starts with the "
                    f"reserved '{RESERVED_SEGMENT}.'",
                    hint="rename the topic",
                    id="events_celery.E033",
                )
            )
        if subscription.order_by_key:
            messages += _unordered_routes(settings, subscription)
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
    return messages


def _unordered_routes(settings: BusSettings, subscription: Subscription) -> list[CheckMessage]:
    """Routes of this service that publish to an ordered subscription's topic without a key."""
    return [
        Error(
            f"EVENT_BUS_CONSUMER_CONFIG[{subscription.topic!r}] orders events by key, but "
            f"EVENT_BUS_PRODUCER_CONFIG[{route.event_type!r}][{route.topic!r}] sets no "
            "event_key_field: its events carry no key and keep no order",
            hint="set 'event_key_field' on that route (e.g. 'order.id'), or drop 'order_by_key'",
            id="events_celery.E035",
        )
        for routes in settings.routes.values()
        for route in routes
        if route.topic == subscription.topic
        and route.event_key_field is None
        and (subscription.event_types is None or route.event_type in subscription.event_types)
    ]


def _outbox(settings: BusSettings, *, publishes: bool) -> list[CheckMessage]:
    """The outbox's database, when this service publishes through it."""
    messages: list[CheckMessage] = []
    if publishes and settings.publish_mode == "outbox" and settings.db_engine is None:
        messages.append(
            Error(
                f"EVENT_BUS_PUBLISH_MODE 'outbox' writes events to the database "
                f"EVENT_BUS_DB_ALIAS={settings.db_alias!r}, which is not in DATABASES",
                hint="set EVENT_BUS_DB_ALIAS to one of your databases (and run migrate), or use "
                "EVENT_BUS_PUBLISH_MODE = 'direct' in a service without a database",
                id="events_celery.E012",
            )
        )
    if (
        publishes
        and settings.publish_mode == "outbox"
        and django.VERSION >= (5, 1)  # where SQLite's transaction_mode can be set
        and "sqlite" in (settings.db_engine or "")
        and settings.db_transaction_mode.upper() != "IMMEDIATE"
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
    return messages


def _broker(settings: BusSettings, *, publishes: bool, consumes: bool) -> list[CheckMessage]:
    """The broker URLs and Celery's default queue."""
    messages: list[CheckMessage] = []
    # broker_url is EVENT_BUS_BROKER_URL when it is set, else Celery's URL.
    celery_url = settings.celery_broker_url
    if consumes and celery_url and settings.broker_url != celery_url:
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
    if consumes and settings.celery_task_default_queue == "celery":
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
    if consumes and settings.topic_prefix and "/" in _virtual_hosts(settings.broker_url):
        service = settings.service_name
        messages.append(
            Warning(
                f"EVENT_BUS_TOPIC_PREFIX {settings.topic_prefix!r} prefixes the topic exchanges "
                f"only: this service's queues ({service}.<topic>, {service}.events_celery.tasks, "
                f"{service}.events_celery.dead_letters) and Celery's own queues and exchanges "
                "are not prefixed, so another environment with the same service names on the "
                "broker's default virtual host '/' shares them and takes this one's events",
                hint="give each environment a virtual host of its own (e.g. CELERY_BROKER_URL = "
                "'amqp://user:password@host:5672/staging'); if no other environment uses this "
                "virtual host, add 'events_celery.W005' to SILENCED_SYSTEM_CHECKS",
                id="events_celery.W005",
            )
        )
    messages += _broker_security(settings)
    if publishes and not settings.broker_url:
        messages.append(
            Warning(
                "EVENT_BUS_BROKER_URL and CELERY_BROKER_URL are not set; events are published "
                "to the Celery app's broker_url (amqp://guest@localhost// by default)",
                hint="set CELERY_BROKER_URL (or EVENT_BUS_BROKER_URL) explicitly",
                id="events_celery.W001",
            )
        )
    return messages


#: Hosts a plain ``amqp://`` connection may go to without a warning: this machine.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "ip6-localhost")


def _broker_security(settings: BusSettings) -> list[CheckMessage]:
    """TLS options and login method; plain AMQP to another machine (W007)."""
    messages: list[CheckMessage] = []
    source = settings.broker_ssl_source()
    if source == "CELERY_BROKER_USE_SSL":  # EVENT_BUS_BROKER_USE_SSL is checked when read
        for message, hint in tls_problems(source, settings.celery_broker_use_ssl):
            messages.append(Error(message, hint=hint, id="events_celery.E049"))
    tls = settings.broker_ssl()
    if settings.broker_login() == "EXTERNAL" and not (
        isinstance(tls, dict) and tls.get("certfile")
    ):
        messages.append(
            Error(
                "the bus logs in to the broker with EXTERNAL (its client certificate), but "
                f"{source} names no client certificate",
                hint=f"set 'certfile' and 'keyfile' in {source}, and use an amqps:// URL",
                id="events_celery.E050",
            )
        )
    if tls is False:
        for url in (settings.broker_url or "").split(";"):
            parts = urlsplit(url.strip())
            if (
                parts.scheme in ("amqp", "pyamqp")
                and (parts.hostname or "localhost") not in (LOOPBACK_HOSTS)
                and not (parts.hostname or "").startswith("127.")
            ):
                messages.append(
                    Warning(
                        f"the bus talks to the broker {_without_password(url)} in plain AMQP: "
                        "credentials and events cross the network unencrypted",
                        hint="use amqps:// (port 5671) and set CELERY_BROKER_USE_SSL (or "
                        "EVENT_BUS_BROKER_USE_SSL) to {'ca_certs': ..., 'certfile': ..., "
                        "'keyfile': ...}; see the TLS how-to",
                        id="events_celery.W007",
                    )
                )
    return messages


def _without_password(url: str) -> str:
    """``url`` with its password masked."""
    parts = urlsplit(url.strip())
    if parts.password is None:
        return parts.geturl()
    user = f"{parts.username}:****@" if parts.username else ":****@"
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}{host}").geturl()


def _key_field_example(data: dict[str, Any]) -> str:
    """A valid ``event_key_field`` of a payload: the path to its first field that is no record."""
    for name, kind in data.items():
        path = _path_to_a_value(kind)
        if path is not None:
            return ".".join((name, *path))
    return next(iter(data), "")


def _path_to_a_value(kind: Any) -> list[str] | None:
    """Field names from the record ``kind`` down to its first value that is no record."""
    if not attrs.has(kind):
        return []
    for field in attrs.fields(kind):
        rest = _path_to_a_value(field.type)
        if rest is not None:
            return [field.name, *rest]
    return None  # a record with no fields


def _virtual_hosts(broker_url: str | None) -> set[str]:
    """The AMQP virtual hosts of ``broker_url`` (``;``-separated failover URLs)."""
    hosts = set()
    for url in (broker_url or "").split(";"):
        if url.strip().startswith(("amqp", "pyamqp")):
            hosts.add(url_to_parts(url.strip()).path or "/")  # kombu unquotes the path
    return hosts


def _check_task_serialization(settings: BusSettings) -> list[CheckMessage]:
    """Receiver tasks travel as JSON; a worker that also unpickles can be made to run code."""
    messages: list[CheckMessage] = []
    for name, values in settings.celery_serializers.items():
        unsafe = [v for v in values if "pickle" in v.lower()]
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
