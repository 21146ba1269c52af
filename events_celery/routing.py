"""Routing settings: which topics events are published to, and which topics a service consumes.

Parsing never raises: each problem is handed to a ``report(check_id, message, hint)`` callback,
so ``manage.py check`` can list every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

TOPIC_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

#: Receives one problem: check id suffix (``"E006"``), what is wrong, how to fix it.
Report = Callable[[str, str, str], None]


@attrs.frozen
class Route:
    """One enabled (event type → topic) route of the producer."""

    event_type: str
    topic: str
    event_key_field: str | None


@attrs.frozen
class Subscription:
    """One topic this service consumes; ``event_types`` ``None`` means all of them."""

    topic: str
    event_types: tuple[str, ...] | None


def _valid_topic(problem: Report, where: str, topic: object, check_id: str = "E006") -> bool:
    if isinstance(topic, str) and TOPIC_PATTERN.match(topic):
        return True
    problem(
        check_id,
        f"{where}: {topic!r} is not a valid topic name",
        "use letters, digits, '.', '-', '_', starting with a letter or digit",
    )
    return False


def parse_routes(
    problem: Report, config: Any, key_fields: list[Route] | None = None
) -> dict[str, tuple[Route, ...]]:
    """Parse ``EVENT_BUS_PRODUCER_CONFIG`` into the enabled routes of each event type.

    ``key_fields``, when given, receives the routes left out (disabled or invalid) that name
    an ``event_key_field``, for the checks.
    """
    if not isinstance(config, Mapping):
        problem(
            "E005",
            "EVENT_BUS_PRODUCER_CONFIG is not a dict",
            "use {event_type: {topic: {'event_key_field': 'a.b', 'enabled': True}}}",
        )
        return {}
    routes: dict[str, tuple[Route, ...]] = {}
    for event_type, topics in config.items():
        if not isinstance(topics, Mapping):
            problem(
                "E005",
                f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}] is not a dict of topics",
                "use {topic: {'event_key_field': 'a.b', 'enabled': True}}",
            )
            continue
        enabled: list[Route] = []
        for topic, options in topics.items():
            where = f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}][{topic!r}]"
            if not _valid_topic(problem, where, topic):
                continue
            if not isinstance(options, Mapping):
                problem(
                    "E005",
                    f"{where} must be a dict with keys 'event_key_field' and 'enabled'",
                    "e.g. {'event_key_field': 'order.id', 'enabled': True}",
                )
                continue
            valid = True
            unknown = sorted(map(str, set(options) - {"event_key_field", "enabled"}))
            if unknown:
                problem(
                    "E005",
                    f"{where} has unknown key(s) {unknown}",
                    "the keys are 'event_key_field' and 'enabled'",
                )
                valid = False
            key_field = options.get("event_key_field")
            if key_field is not None and not isinstance(key_field, str):
                problem("E005", f"{where}: event_key_field is not a string", "e.g. 'order.id'")
                valid = False
            is_enabled = options.get("enabled", True)
            if not isinstance(is_enabled, bool):
                problem("E005", f"{where}: enabled is {is_enabled!r}", "use True or False")
                valid = False
            if valid and is_enabled:
                enabled.append(Route(str(event_type), topic, key_field))
            elif isinstance(key_field, str) and key_fields is not None:
                # Not routed, but its event_key_field is checked all the same (E031), so one
                # run of manage.py check reports every problem of the route.
                key_fields.append(Route(str(event_type), topic, key_field))
        routes[str(event_type)] = tuple(enabled)
    return routes


def parse_subscriptions(problem: Report, config: Any) -> tuple[Subscription, ...]:
    """Parse ``EVENT_BUS_CONSUMER_CONFIG`` into the topics (and event types) consumed."""
    if not isinstance(config, Mapping):
        problem(
            "E007",
            "EVENT_BUS_CONSUMER_CONFIG is not a dict",
            "use {topic: {'event_types': [event_type, ...]}} (or {topic: {}} for all)",
        )
        return ()
    subscriptions = []
    for topic, options in config.items():
        where = f"EVENT_BUS_CONSUMER_CONFIG[{topic!r}]"
        if not _valid_topic(problem, where, topic, "E007"):
            continue
        options = {} if options is None else options
        if not isinstance(options, Mapping) or set(options) - {"event_types"}:
            unknown = (
                sorted(map(str, set(options) - {"event_types"}))
                if isinstance(options, Mapping)
                else options
            )
            problem(
                "E007",
                f"{where} must be a dict with the optional key 'event_types' (got {unknown!r})",
                "e.g. {'event_types': ['org.example.shop.order.placed.v1']}",
            )
            continue
        event_types = options.get("event_types")
        if event_types is not None and (
            not isinstance(event_types, list | tuple)
            or not event_types
            or not all(isinstance(t, str) for t in event_types)
        ):
            problem(
                "E007",
                f"{where}['event_types'] must be a non-empty list of event types",
                "list event types, or leave the key out to consume the whole topic",
            )
            continue
        subscriptions.append(
            Subscription(topic, tuple(event_types) if event_types is not None else None)
        )
    return tuple(subscriptions)
