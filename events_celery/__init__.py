"""A typed, reliable event bus for Django services on Celery and RabbitMQ."""

from events_celery.avro import register_codec
from events_celery.dedupe import once_per_event
from events_celery.event_registry import EventRegistry, registry
from events_celery.exceptions import (
    ConfigurationError,
    DecodeError,
    EventsCeleryError,
    PayloadValidationError,
    PublishError,
)
from events_celery.metadata import EventMetadata, library_version
from events_celery.receivers import current_attempt, receiver
from events_celery.signals import EventSignal, SentEvent

__version__ = library_version()

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "EventMetadata",
    "EventRegistry",
    "EventSignal",
    "EventsCeleryError",
    "PayloadValidationError",
    "PublishError",
    "SentEvent",
    "__version__",
    "batch_events",
    "current_attempt",
    "once_per_event",
    "receiver",
    "register_codec",
    "registry",
]


def __getattr__(name: str) -> object:
    # batch_events lives in the bus, which needs Django's apps loaded: import it on first use,
    # so that ``import events_celery`` works in a settings module.
    if name == "batch_events":
        from events_celery.bus.publish.producer import batch_events

        return batch_events
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
