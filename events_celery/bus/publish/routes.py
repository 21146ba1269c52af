"""Routes of an event: the topics it is published to, and each topic's partition key.

``EVENT_BUS_PRODUCER_CONFIG`` routes an event type to topics; a topic may name an
``event_key_field`` (``"order.customer.id"``), whose value travels in the
``ce_partitionkey`` header. The path is compiled once per event and settings object.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from functools import lru_cache
from typing import Any

import attrs

from events_celery.conf import BusSettings
from events_celery.signals import EventSignal

#: Reads the partition key from a payload.
KeyGetter = Callable[[Mapping[str, Any]], str]


@lru_cache(maxsize=1024)
def compiled_routes(
    settings: BusSettings, signal: EventSignal
) -> tuple[tuple[str, KeyGetter | None], ...]:
    """The ``(topic, partition key getter)`` pairs an event is published to."""
    # Keyed by the settings object itself: new settings (override_settings) compile anew.
    return tuple(
        (route.topic, key_getter(signal, route.event_key_field) if route.event_key_field else None)
        for route in settings.routes.get(signal.event_type, ())
    )


def key_getter(signal: EventSignal, path: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile ``event_key_field`` (``"order.customer.id"``) into a payload → str function.

    Raises:
        AttributeError: the path names no field of the payload (``manage.py check`` reports it).
    """
    first, _, rest = path.partition(".")
    if first not in signal.data:
        raise AttributeError(
            f"{signal.event_type} has no payload argument {first!r} "
            f"(payload arguments: {', '.join(sorted(signal.data))})"
        )
    current: Any = signal.data[first]
    for part in rest.split(".") if rest else ():
        fields = attrs.fields_dict(current) if attrs.has(current) else {}
        if part not in fields:
            known = (
                ", ".join(fields)
                or f"none: {getattr(current, '__name__', current)} is no attrs class"
            )
            raise AttributeError(
                f"{signal.event_type}: {path!r} has no field {part!r} (fields there: {known})"
            )
        current = fields[part].type
    if attrs.has(current):
        raise AttributeError(
            f"{signal.event_type}: {path!r} names a whole record "
            f"({getattr(current, '__name__', current)}); name one of its fields, e.g. "
            f"'{path}.{next(iter(attrs.fields_dict(current)))}'"
        )
    if typing.get_origin(current) in (list, dict, set, tuple, frozenset) or current in (
        list,
        dict,
        set,
        tuple,
        frozenset,
        bytes,
    ):
        raise AttributeError(
            f"{signal.event_type}: {path!r} is a {getattr(current, '__name__', current)}, not a "
            "scalar: a key must be one value (a string, number, UUID, enum, ...)"
        )
    attr = operator.attrgetter(rest) if rest else None

    def get(payload: Mapping[str, Any]) -> str:
        value = payload[first]
        if attr is not None:
            value = attr(value)
        # An enum travels as its symbol (member name), so the key does too.
        return value.name if isinstance(value, Enum) else str(value)

    return get
