"""Choosing the events a management command works on."""

from __future__ import annotations

from django.core.management.base import CommandError

from events_celery.event_registry import registry
from events_celery.exceptions import EventNotFoundError
from events_celery.signals import EventSignal


def selected_events(event_types: list[str]) -> list[EventSignal]:
    """The named events, or every defined one when none is named.

    Raises:
        CommandError: a named event type is not defined, or no event is defined at all.
    """
    if not event_types:
        signals = registry.all()
        if not signals:
            raise CommandError("no events are defined; add apps with events.py to INSTALLED_APPS")
        return signals
    try:
        return [registry.get(event_type) for event_type in event_types]
    except EventNotFoundError as exc:
        raise CommandError(str(exc)) from exc
