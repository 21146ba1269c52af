"""The producer openedx-events calls (``EVENT_BUS_PRODUCER``): Open edX events into the outbox.

openedx-events connects a handler to every signal ``EVENT_BUS_PRODUCER_CONFIG`` routes; the
handler calls ``get_producer().send(...)`` once per enabled topic. Here ``send`` encodes the
event and hands it to events_celery's producer like any event: in ``"outbox"`` mode the row is
written in the caller's open transaction (published after the commit, nothing on a rollback),
or at once outside one; in ``"direct"`` mode it is a confirmed publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openedx_events.data import EventsMetadata
from openedx_events.event_bus import EventBusProducer
from openedx_events.tooling import OpenEdxPublicSignal

from events_celery.bus.publish.producer import check_size, publish_messages
from events_celery.conf import bus_settings
from events_celery.contrib.openedx import wire


class EventsCeleryProducer(EventBusProducer):  # type: ignore[misc]  # openedx-events is untyped
    """Publishes Open edX events to RabbitMQ through events_celery."""

    def send(
        self,
        *,
        signal: OpenEdxPublicSignal,
        topic: str,
        event_key_field: str,
        event_data: Mapping[str, Any],
        event_metadata: EventsMetadata,
    ) -> None:
        """Publish one event to one topic (exchange ``<EVENT_BUS_TOPIC_PREFIX><topic>``).

        Args:
            signal: the Open edX signal sent.
            topic: the topic, without prefix.
            event_key_field: dotted path to the value sent as ``ce_partitionkey``.
            event_data: the signal's keyword arguments.
            event_metadata: the event's metadata; its id, time, source and versions travel.

        Raises:
            ValueError: ``event_key_field`` names no field of the event.
            PayloadValidationError: the body is above ``EVENT_BUS_MAX_MESSAGE_SIZE``.
            django.db.DatabaseError: ``"outbox"`` mode could not write the outbox row.
            PublishError: ``"direct"`` mode only: the broker did not confirm the message.
        """
        settings = bus_settings()
        message = wire.encode(signal, event_data, event_metadata, event_key_field=event_key_field)
        check_size(settings, signal.event_type, message.body)
        publish_messages(settings, wire.to_wire_metadata(event_metadata), [(topic, message)])


def create_producer() -> EventsCeleryProducer:
    """What ``EVENT_BUS_PRODUCER`` names; openedx-events keeps the one it returns."""
    return EventsCeleryProducer()
