"""Open edX events on events_celery's wire format, transport-free.

An Open edX event travels as any events_celery message (design section 4): the ``ce_*``
headers, ``sourcehost``, ``sourcelib``, the writer schema's fingerprint and
``ce_partitionkey``. The body is the Avro that openedx-events' own ``AvroSignalSerializer``
writes for the signal, and the fingerprint is that schema's (CRC-64-AVRO of its canonical form).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import attrs
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from openedx_events.data import EventsMetadata
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer
from openedx_events.tooling import OpenEdxPublicSignal

from events_celery.authenticity import Authenticity
from events_celery.avro.bounds import DEFAULT_MAX_ITEMS, ItemBound, compile_item_bound
from events_celery.avro.schema import fingerprint
from events_celery.bus import hooks
from events_celery.metadata import EventMetadata
from events_celery.wire import (
    OutgoingMessage,
    PoisonMessageError,
    read_fingerprint,
    read_metadata,
    wire_message,
)

_NUMBERS = re.compile(r"[0-9]+")


@attrs.frozen
class SignalCodec:
    """openedx-events' Avro schema of one signal, with its (de)serializer."""

    signal: OpenEdxPublicSignal
    serializer: AvroSignalSerializer
    deserializer: AvroSignalDeserializer
    parsed_schema: Any
    fingerprint: str
    item_bound: ItemBound | None

    def encode(self, event_data: Mapping[str, Any]) -> bytes:
        """The bytes openedx-events' ``serialize_event_data_to_bytes`` writes for the event."""
        out = BytesIO()
        schemaless_writer(out, self.parsed_schema, self.serializer.to_dict(dict(event_data)))
        return out.getvalue()

    def decode(self, body: bytes) -> dict[str, Any]:
        """The signal's keyword arguments read back from ``body``.

        Raises:
            PoisonMessageError: the body is not this schema's Avro, or claims more list or map
                items than it has bytes or than the item budget (checked before decoding).
        """
        try:
            if self.item_bound is not None:
                self.item_bound(body, DEFAULT_MAX_ITEMS)
            stream = BytesIO(body)
            record = schemaless_reader(stream, self.parsed_schema, None)
            left_over = len(body) - stream.tell()
            if left_over:
                raise ValueError(f"{left_over} bytes are left over after the payload")
            return dict(self.deserializer.from_dict(record))
        except Exception as exc:
            raise PoisonMessageError(
                f"{self.signal.event_type}: undecodable Avro body ({len(body)} bytes): "
                f"{type(exc).__name__}: {exc}"
            ) from exc


@functools.cache
def signal_codec(signal: OpenEdxPublicSignal) -> SignalCodec:
    """The codec of ``signal`` (signals are module constants: built once each)."""
    serializer = AvroSignalSerializer(signal)
    return SignalCodec(
        signal=signal,
        serializer=serializer,
        deserializer=AvroSignalDeserializer(signal),
        parsed_schema=parse_schema(serializer.schema),
        fingerprint=fingerprint(serializer.schema),
        item_bound=compile_item_bound(serializer.schema),
    )


def is_open_edx_event(event_type: str) -> bool:
    """Whether an Open edX signal (``OpenEdxPublicSignal``) defines ``event_type``."""
    try:
        OpenEdxPublicSignal.get_signal_by_type(event_type)
    except KeyError:
        return False
    return True


def to_wire_metadata(metadata: EventsMetadata) -> EventMetadata:
    """events_celery's metadata for an Open edX event's (``sourcelib`` becomes ``"10.5.0"``)."""
    return EventMetadata(
        id=metadata.id,
        event_type=metadata.event_type,
        minor_version=metadata.minorversion,
        source=metadata.source,
        source_host=metadata.sourcehost,
        time=metadata.time,
        source_lib=".".join(map(str, metadata.sourcelib)),
    )


def to_events_metadata(metadata: EventMetadata) -> EventsMetadata:
    """openedx-events' metadata for an event read from the wire.

    ``sourcelib`` is a tuple of ints there: the numbers of the ``sourcelib`` header, in order
    (``"10.5.0"`` is ``(10, 5, 0)``).
    """
    return EventsMetadata(
        event_type=metadata.event_type,
        id=metadata.id,
        minorversion=metadata.minor_version,
        source=metadata.source,
        sourcehost=metadata.source_host,
        time=metadata.time,
        sourcelib=tuple(int(n) for n in _NUMBERS.findall(metadata.source_lib)),
    )


def event_key(event_data: Mapping[str, Any], event_key_field: str) -> str:
    """The value at ``event_key_field`` (``"enrollment.course.course_key"``), as text.

    Raises:
        ValueError: the path names no field of the event data.
    """
    current: Any = event_data
    for name in event_key_field.split("."):
        if isinstance(current, Mapping) and name in current:
            current = current[name]
        elif not isinstance(current, Mapping) and hasattr(current, name):
            current = getattr(current, name)
        else:
            raise ValueError(
                f"event_key_field {event_key_field!r}: no field {name!r} in "
                f"{type(current).__name__}"
            )
    return str(current)


def encode(
    signal: OpenEdxPublicSignal,
    event_data: Mapping[str, Any],
    metadata: EventsMetadata,
    *,
    event_key_field: str | None,
) -> OutgoingMessage:
    """The message of an Open edX event: openedx-events' Avro body, events_celery's headers.

    Raises:
        ValueError: ``event_key_field`` names no field of the event data.
    """
    codec = signal_codec(signal)
    return wire_message(
        to_wire_metadata(metadata),
        codec.encode(event_data),
        fingerprint=codec.fingerprint,
        partition_key=event_key(event_data, event_key_field) if event_key_field else None,
        trace_context=hooks.message_headers(),
    )


@attrs.frozen
class ReceivedOpenedxEvent:
    """An Open edX event read from a message."""

    signal: OpenEdxPublicSignal
    metadata: EventsMetadata
    event_data: dict[str, Any]


def decode(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    content_type: str | None,
    max_size: int,
    routing_key: str | None,
    authenticity: Authenticity | None = None,
    user_id: str | None = None,
) -> ReceivedOpenedxEvent:
    """Read an Open edX event from a message of events_celery's wire format.

    The envelope is checked as for any event (content type, size, headers, routing key, and
    the publisher's authenticity with ``authenticity`` and ``user_id``); the
    body must have been written with the schema this service's openedx-events derives for the
    signal (same fingerprint): a message written with another schema is not guessed at.

    Raises:
        PoisonMessageError: the message is not an Open edX event this service can read.
    """
    metadata = read_metadata(
        headers,
        body,
        content_type=content_type,
        max_size=max_size,
        routing_key=routing_key,
        authenticity=authenticity,
        user_id=user_id,
    )
    try:
        signal = OpenEdxPublicSignal.get_signal_by_type(metadata.event_type)
    except KeyError:
        raise PoisonMessageError(
            f"unknown event type {metadata.event_type!r}: no Open edX signal defines it"
        ) from None
    codec = signal_codec(signal)
    writer = read_fingerprint(headers)
    if writer != codec.fingerprint:
        raise PoisonMessageError(
            f"{metadata.event_type}: writer schema fingerprint {writer} is not the schema "
            f"openedx-events derives here ({codec.fingerprint}); replay after running the "
            "same openedx-events version as the sender"
        )
    return ReceivedOpenedxEvent(signal, to_events_metadata(metadata), codec.decode(body))
