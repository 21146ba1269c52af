"""Routing settings: which topics events are published to, and which topics a service consumes.

Parsing never raises: each problem goes to a :class:`~events_celery.conf.Problems`,
and an entry with a problem is kept, marked ``valid=False``, so ``manage.py check`` also
checks the rest of it (its event types, its ``event_key_field``) in the same run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from events_celery.conf.problems import Problems

TOPIC_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@attrs.frozen
class Route:
    """One (event type → topic) route of the producer.

    Events are published on it when it is ``enabled`` (its ``enabled`` option is not
    ``False``) and ``valid`` (it has no problem).
    """

    event_type: str
    topic: str
    event_key_field: str | None
    enabled: bool = attrs.field(default=True, kw_only=True)
    valid: bool = attrs.field(default=True, kw_only=True)


#: What an ordered subscription does with a key whose event used up its attempts.
WHEN_EXHAUSTED = ("continue", "stop")

#: Partition queues of an ordered subscription when ``partitions`` is left out.
DEFAULT_PARTITIONS = 4

#: The most partition queues an ordered subscription may have.
MAX_PARTITIONS = 256

SUBSCRIPTION_KEYS = ("event_types", "order_by_key", "partitions", "when_exhausted")


@attrs.frozen
class Subscription:
    """One topic this service consumes; ``event_types`` ``None`` means all of them.

    ``valid`` is ``False`` when the entry has a problem: nothing is consumed for it.

    Attributes:
        order_by_key: the events of one key (``ce_partitionkey``) run in the order they were
            published (see :mod:`events_celery.bus.consume.ordered`).
        partitions: how many partition queues spread the keys over the workers (ordered only).
        when_exhausted: ``"continue"``: after an event's last attempt its key goes on with the
            next event; ``"stop"``: the key's later events are held as dead letters too.
    """

    topic: str
    event_types: tuple[str, ...] | None
    valid: bool = attrs.field(default=True, kw_only=True)
    order_by_key: bool = attrs.field(default=False, kw_only=True)
    partitions: int = attrs.field(default=DEFAULT_PARTITIONS, kw_only=True)
    when_exhausted: str = attrs.field(default="continue", kw_only=True)


def _valid_topic(problems: Problems, where: str, topic: object, check_id: str) -> bool:
    if isinstance(topic, str) and TOPIC_PATTERN.match(topic):
        return True
    problems.add(
        check_id,
        f"{where}: {topic!r} is not a valid topic name",
        "use letters, digits, '.', '-', '_', starting with a letter or digit",
    )
    return False


def parse_routes(problems: Problems, config: Any) -> dict[str, tuple[Route, ...]]:
    """Parse ``EVENT_BUS_PRODUCER_CONFIG`` into the routes of each event type.

    Every route is returned, disabled ones and those with a problem (``valid=False``) too.
    """
    if not isinstance(config, Mapping):
        problems.add(
            "E005",
            "EVENT_BUS_PRODUCER_CONFIG is not a dict",
            "use {event_type: {topic: {'event_key_field': 'a.b', 'enabled': True}}}",
        )
        return {}
    routes: dict[str, tuple[Route, ...]] = {}
    for event_type, topics in config.items():
        if not isinstance(topics, Mapping):
            problems.add(
                "E005",
                f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}] is not a dict of topics",
                "use {topic: {'event_key_field': 'a.b', 'enabled': True}}",
            )
            continue
        routes[str(event_type)] = tuple(
            _parse_route(problems, str(event_type), topic, options)
            for topic, options in topics.items()
        )
    return routes


def _parse_route(problems: Problems, event_type: str, topic: Any, options: Any) -> Route:
    where = f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}][{topic!r}]"
    valid = _valid_topic(problems, where, topic, "E006")
    if not isinstance(options, Mapping):
        problems.add(
            "E005",
            f"{where} must be a dict with keys 'event_key_field' and 'enabled'",
            "e.g. {'event_key_field': 'order.id', 'enabled': True}",
        )
        return Route(event_type, str(topic), None, valid=False)
    unknown = sorted(map(str, set(options) - {"event_key_field", "enabled"}))
    if unknown:
        problems.add(
            "E005",
            f"{where} has unknown key(s) {unknown}",
            "the keys are 'event_key_field' and 'enabled'",
        )
        valid = False
    key_field = options.get("event_key_field")
    if key_field is not None and not isinstance(key_field, str):
        problems.add("E005", f"{where}: event_key_field is not a string", "e.g. 'order.id'")
        valid, key_field = False, None
    enabled = options.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.add("E005", f"{where}: enabled is {enabled!r}", "use True or False")
        valid = False
    return Route(event_type, str(topic), key_field, enabled=enabled is not False, valid=valid)


def parse_subscriptions(problems: Problems, config: Any) -> tuple[Subscription, ...]:
    """Parse ``EVENT_BUS_CONSUMER_CONFIG`` into the topics (and event types) consumed.

    Every topic is returned, those with a problem (``valid=False``) too.
    """
    if not isinstance(config, Mapping):
        problems.add(
            "E007",
            "EVENT_BUS_CONSUMER_CONFIG is not a dict",
            "use {topic: {'event_types': [event_type, ...]}} (or {topic: {}} for all)",
        )
        return ()
    return tuple(_parse_subscription(problems, topic, options) for topic, options in config.items())


def _parse_subscription(problems: Problems, topic: Any, options: Any) -> Subscription:
    where = f"EVENT_BUS_CONSUMER_CONFIG[{topic!r}]"
    valid = _valid_topic(problems, where, topic, "E007")
    options = {} if options is None else options
    if not isinstance(options, Mapping) or set(options) - set(SUBSCRIPTION_KEYS):
        unknown = (
            sorted(map(str, set(options) - set(SUBSCRIPTION_KEYS)))
            if isinstance(options, Mapping)
            else options
        )
        problems.add(
            "E007",
            f"{where} must be a dict with the optional keys {', '.join(SUBSCRIPTION_KEYS)} "
            f"(got {unknown!r})",
            "e.g. {'event_types': ['org.example.shop.order.placed.v1'], 'order_by_key': True}",
        )
        if not isinstance(options, Mapping):
            return Subscription(str(topic), None, valid=False)
        valid = False
    event_types = options.get("event_types")
    if event_types is not None and (
        not isinstance(event_types, list | tuple)
        or not event_types
        or not all(isinstance(t, str) for t in event_types)
    ):
        problems.add(
            "E007",
            f"{where}['event_types'] must be a non-empty list of event types",
            "list event types, or leave the key out to consume the whole topic",
        )
        return Subscription(str(topic), None, valid=False)
    order = _parse_order(problems, where, options)
    return Subscription(
        str(topic),
        tuple(event_types) if event_types is not None else None,
        valid=valid and order is not None,
        **(order or {}),
    )


def _parse_order(
    problems: Problems, where: str, options: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The ordering options of a subscription; ``None`` when one of them is wrong."""
    ordered = options.get("order_by_key", False)
    partitions = options.get("partitions", DEFAULT_PARTITIONS)
    when_exhausted = options.get("when_exhausted", "continue")
    valid = True
    if not isinstance(ordered, bool):
        problems.add("E034", f"{where}['order_by_key'] is {ordered!r}", "use True or False")
        valid = False
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        problems.add(
            "E034",
            f"{where}['partitions'] is {partitions!r}",
            f"use a whole number from 1 to {MAX_PARTITIONS}: the most workers that run the "
            "topic's keys at once (each worker runs many keys in its pool)",
        )
        valid = False
    if when_exhausted not in WHEN_EXHAUSTED:
        problems.add(
            "E034",
            f"{where}['when_exhausted'] is {when_exhausted!r}",
            "use 'continue' (the key goes on after a dead letter) or 'stop' (its later events "
            "are held as dead letters until the failed one is replayed or discarded)",
        )
        valid = False
    if not ordered and ("partitions" in options or "when_exhausted" in options):
        problems.add(
            "E034",
            f"{where} sets {'partitions' if 'partitions' in options else 'when_exhausted'} "
            "without 'order_by_key': True",
            "add 'order_by_key': True, or remove the ordering options",
        )
        valid = False
    if not valid:
        return None
    return {"order_by_key": ordered, "partitions": partitions, "when_exhausted": when_exhausted}
