"""The catalog's data: which events exist, what they carry, who sends them and who receives them.

Built from the routing settings of one or more services (their ``EVENT_BUS_*`` values) and
the event definitions; the AsyncAPI document and the human-readable table are both rendered
from it, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import attrs

from events_celery.bus.broker import topology
from events_celery.conf import BusSettings, Problems, Route, Subscription
from events_celery.conf.routing import parse_routes, parse_subscriptions
from events_celery.exceptions import ConfigurationError
from events_celery.signals import EventSignal


@attrs.frozen
class ServiceRouting:
    """What one service publishes and consumes.

    Attributes:
        name: the service name (``EVENT_BUS_SERVICE_NAME``).
        topic_prefix: prefix of its exchange names (``EVENT_BUS_TOPIC_PREFIX``).
        routes: its enabled producer routes (``EVENT_BUS_PRODUCER_CONFIG``).
        subscriptions: the topics it consumes (``EVENT_BUS_CONSUMER_CONFIG``).
    """

    name: str
    topic_prefix: str
    routes: tuple[Route, ...]
    subscriptions: tuple[Subscription, ...]

    @classmethod
    def from_bus_settings(cls, settings: BusSettings) -> ServiceRouting:
        """The routing of the running service.

        Raises:
            ConfigurationError: the settings have problems (``manage.py check`` lists them).
        """
        settings.raise_for_problems()
        return cls(
            name=settings.require_service_name(),
            topic_prefix=settings.topic_prefix,
            routes=tuple(r for routes in settings.routes.values() for r in routes),
            subscriptions=settings.subscriptions,
        )

    @classmethod
    def from_settings_module(cls, module: ModuleType | Mapping[str, Any]) -> ServiceRouting:
        """The routing declared by a settings module, without making it Django's settings.

        This is how one process describes several services (e.g. a documentation build that
        catalogs every service of a project).

        Raises:
            ConfigurationError: a routing setting is missing or invalid; names each problem.
        """
        values = module if isinstance(module, Mapping) else vars(module)
        where = values.get("__name__", "the settings")
        problems = Problems()
        name = values.get("EVENT_BUS_SERVICE_NAME")
        if not isinstance(name, str) or not name:
            problems.add("E001", "EVENT_BUS_SERVICE_NAME is not set", "name the service")
        prefix = values.get("EVENT_BUS_TOPIC_PREFIX", "")
        if not isinstance(prefix, str):
            problems.add("E003", f"EVENT_BUS_TOPIC_PREFIX is {prefix!r}", "use a string")
        routes = parse_routes(problems, values.get("EVENT_BUS_PRODUCER_CONFIG", {}))
        subscriptions = parse_subscriptions(problems, values.get("EVENT_BUS_CONSUMER_CONFIG", {}))
        if problems:
            found = "; ".join(f"{p.message} ({p.hint})" for p in problems.found)
            raise ConfigurationError(f"{where}: {found}")
        return cls(
            name=str(name),
            topic_prefix=str(prefix),
            routes=tuple(r for rs in routes.values() for r in rs if r.enabled and r.valid),
            subscriptions=tuple(s for s in subscriptions if s.valid),
        )

    def exchange(self, topic: str) -> str:
        """The exchange name of ``topic`` in this service's namespace."""
        return topology.exchange_name(self.topic_prefix, topic)

    def queue(self, subscription: Subscription) -> str:
        """The name of this service's queue for ``subscription``."""
        return f"{self.name}.{subscription.topic}"


@attrs.frozen
class Field:
    """One leaf of a payload: its dotted path (``order.lines[].sku``) and its Avro type."""

    path: str
    type: str


@attrs.frozen
class Producer:
    """A service that publishes an event to a topic (``key``: its ``event_key_field``)."""

    service: str
    topic: str
    exchange: str
    key: str | None


@attrs.frozen
class Consumer:
    """A service whose queue on a topic receives an event."""

    service: str
    topic: str
    queue: str


@attrs.frozen
class CatalogEntry:
    """One event type, with everything the catalog says about it."""

    signal: EventSignal
    fields: tuple[Field, ...]
    producers: tuple[Producer, ...]
    consumers: tuple[Consumer, ...]

    @property
    def event_type(self) -> str:
        """The event type (the AMQP routing key)."""
        return self.signal.event_type


def build_catalog(
    services: Iterable[ServiceRouting], signals: Iterable[EventSignal]
) -> list[CatalogEntry]:
    """One entry per event type, sorted by event type.

    A service consumes an event it names in a subscription. A subscription to a whole topic
    takes the events the described services publish to that topic; when none of them
    publishes to it (a catalog of one consuming service), it takes every defined event, as
    the service's worker would.

    Args:
        services: the services to describe.
        signals: the event definitions; an event type routed or subscribed by a service but
            not defined here is an error, since its payload could not be described.

    Raises:
        ConfigurationError: a service routes or subscribes to an event type not in ``signals``.
    """
    services = list(services)
    by_type = {signal.event_type: signal for signal in signals}
    named = {r.event_type for s in services for r in s.routes} | {
        t for s in services for sub in s.subscriptions for t in sub.event_types or ()
    }
    missing = sorted(named - set(by_type))
    if missing:
        raise ConfigurationError(
            f"no definition of event type(s) {', '.join(missing)}, which the routing settings "
            "name; import the module that defines them (an app's events.py)"
        )
    published = {(r.event_type, r.topic) for s in services for r in s.routes}
    published_topics = {topic for _, topic in published}
    entries = []
    for event_type, signal in sorted(by_type.items()):
        producers = tuple(
            Producer(s.name, r.topic, s.exchange(r.topic), r.event_key_field)
            for s in services
            for r in s.routes
            if r.event_type == event_type
        )
        consumers = tuple(
            Consumer(s.name, sub.topic, s.queue(sub))
            for s in services
            for sub in s.subscriptions
            if (
                event_type in sub.event_types
                if sub.event_types is not None
                else (event_type, sub.topic) in published or sub.topic not in published_topics
            )
        )
        fields = payload_fields(signal.serializer.schema)
        entries.append(CatalogEntry(signal, fields, producers, consumers))
    return entries


def payload_fields(schema: Mapping[str, Any]) -> tuple[Field, ...]:
    """The leaves of an Avro record schema, each with a readable type.

    Nested records are flattened into dotted paths; array items get ``[]`` and map values
    ``{}``: ``order.lines[].sku``.
    """
    fields: list[Field] = []
    named: dict[str, Any] = {}
    for field in schema["fields"]:
        _collect(field["name"], field["type"], fields, named)
    return tuple(fields)


def _collect(path: str, avro: Any, out: list[Field], named: dict[str, Any]) -> None:
    optional = isinstance(avro, list) and "null" in avro
    if isinstance(avro, list):
        rest = [branch for branch in avro if branch != "null"]
        if len(rest) == 1:
            before = len(out)
            _collect(path, rest[0], out, named)
            if optional:
                out[before:] = [Field(f.path, f"{f.type} | null") for f in out[before:]]
            return
        out.append(Field(path, " | ".join(type_name(b, named) for b in avro)))
        return
    if isinstance(avro, str) and avro in named:
        avro = named[avro]
    if isinstance(avro, Mapping):
        kind = avro.get("type")
        if kind in ("record", "enum", "fixed"):
            named[str(avro["name"])] = avro
            if "namespace" in avro:
                named[f"{avro['namespace']}.{avro['name']}"] = avro
        if kind == "record":
            for field in avro["fields"]:
                _collect(f"{path}.{field['name']}", field["type"], out, named)
            return
        if kind == "array":
            _collect(f"{path}[]", avro["items"], out, named)
            return
        if kind == "map":
            _collect(f"{path}{{}}", avro["values"], out, named)
            return
    out.append(Field(path, type_name(avro, named)))


def type_name(avro: Any, named: Mapping[str, Any] | None = None) -> str:
    """A one-line name of an Avro type: ``string (uuid)``, ``bytes (decimal 12,2)``, ..."""
    if isinstance(avro, str):
        target = (named or {}).get(avro)
        return type_name(target) if target is not None else avro
    if isinstance(avro, list):
        return " | ".join(type_name(branch, named) for branch in avro)
    kind = avro.get("type")
    logical = avro.get("logicalType")
    if logical == "decimal":
        return f"{kind} (decimal {avro.get('precision')},{avro.get('scale', 0)})"
    if logical:
        return f"{kind} ({logical})"
    if kind == "enum":
        return f"enum {avro['name']} ({', '.join(avro['symbols'])})"
    if kind == "fixed":
        return f"fixed {avro['name']} ({avro['size']} bytes)"
    if kind == "array":
        return f"array of {type_name(avro['items'], named)}"
    if kind == "map":
        return f"map of {type_name(avro['values'], named)}"
    if kind == "record":
        return f"record {avro['name']}"
    return str(kind)
