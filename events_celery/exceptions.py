"""The errors events_celery raises.

One base, :class:`EventsCeleryError`, with a shallow tree below it. Where a builtin fits, an
error inherits it too, so ``except ValueError`` keeps working for callers that do not know
this library.
"""

from __future__ import annotations


class EventsCeleryError(Exception):
    """Base class of every error raised by events_celery."""


class EventDefinitionError(EventsCeleryError, ValueError):
    """An :class:`~events_celery.EventSignal` cannot be defined as written."""


class InvalidEventTypeError(EventDefinitionError):
    """An event type is not a lowercase reverse-DNS name ending in ``.vN``."""


class DuplicateEventTypeError(EventDefinitionError):
    """A second event definition uses an event type that is already defined."""


class UnsupportedTypeError(EventDefinitionError, TypeError):
    """A payload field has a Python type that cannot be carried in an Avro message."""


class EventNotFoundError(EventsCeleryError, LookupError):
    """No event definition is registered for an event type."""


class PayloadValidationError(EventsCeleryError, ValueError):
    """A payload passed to ``send_event`` does not match the event definition.

    Attributes:
        event_type: the event type being sent.
        field: dotted path of the offending field (``"order.total"``), or ``None`` when the
            problem is not tied to one field.
    """

    def __init__(self, event_type: str, field: str | None, problem: str) -> None:
        self.event_type = event_type
        self.field = field
        self.problem = problem
        where = f"field '{field}' " if field else ""
        super().__init__(f"{event_type}: {where}{problem}")


class MetadataError(EventsCeleryError, ValueError):
    """Event metadata, or the message headers that carry it, is missing or malformed."""


class SerializationError(EventsCeleryError):
    """A payload could not be turned into Avro bytes."""


class DecodeError(EventsCeleryError, ValueError):
    """Bytes received from the bus could not be turned back into an event."""


class SchemaCompatibilityError(EventsCeleryError):
    """A current event definition cannot exchange data with a stored (golden) schema."""


class ConfigurationError(EventsCeleryError):
    """Settings are missing or inconsistent; ``manage.py check`` lists every problem."""


class PublishError(EventsCeleryError):
    """Events could not be published and confirmed by the broker.

    Raised only in the ``"direct"`` publish mode (and by the bus's own hand-offs in workers);
    the default ``"outbox"`` mode never raises it.

    Attributes:
        event_ids: ids (``metadata.id``) of every event that was not confirmed.
        event_id: the first of them (kept for callers that know one event).
        topic: the topic they were meant for (the first one, when there were several).
        may_be_delivered: ``True`` when the broker may have taken a message without confirming
            it (the connection broke or the confirm timed out after the publish), so it may
            still be delivered; ``False`` when the broker never took it.
    """

    def __init__(
        self,
        message: str,
        *,
        event_id: object = None,
        topic: str | None = None,
        event_ids: tuple[object, ...] | None = None,
        may_be_delivered: bool = False,
    ):
        self.event_ids = (
            event_ids if event_ids is not None else ((event_id,) if event_id is not None else ())
        )
        self.event_id = event_id if event_id is not None else next(iter(self.event_ids), None)
        self.topic = topic
        self.may_be_delivered = may_be_delivered
        super().__init__(message)


class BrokerTLSError(EventsCeleryError):
    """The broker connection's TLS handshake or certificate login was refused.

    Retrying cannot help until a certificate or a setting changes, so it is not retried as if
    the broker were down: the message says what was refused and what to change.
    """
