"""openedx-events' pluggable event bus on events_celery: RabbitMQ for an Open edX service.

Settings::

    INSTALLED_APPS += ["events_celery", "events_celery.contrib.openedx"]
    EVENT_BUS_PRODUCER = "events_celery.contrib.openedx.create_producer"
    EVENT_BUS_CONSUMER = "events_celery.contrib.openedx.EventsCeleryConsumer"

Events are sent with openedx-events' ``send_event`` and routed by ``EVENT_BUS_PRODUCER_CONFIG``;
``manage.py consume_events -t TOPIC -g GROUP`` consumes a topic as consumer group ``GROUP``.
"""

from __future__ import annotations

try:
    import openedx_events  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "events_celery.contrib.openedx needs openedx-events: pip install 'events_celery[openedx]'"
    ) from exc

from typing import Any

__all__ = ["EventsCeleryConsumer", "EventsCeleryProducer", "create_producer"]

_HOMES = {
    "EventsCeleryConsumer": "events_celery.contrib.openedx.consumer",
    "EventsCeleryProducer": "events_celery.contrib.openedx.producer",
    "create_producer": "events_celery.contrib.openedx.producer",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: Django imports this package (the app) before models are ready,
    # and the producer and consumer need them.
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_HOMES[name]), name)
