"""Django app configuration of events_celery."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventsCeleryConfig(AppConfig):
    """Wires events_celery into a Django project; opens no connection."""

    name = "events_celery"
    verbose_name = "Events on Celery"

    def ready(self) -> None:
        """Register checks, attach the bus to sending, hook into Celery workers, find events."""
        from events_celery import checks  # noqa: F401 - registers the system checks
        from events_celery.bus import (
            hooks,
            metrics,
            tracing,
            worker,  # noqa: F401 - connects Celery's worker signals
        )
        from events_celery.bus.publish.producer import publish_event
        from events_celery.signals import attach_publish_hook

        attach_publish_hook(publish_event)
        # The observers hang on the bus's hook points; the bus never imports them.
        hooks.attach(tracing.observer)
        hooks.attach(metrics.observer)

        autodiscover_modules("events")
