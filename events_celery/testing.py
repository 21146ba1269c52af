"""Helpers for testing code that defines, sends or receives events.

Each helper restores what it changed in a ``finally`` block, so a failing test cannot leak
state into the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from events_celery.event_registry import EventRegistry, registry
from events_celery.metadata import EventMetadata
from events_celery.signals import EventSignal


@contextmanager
def isolated_registry() -> Iterator[EventRegistry]:
    """Let a test define events that are forgotten when it ends, even if it fails."""
    with registry.isolated() as isolated:
        yield isolated


@contextmanager
def events_disabled(*signals: EventSignal) -> Iterator[None]:
    """Disable the given events for a block, then restore each one's previous state."""
    previous = [signal.enabled for signal in signals]
    try:
        for signal in signals:
            signal.disable()
        yield
    finally:
        for signal, enabled in zip(signals, previous, strict=True):
            signal.enabled = enabled


@attrs.frozen
class CapturedEvent:
    """One event seen by :func:`capture_events`."""

    signal: EventSignal
    metadata: EventMetadata
    payload: dict[str, Any]
    from_event_bus: bool


@contextmanager
def capture_events(*signals: EventSignal) -> Iterator[list[CapturedEvent]]:
    """Record every event the given signals dispatch during a block.

    Example::

        with capture_events(ORDER_PLACED) as events:
            place_order(...)
        assert events[0].payload["order"].total == Decimal("12.50")
    """
    captured: list[CapturedEvent] = []

    def record(
        signal: EventSignal, metadata: EventMetadata, from_event_bus: bool, **payload: Any
    ) -> None:
        payload.pop("sender", None)
        captured.append(CapturedEvent(signal, metadata, payload, from_event_bus))

    try:
        for signal in signals:
            signal.connect(record, weak=False, dispatch_uid=f"events_celery.capture.{id(captured)}")
        yield captured
    finally:
        for signal in signals:
            signal.disconnect(dispatch_uid=f"events_celery.capture.{id(captured)}")
