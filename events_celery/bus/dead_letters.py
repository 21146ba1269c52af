"""The dead-letter store: a durable queue per service, ``<service>.events_celery.dead_letters``.

A message lands there when it can never become an event (bad Avro, unknown type or schema,
missing headers, wrong content type, too large) or when a receiver failed its last attempt.
It keeps the original body and headers, plus headers saying why, so that it can be replayed
once the cause is fixed. Queues of the service also dead-letter there (RabbitMQ ``x-death``)
when a message is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from events_celery.bus import topology
from events_celery.bus.dispatch import OutgoingMessage
from events_celery.bus.producer import publisher
from events_celery.conf import BusSettings
from events_celery.metadata import format_time

#: Every header the dead-letter store adds starts with this.
OUR_PREFIX = "x-events-celery-"
HEADER_REASON = "x-events-celery-reason"
HEADER_RECEIVER = "x-events-celery-receiver"
HEADER_ERROR = "x-events-celery-error"
HEADER_TRACEBACK = "x-events-celery-traceback"
HEADER_ATTEMPTS = "x-events-celery-attempts"
HEADER_ORIGIN = "x-events-celery-origin"
HEADER_TIME = "x-events-celery-dead-lettered-at"

#: AMQP properties of the original message that a dead letter keeps.
KEPT_PROPERTIES = frozenset({"message_id", "type", "timestamp", "app_id", "correlation_id"})

#: Longest traceback kept in a dead letter's headers (the tail is kept: it names the error).
MAX_TRACEBACK = 16_000
#: Longest error message kept (its start is kept).
MAX_ERROR = 2_000


def plain_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers that are plain text or numbers (what a JSON task argument can carry)."""
    plain: dict[str, Any] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str | int | float | bool):
            plain[str(key)] = value
    return plain


def dead_letter(
    settings: BusSettings,
    body: bytes,
    headers: Mapping[str, Any] | None,
    *,
    reason: str,
    content_type: str | None,
    origin: str | None = None,
    receiver: str | None = None,
    error: str | None = None,
    traceback: str | None = None,
    attempts: int | None = None,
    properties: Mapping[str, Any] | None = None,
) -> None:
    """Park a message in this service's dead-letter store (confirmed by the broker).

    Raises:
        PublishError: the broker did not confirm it; the caller must not ack the original.
    """
    service = settings.require_service_name()
    extra: dict[str, Any] = {HEADER_REASON: reason, HEADER_TIME: format_time(datetime.now(UTC))}
    if origin is not None:
        extra[HEADER_ORIGIN] = origin
    if receiver is not None:
        extra[HEADER_RECEIVER] = receiver
    if error is not None:
        extra[HEADER_ERROR] = error[:MAX_ERROR]
    if traceback is not None:
        extra[HEADER_TRACEBACK] = traceback[-MAX_TRACEBACK:]
    if attempts is not None:
        extra[HEADER_ATTEMPTS] = str(attempts)  # every header events_celery adds is text
    message = OutgoingMessage(
        body=body,
        # What an earlier dead-lettering said (a replayed event that failed again) is dropped:
        # only this failure's reason, receiver, error and traceback describe it now.
        headers={
            **{k: v for k, v in plain_headers(headers).items() if not k.startswith(OUR_PREFIX)},
            **extra,
        },
        properties={
            **{k: v for k, v in (properties or {}).items() if k in KEPT_PROPERTIES},
            "content_type": content_type or "application/octet-stream",
            "content_encoding": "binary",
            "delivery_mode": 2,
        },
    )
    store = topology.dead_letter_queue(service, settings.queue_type)
    publisher(settings).publish(
        message,
        exchange=topology.dead_letter_exchange(service).name,
        routing_key="",
        declare=topology.Topology(exchanges=(), queues=(store,)),
    )
