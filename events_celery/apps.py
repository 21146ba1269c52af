"""Django app configuration of events_celery."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventsCeleryConfig(AppConfig):
    """Wires events_celery into a Django project; opens no connection."""

    name = "events_celery"
    verbose_name = "Events on Celery"

    def ready(self) -> None:
        """Register system checks, hook into Celery workers, import apps' ``events`` modules."""
        from events_celery import checks  # noqa: F401 - registers the system checks
        from events_celery.bus import consumer  # noqa: F401 - connects Celery's worker_init

        autodiscover_modules("events")
