"""Django app of the Open edX adapter: lets ``EVENT_BUS_PRODUCER_CONFIG`` route Open edX events."""

from __future__ import annotations

from django.apps import AppConfig


class OpenedxAdapterConfig(AppConfig):
    """Tells events_celery's checks that openedx-events defines and publishes its own events."""

    name = "events_celery.contrib.openedx"
    label = "events_celery_openedx"
    verbose_name = "Events on Celery: Open edX event bus"

    def ready(self) -> None:
        """Accept routes to Open edX event types (openedx-events sends them to the producer)."""
        from events_celery.checks import define_events_elsewhere
        from events_celery.contrib.openedx.wire import is_open_edx_event

        define_events_elsewhere(is_open_edx_event)
