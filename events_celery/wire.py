"""The wire format, transport-free: an event ⇄ ``(headers, properties, body)``.

Every name a message carries is here: the headers of an event (design section 4), its AMQP
properties, and the headers a dead letter adds. Nothing here knows kombu, Celery or Django's
settings and apps; where decoding needs the stored writer schemas, the caller passes the
lookup in. Any AMQP client that writes these headers and this Avro body can publish events
that a worker understands, and read the events it publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from events_celery.event_registry import EventRegistry, registry
from events_celery.exceptions import DecodeError, EventNotFoundError, MetadataError

# The headers of the CloudEvents attributes are defined with the metadata they carry.
from events_celery.metadata import (
    AVRO_CONTENT_TYPE as AVRO_CONTENT_TYPE,
)
from events_celery.metadata import (
    HEADER_DATA_CONTENT_TYPE as HEADER_DATA_CONTENT_TYPE,
)
from events_celery.metadata import (
    HEADER_ID as HEADER_ID,
)
from events_celery.metadata import (
    HEADER_MINOR_VERSION as HEADER_MINOR_VERSION,
)
from events_celery.metadata import (
    HEADER_SOURCE as HEADER_SOURCE,
)
from events_celery.metadata import (
    HEADER_SOURCE_HOST as HEADER_SOURCE_HOST,
)
from events_celery.metadata import (
    HEADER_SOURCE_LIB as HEADER_SOURCE_LIB,
)
from events_celery.metadata import (
    HEADER_SPEC_VERSION as HEADER_SPEC_VERSION,
)
from events_celery.metadata import (
    HEADER_TIME as HEADER_TIME,
)
from events_celery.metadata import (
    HEADER_TYPE as HEADER_TYPE,
)
from events_celery.metadata import (
    REQUIRED_HEADERS as REQUIRED_HEADERS,
)
from events_celery.metadata import (
    EventMetadata as EventMetadata,
)
from events_celery.metadata import (
    format_time as format_time,
)
from events_celery.metadata import (
    parse_time as parse_time,
)

if TYPE_CHECKING:
    from events_celery.authenticity import Authenticity
    from events_celery.signals import EventSignal


#: Header carrying the writer schema's fingerprint (CRC-64-AVRO, 16 hex digits).
HEADER_FINGERPRINT = "schemafingerprint"
#: Header carrying the value at the topic's ``event_key_field`` (CloudEvents partitioning).
HEADER_PARTITION_KEY = "ce_partitionkey"
#: Headers of the sender's W3C trace context (https://www.w3.org/TR/trace-context/), present
#: when it sent the event inside a traced span.
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"

#: Header carrying the publisher's Ed25519 signatures: ``<key id>:<base64 signature>``, two
#: separated by a space during a key rotation (see :func:`signed_bytes`).
HEADER_SIGNATURE = "ce_signature"

#: Every header of the wire format (design section 4).
WIRE_HEADERS = frozenset(
    {
        *REQUIRED_HEADERS,
        HEADER_DATA_CONTENT_TYPE,
        HEADER_FINGERPRINT,
        HEADER_PARTITION_KEY,
        HEADER_SIGNATURE,
    }
)

#: The headers a signature covers, in the order :func:`signed_bytes` writes them.
SIGNED_HEADERS = (
    HEADER_SPEC_VERSION,
    HEADER_ID,
    HEADER_SOURCE,
    HEADER_TYPE,
    HEADER_TIME,
    HEADER_MINOR_VERSION,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
    HEADER_FINGERPRINT,
    HEADER_PARTITION_KEY,
)
#: What the signed bytes begin with: the format and its version.
SIGNATURE_CONTEXT = b"events-celery-signature/1\n"
#: The length written for a signed header the message does not have.
ABSENT = 0xFFFFFFFF

#: Every header a dead letter adds starts with this.
DEAD_LETTER_PREFIX = "x-events-celery-"
HEADER_REASON = "x-events-celery-reason"
HEADER_RECEIVER = "x-events-celery-receiver"
HEADER_ERROR = "x-events-celery-error"
HEADER_TRACEBACK = "x-events-celery-traceback"
#: The broker user that published the event (its ``user_id``, which the broker checked), as
#: this service received it: a dead letter keeps it, so that a replay is checked against
#: ``EVENT_BUS_TRUSTED_PUBLISHERS`` as the event was at first.
HEADER_USER_ID = "x-events-celery-user-id"
#: How many times the receiver ran before its event was dead-lettered.
HEADER_ATTEMPTS = "x-events-celery-attempts"
#: Which attempt of the receivers a message put back on a retry queue is (2, 3, ...): the Open
#: edX consumer's retries (:mod:`events_celery.contrib.openedx`). Not a dead letter's header.
HEADER_ATTEMPT_NUMBER = "x-events-celery-attempt"
#: How many times a message came back unfinished to the Open edX consumer (its consumer died
#: while running it): its redeliveries.
HEADER_REDELIVERIES = "x-events-celery-returns"
HEADER_ORIGIN = "x-events-celery-origin"
HEADER_DEAD_LETTERED_AT = "x-events-celery-dead-lettered-at"

#: AMQP properties of the original message that a dead letter keeps.
KEPT_PROPERTIES = frozenset({"message_id", "type", "timestamp", "app_id", "correlation_id"})

#: Longest traceback kept in a dead letter's headers (the tail is kept: it names the error).
MAX_TRACEBACK = 16_000
#: Longest error message kept (its start is kept).
MAX_ERROR = 2_000


# --- headers ⇄ metadata -----------------------------------------------------------------------


def metadata_headers(metadata: EventMetadata) -> dict[str, str]:
    """The message headers that carry ``metadata`` (all values are strings)."""
    return metadata.to_headers()


def metadata_from_headers(headers: Mapping[str, Any]) -> EventMetadata:
    """Rebuild metadata from message headers (see :meth:`EventMetadata.from_headers`).

    Raises:
        MetadataError: headers are missing or malformed; the message names every one of
            them, each with what is wrong.
    """
    return EventMetadata.from_headers(headers)


# --- signatures -------------------------------------------------------------------------------


def signed_bytes(headers: Mapping[str, Any], body: bytes) -> bytes:
    """The bytes an event's Ed25519 signature is made over: its CloudEvents headers and body.

    :data:`SIGNATURE_CONTEXT`, then for each header of :data:`SIGNED_HEADERS` in that order
    its UTF-8 value preceded by the value's length (4 bytes, big-endian), or only the length
    :data:`ABSENT` when the message does not have it, then the body preceded by its length
    (4 bytes, big-endian). Any client can build the same bytes (docs/reference/wire-format).
    """
    parts = [SIGNATURE_CONTEXT]
    for name in SIGNED_HEADERS:
        value = headers.get(name)
        if value is None:
            parts.append(ABSENT.to_bytes(4, "big"))
            continue
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
        parts += (len(data).to_bytes(4, "big"), data)
    parts += (len(body).to_bytes(4, "big"), body)
    return b"".join(parts)


# --- encoding ---------------------------------------------------------------------------------


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
    trace_context: Mapping[str, str] | None = None,
) -> OutgoingMessage:
    """Wrap an encoded payload in the headers and properties of design section 4.

    Args:
        signal: the event's definition (its schema's fingerprint travels along).
        metadata: the event's metadata.
        body: the Avro payload.
        partition_key: the value at the topic's ``event_key_field``, if it has one.
        trace_context: the sender's trace context headers (``traceparent``, ``tracestate``).
    """
    return wire_message(
        metadata,
        body,
        fingerprint=signal.serializer.fingerprint,
        partition_key=partition_key,
        trace_context=trace_context,
    )


def wire_message(
    metadata: EventMetadata,
    body: bytes,
    *,
    fingerprint: str,
    partition_key: str | None = None,
    trace_context: Mapping[str, str] | None = None,
) -> OutgoingMessage:
    """The message of an Avro body written with the schema whose fingerprint is given.

    :func:`encode_event` calls it for an :class:`EventSignal`; an event defined elsewhere (an
    Open edX signal, say) travels in the same headers and properties with its own schema.
    Of ``trace_context``, only :data:`HEADER_TRACEPARENT` and :data:`HEADER_TRACESTATE` are
    written.
    """
    headers = metadata_headers(metadata)
    headers[HEADER_FINGERPRINT] = fingerprint
    for name in (HEADER_TRACEPARENT, HEADER_TRACESTATE):
        if trace_context and name in trace_context:
            headers[name] = trace_context[name]
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


# --- decoding ---------------------------------------------------------------------------------

#: Finds a writer schema by its fingerprint among an event's stored schemas (``None``: unknown).
WriterSchemas = Callable[["EventSignal", str], "dict[str, Any] | None"]


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


@attrs.frozen
class CheckedMessage:
    """A message whose envelope is an event's: what its Avro body is to be read with."""

    signal: EventSignal
    metadata: EventMetadata
    #: The schema the body was written with, when it is not the local definition's.
    writer_schema: dict[str, Any] | None


def check_message(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    writer_schemas: WriterSchemas,
    routing_key: str | None = None,
    subscribed: Callable[[str], bool] | None = None,
    event_registry: EventRegistry = registry,
    authenticity: Authenticity | None = None,
    user_id: str | None = None,
) -> CheckedMessage:
    """Check everything of a received message but its Avro body, which it does not read.

    A worker's consumer checks each message so before handing it to a task, which decodes
    the body (:func:`decode_event`): each event is decoded once per delivery. The arguments
    are those of :func:`decode_event`.

    Raises:
        PoisonMessageError: the message can never become an event (the reason says why).
    """
    metadata = read_metadata(
        headers,
        body,
        content_type=content_type,
        max_size=max_size,
        routing_key=routing_key,
        subscribed=subscribed,
        authenticity=authenticity,
        user_id=user_id,
    )
    try:
        signal = event_registry.get(metadata.event_type)
    except EventNotFoundError as exc:
        raise PoisonMessageError(f"unknown event type {metadata.event_type!r}") from exc
    fingerprint = read_fingerprint(headers)
    writer_schema = None
    if fingerprint != signal.serializer.fingerprint:
        writer_schema = writer_schemas(signal, fingerprint)
        if writer_schema is None:
            raise PoisonMessageError(
                f"{metadata.event_type}: unknown writer schema fingerprint {fingerprint}; "
                "replay it after upgrading this service to a version that knows the schema "
                "(manage.py event_dead_letters replay)"
            )
    return CheckedMessage(signal, metadata, writer_schema)


def decode_event(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    writer_schemas: WriterSchemas,
    routing_key: str | None = None,
    subscribed: Callable[[str], bool] | None = None,
    event_registry: EventRegistry = registry,
    authenticity: Authenticity | None = None,
    user_id: str | None = None,
) -> ReceivedEvent:
    """Turn a received message into an event.

    The payload is read with the local definition's schema; a message written with another
    schema is resolved against it when ``writer_schemas`` knows that schema.

    Args:
        headers: the message headers.
        body: the Avro body.
        content_type: the message's content type.
        max_size: the largest body accepted.
        writer_schemas: finds a stored schema of the event by fingerprint (in a service,
            :func:`events_celery.schema_store.find_schema`: the golden schemas).
        routing_key: the routing key it arrived with; its ``ce_type`` must be the same (the
            broker routed it by the key, so a header that says otherwise is not trusted).
        subscribed: whether the receiving service consumes an event type; one it does not
            is refused, whatever the headers claim.
        event_registry: where event types are looked up.
        authenticity: what the service requires of an event's publisher
            (:class:`~events_celery.authenticity.Authenticity`); ``None``: nothing.
        user_id: the message's ``user_id`` property, which the broker checked.

    Raises:
        PoisonMessageError: the message is not a decodable event (the reason says why).
    """
    checked = check_message(
        headers,
        body,
        content_type=content_type,
        max_size=max_size,
        writer_schemas=writer_schemas,
        routing_key=routing_key,
        subscribed=subscribed,
        event_registry=event_registry,
        authenticity=authenticity,
        user_id=user_id,
    )
    try:
        payload = checked.signal.serializer.decode(body, checked.writer_schema)
    except DecodeError as exc:
        raise PoisonMessageError(f"undecodable Avro body: {exc}") from exc
    return ReceivedEvent(checked.signal, checked.metadata, payload)


def read_metadata(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    routing_key: str | None = None,
    subscribed: Callable[[str], bool] | None = None,
    authenticity: Authenticity | None = None,
    user_id: str | None = None,
) -> EventMetadata:
    """Check a received message's envelope and read its metadata, whoever defines the event.

    The checks of :func:`decode_event` before the payload: content type, size, headers,
    routing key, subscription, and last the publisher's authenticity (``user_id`` and
    signature, as ``authenticity`` requires).

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
    if declared is not None and header_text(declared) != AVRO_CONTENT_TYPE:
        raise PoisonMessageError(f"header {HEADER_DATA_CONTENT_TYPE!r} is {declared!r}")
    try:
        metadata = metadata_from_headers(headers)
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
    if authenticity is not None:
        authenticity.check(metadata, headers, body, user_id=user_id)
    return metadata


def read_fingerprint(headers: Mapping[str, Any]) -> str:
    """The writer schema's fingerprint a message names.

    Raises:
        PoisonMessageError: the header is missing.
    """
    fingerprint = headers.get(HEADER_FINGERPRINT)
    if fingerprint is None:
        raise PoisonMessageError(f"message header {HEADER_FINGERPRINT!r} is missing")
    return header_text(fingerprint)


def header_text(value: object) -> str:
    """A header value as text (bytes are read as UTF-8, what is not UTF-8 replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- dead letters -----------------------------------------------------------------------------


def plain_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers that are plain text or numbers (what a JSON task argument can carry)."""
    plain: dict[str, Any] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str | int | float | bool):
            plain[str(key)] = value
    return plain


def dead_letter_message(
    body: bytes,
    headers: Mapping[str, Any] | None,
    *,
    reason: str,
    content_type: str | None,
    time: datetime,
    origin: str | None = None,
    receiver: str | None = None,
    error: str | None = None,
    traceback: str | None = None,
    attempts: int | None = None,
    properties: Mapping[str, Any] | None = None,
) -> OutgoingMessage:
    """A message as it is dead-lettered: its body and plain headers, and headers saying why.

    Args:
        body: the original body, unchanged.
        headers: the original headers; only plain ones are kept (:func:`plain_headers`), and
            none an earlier dead-lettering added.
        reason: why it is dead-lettered.
        content_type: the original content type (``application/octet-stream`` when unknown).
        time: when it was dead-lettered.
        origin: ``<exchange>/<routing key>`` it arrived by.
        receiver: the receiver's name on the bus, for a receiver's failure.
        error: the error, ``"<type>: <message>"`` (its first :data:`MAX_ERROR` characters).
        traceback: the error's traceback (its last :data:`MAX_TRACEBACK` characters).
        attempts: how many times the receiver ran.
        properties: the original AMQP properties; the ones in :data:`KEPT_PROPERTIES` are kept,
            and ``user_id`` as the header :data:`HEADER_USER_ID`.
    """
    extra: dict[str, Any] = {HEADER_REASON: reason, HEADER_DEAD_LETTERED_AT: format_time(time)}
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
    if properties and properties.get("user_id"):
        extra[HEADER_USER_ID] = header_text(properties["user_id"])
    return OutgoingMessage(
        body=body,
        # What an earlier dead-lettering said (a replayed event that failed again) is dropped:
        # only this failure's reason, receiver, error and traceback describe it now.
        headers={
            **{
                k: v
                for k, v in plain_headers(headers).items()
                if not k.startswith(DEAD_LETTER_PREFIX)
            },
            **extra,
        },
        properties={
            **{k: v for k, v in (properties or {}).items() if k in KEPT_PROPERTIES},
            "content_type": content_type or "application/octet-stream",
            "content_encoding": "binary",
            "delivery_mode": 2,
        },
    )
