"""The registry of event definitions: every :class:`EventSignal` by event type."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from events_celery.exceptions import DuplicateEventTypeError, EventNotFoundError

if TYPE_CHECKING:
    from events_celery.signals import EventSignal


class EventRegistry:
    """Event definitions by event type.

    The module-level :data:`registry` is the one every :class:`EventSignal` registers with.
    It is an instance, not class state, so a test can swap it out with :meth:`isolated`.
    """

    def __init__(self) -> None:
        self._signals: dict[str, EventSignal] = {}

    def register(self, signal: EventSignal) -> None:
        """Add a definition.

        Raises:
            DuplicateEventTypeError: another definition already uses this event type.
        """
        existing = self._signals.get(signal.event_type)
        if existing is not None:
            raise DuplicateEventTypeError(
                f"{signal.event_type}: event type is already defined in "
                f"{existing.defined_in}; each event type is defined once. Import that signal "
                "instead, or bump the version (.v2) for a different payload"
            )
        self._signals[signal.event_type] = signal

    def unregister(self, event_type: str) -> None:
        """Remove a definition (no error if it is not there)."""
        self._signals.pop(event_type, None)

    def get(self, event_type: str) -> EventSignal:
        """Return the definition of ``event_type``.

        Raises:
            EventNotFoundError: nothing defines it in this process.
        """
        try:
            return self._signals[event_type]
        except KeyError:
            raise EventNotFoundError(
                f"{event_type}: no event is defined with this type; check the spelling, and that "
                "the app defining it is in INSTALLED_APPS with the event in its events.py"
            ) from None

    def find(self, event_type: str) -> EventSignal | None:
        """Return the definition of ``event_type``, or ``None``."""
        return self._signals.get(event_type)

    def all(self) -> list[EventSignal]:
        """Every definition, sorted by event type."""
        return [self._signals[key] for key in sorted(self._signals)]

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._signals

    def __len__(self) -> int:
        return len(self._signals)

    @contextmanager
    def isolated(self) -> Iterator[EventRegistry]:
        """Let a block define events that are forgotten afterwards, even if the block fails.

        The definitions registered before the block stay visible inside it.
        """
        saved = dict(self._signals)
        try:
            yield self
        finally:
            self._signals = saved


#: The registry every event definition registers with.
registry = EventRegistry()
