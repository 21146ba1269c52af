"""The wire format, transport-free: an event ⇄ ``(headers, properties, body)``.

Nothing here knows kombu or Celery; any AMQP client that writes these headers and this Avro
body can publish events that a worker understands, and read the events it publishes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

import attrs

from events_celery import schema_store
from events_celery.bus import tracing
from events_celery.event_registry import EventRegistry, registry
from events_celery.exceptions import DecodeError, EventNotFoundError, MetadataError
from events_celery.metadata import (
    AVRO_CONTENT_TYPE,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_TYPE,
    REQUIRED_HEADERS,
    EventMetadata,
)
from events_celery.signals import EventSignal

#: Header carrying the writer schema's fingerprint (CRC-64-AVRO, 16 hex digits).
HEADER_FINGERPRINT = "schemafingerprint"
#: Header carrying the value at the topic's ``event_key_field`` (CloudEvents partitioning).
HEADER_PARTITION_KEY = "ce_partitionkey"

#: Every header of the wire format (design section 4).
WIRE_HEADERS = frozenset(
    {*REQUIRED_HEADERS, HEADER_DATA_CONTENT_TYPE, HEADER_FINGERPRINT, HEADER_PARTITION_KEY}
)


@attrs.frozen
class OutgoingMessage:
    """One event, ready for any AMQP client to publish."""

    body: bytes
    headers: dict[str, str]
    properties: dict[str, Any]


def encode_event(
    signal: EventSignal,
    metadata: EventMetadata,
    body: bytes,
    *,
    partition_key: str | None = None,
) -> OutgoingMessage:
    """Wrap an encoded payload in the headers and properties of design section 4."""
    return wire_message(
        metadata, body, fingerprint=signal.serializer.fingerprint, partition_key=partition_key
    )


def wire_message(
    metadata: EventMetadata,
    body: bytes,
    *,
    fingerprint: str,
    partition_key: str | None = None,
) -> OutgoingMessage:
    """The message of an Avro body written with the schema whose fingerprint is given.

    :func:`encode_event` calls it for an :class:`EventSignal`; an event defined elsewhere (an
    Open edX signal, say) travels in the same headers and properties with its own schema.
    """
    headers = metadata.to_headers()
    headers[HEADER_FINGERPRINT] = fingerprint
    tracing.inject(headers)
    if partition_key is not None:
        headers[HEADER_PARTITION_KEY] = partition_key
    return OutgoingMessage(body=body, headers=headers, properties=event_properties(metadata))


def event_properties(metadata: EventMetadata) -> dict[str, Any]:
    """The AMQP properties of an event message."""
    return message_properties(str(metadata.id), metadata.event_type, metadata.time, metadata.source)


def message_properties(
    event_id: str, event_type: str, time: datetime, source: str
) -> dict[str, Any]:
    """The AMQP properties of an event message, from the metadata fields they carry."""
    return {
        "content_type": AVRO_CONTENT_TYPE,
        "content_encoding": "binary",
        "delivery_mode": 2,
        "message_id": event_id,
        "type": event_type,
        "timestamp": int(time.timestamp()),
        "app_id": source,
    }


def key_getter(signal: EventSignal, path: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile ``event_key_field`` (``"order.customer.id"``) into a payload → str function.

    Raises:
        AttributeError: the path names no field of the payload (``manage.py check`` reports it).
    """
    first, _, rest = path.partition(".")
    if first not in signal.data:
        raise AttributeError(
            f"{signal.event_type} has no payload argument {first!r} "
            f"(payload arguments: {', '.join(sorted(signal.data))})"
        )
    current: Any = signal.data[first]
    for part in rest.split(".") if rest else ():
        fields = attrs.fields_dict(current) if attrs.has(current) else {}
        if part not in fields:
            known = (
                ", ".join(fields)
                or f"none: {getattr(current, '__name__', current)} is no attrs class"
            )
            raise AttributeError(
                f"{signal.event_type}: {path!r} has no field {part!r} (fields there: {known})"
            )
        current = fields[part].type
    if attrs.has(current):
        raise AttributeError(
            f"{signal.event_type}: {path!r} names a whole record "
            f"({getattr(current, '__name__', current)}); name one of its fields, e.g. "
            f"'{path}.{next(iter(attrs.fields_dict(current)))}'"
        )
    attr = operator.attrgetter(rest) if rest else None

    def get(payload: Mapping[str, Any]) -> str:
        value = payload[first]
        if attr is not None:
            value = attr(value)
        # An enum travels as its symbol (member name), so the key does too.
        return value.name if isinstance(value, Enum) else str(value)

    return get


@attrs.frozen
class ReceivedEvent:
    """An event decoded from a message."""

    signal: EventSignal
    metadata: EventMetadata
    payload: dict[str, Any]


class PoisonMessageError(DecodeError):
    """A message that can never become an event; it is dead-lettered with :attr:`reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def decode_event(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    routing_key: str | None = None,
    subscribed: Callable[[str], bool] | None = None,
    event_registry: EventRegistry = registry,
) -> ReceivedEvent:
    """Turn a received message into an event.

    The payload is read with the local definition's schema; a message written with another
    schema is resolved against it when that schema is one of the stored golden schemas.

    Args:
        headers: the message headers.
        body: the Avro body.
        content_type: the message's content type.
        max_size: the largest body accepted.
        routing_key: the routing key it arrived with; its ``ce_type`` must be the same (the
            broker routed it by the key, so a header that says otherwise is not trusted).
        subscribed: whether the receiving service consumes an event type; one it does not
            is refused, whatever the headers claim.
        event_registry: where event types are looked up.

    Raises:
        PoisonMessageError: the message is not a decodable event (the reason says why).
    """
    metadata = read_metadata(
        headers,
        body,
        content_type=content_type,
        max_size=max_size,
        routing_key=routing_key,
        subscribed=subscribed,
    )
    try:
        signal = event_registry.get(metadata.event_type)
    except EventNotFoundError as exc:
        raise PoisonMessageError(f"unknown event type {metadata.event_type!r}") from exc
    fingerprint = read_fingerprint(headers)
    writer_schema = None
    if fingerprint != signal.serializer.fingerprint:
        writer_schema = schema_store.find_schema(signal, fingerprint)
        if writer_schema is None:
            raise PoisonMessageError(
                f"{metadata.event_type}: unknown writer schema fingerprint {fingerprint}; "
                "replay it after upgrading this service to a version that knows the schema "
                "(manage.py event_dead_letters replay)"
            )
    try:
        payload = signal.serializer.decode(body, writer_schema)
    except DecodeError as exc:
        raise PoisonMessageError(f"undecodable Avro body: {exc}") from exc
    return ReceivedEvent(signal, metadata, payload)


def read_metadata(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    routing_key: str | None = None,
    subscribed: Callable[[str], bool] | None = None,
) -> EventMetadata:
    """Check a received message's envelope and read its metadata, whoever defines the event.

    The checks of :func:`decode_event` before the payload: content type, size, headers,
    routing key and subscription.

    Raises:
        PoisonMessageError: the message is not an event of this wire format.
    """
    if content_type != AVRO_CONTENT_TYPE:
        raise PoisonMessageError(
            f"content type is {content_type!r}; only {AVRO_CONTENT_TYPE!r} is accepted"
        )
    if len(body) > max_size:
        raise PoisonMessageError(
            f"body is {len(body)} bytes, above EVENT_BUS_MAX_MESSAGE_SIZE ({max_size})"
        )
    declared = headers.get(HEADER_DATA_CONTENT_TYPE)
    if declared is not None and _text(declared) != AVRO_CONTENT_TYPE:
        raise PoisonMessageError(f"header {HEADER_DATA_CONTENT_TYPE!r} is {declared!r}")
    try:
        metadata = EventMetadata.from_headers(headers)
    except MetadataError as exc:
        raise PoisonMessageError(str(exc)) from exc
    if routing_key is not None and metadata.event_type != routing_key:
        raise PoisonMessageError(
            f"header {HEADER_TYPE!r} is {metadata.event_type!r} but the message was routed with "
            f"{routing_key!r}; the routing key decides what an event is"
        )
    if subscribed is not None and not subscribed(metadata.event_type):
        raise PoisonMessageError(
            f"{metadata.event_type!r} is not an event type this service subscribes to "
            "(EVENT_BUS_CONSUMER_CONFIG)"
        )
    return metadata


def read_fingerprint(headers: Mapping[str, Any]) -> str:
    """The writer schema's fingerprint a message names.

    Raises:
        PoisonMessageError: the header is missing.
    """
    fingerprint = headers.get(HEADER_FINGERPRINT)
    if fingerprint is None:
        raise PoisonMessageError(f"message header {HEADER_FINGERPRINT!r} is missing")
    return _text(fingerprint)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
