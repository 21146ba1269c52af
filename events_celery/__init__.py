"""A typed, reliable event bus for Django services on Celery and RabbitMQ."""

from events_celery.avro import register_codec
from events_celery.dedupe import once_per_event
from events_celery.exceptions import (
    ConfigurationError,
    DecodeError,
    EventsCeleryError,
    PayloadValidationError,
    PublishError,
)
from events_celery.metadata import EventMetadata, library_version
from events_celery.registry import EventRegistry, registry
from events_celery.signals import EventSignal

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
    "__version__",
    "once_per_event",
    "register_codec",
    "registry",
]
