"""A client of the events_celery wire format that uses pika and fastavro only.

It imports nothing from events_celery: everything it knows comes from the documented wire
format (docs/reference/wire-format.rst) and the committed ``.avsc`` schemas. It shows what a
service written without events_celery (or in another language) needs to read the events of
the bus and to publish events that events_celery workers deliver to their receivers.

    schemas = SchemaDirectory(Path("avro_schemas"))
    connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@localhost//"))
    channel = connection.channel()
    event = receive(channel, queue, schemas)          # one event from a queue you bound
    publish(channel, "prod.orders", schemas, "org.example.shop.order.placed.v1",
            {"order": {...}}, source="legacy-shop")   # an event for the bus
"""

from __future__ import annotations

import io
import json
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pika
from fastavro.schema import fingerprint, to_parsing_canonical_form

#: The content type of every event body, and of the ``ce_datacontenttype`` header.
AVRO_CONTENT_TYPE = "application/avro"
#: Headers a consumer requires on every event (all AMQP long strings).
REQUIRED_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_minorversion",
    "sourcehost",
    "sourcelib",
    "schemafingerprint",
)


class WireFormatError(ValueError):
    """A message that is not an event this client can read."""


def schema_fingerprint(schema: Any) -> str:
    """CRC-64-AVRO of the schema's Parsing Canonical Form: 8 bytes little-endian, in hex."""
    return str(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaDirectory:
    """The committed schemas of a folder: ``<event type>.avsc`` and older
    ``<event type>.<fingerprint>.avsc`` files, found by event type and fingerprint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def current(self, event_type: str) -> dict[str, Any]:
        """The golden (current) schema of ``event_type``."""
        path = self.folder / f"{event_type}.avsc"
        if not path.is_file():
            raise WireFormatError(f"no schema {path} for {event_type}")
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def find(self, event_type: str, print_: str) -> dict[str, Any]:
        """The schema of ``event_type`` whose fingerprint is ``print_``."""
        for path in [
            self.folder / f"{event_type}.avsc",
            *self.folder.glob(f"{event_type}.*.avsc"),
        ]:
            if path.is_file():
                schema = json.loads(path.read_text(encoding="utf-8"))
                if schema_fingerprint(schema) == print_:
                    return dict(schema)
        raise WireFormatError(f"{event_type}: no committed schema has fingerprint {print_}")


def decode(
    schemas: SchemaDirectory,
    routing_key: str,
    properties: pika.BasicProperties,
    body: bytes,
) -> dict[str, Any]:
    """One received event: its metadata (from the headers) and its payload record.

    Returns:
        ``{"id", "type", "source", "time", "minor_version", "source_host", "source_lib",
        "partition_key", "payload"}``; ``payload`` is the Avro record (fastavro converts the
        logical types: ``uuid`` to ``uuid.UUID``, ``decimal`` to ``Decimal``, ``timestamp-micros``
        to an aware ``datetime``; an enum is its symbol).
    """
    if properties.content_type != AVRO_CONTENT_TYPE:
        raise WireFormatError(f"content type {properties.content_type!r} is not Avro")
    headers = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in (properties.headers or {}).items()
    }
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise WireFormatError(f"missing headers: {', '.join(missing)}")
    event_type = headers["ce_type"]
    if event_type != routing_key:
        raise WireFormatError(f"ce_type {event_type!r} is not the routing key {routing_key!r}")
    writer = schemas.find(event_type, headers["schemafingerprint"])
    payload = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(writer), None)
    return {
        "id": uuid.UUID(headers["ce_id"]),
        "type": event_type,
        "source": headers["ce_source"],
        "time": datetime.fromisoformat(headers["ce_time"].replace("Z", "+00:00")),
        "minor_version": int(headers["ce_minorversion"]),
        "source_host": headers["sourcehost"],
        "source_lib": headers["sourcelib"],
        "partition_key": headers.get("ce_partitionkey"),
        "payload": payload,
    }


def receive(
    channel: Any, queue: str, schemas: SchemaDirectory, timeout: float = 30.0
) -> dict[str, Any]:
    """Take one event from ``queue`` (acknowledged once decoded), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is not None:
            event = decode(schemas, method.routing_key, properties, body)
            channel.basic_ack(method.delivery_tag)
            return event
        if time.monotonic() > deadline:
            raise TimeoutError(f"no event arrived on {queue} within {timeout} s")
        time.sleep(0.05)


def publish(
    channel: Any,
    exchange: str,
    schemas: SchemaDirectory,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    source: str,
    minor_version: int = 0,
    partition_key: str | None = None,
) -> uuid.UUID:
    """Publish one event to a topic exchange, as events_celery would; returns its id.

    ``payload`` is the Avro record of the event's current schema (``Decimal`` for decimals,
    ``uuid.UUID`` or ``str`` for uuids, an aware ``datetime`` for timestamps, the symbol for
    an enum). The exchange must exist already (workers and publishers of the bus declare it
    with their own arguments, which a second declaration would have to repeat exactly).
    """
    schema = schemas.current(event_type)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), dict(payload))
    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(event_id),
        "ce_type": event_type,
        "ce_source": source,
        "ce_time": now.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",
        "ce_minorversion": str(minor_version),
        "ce_datacontenttype": AVRO_CONTENT_TYPE,
        "sourcehost": socket.gethostname(),
        "sourcelib": "plain-pika-client/1.0",
        "schemafingerprint": schema_fingerprint(schema),
    }
    if partition_key is not None:
        headers["ce_partitionkey"] = partition_key
    properties = pika.BasicProperties(
        content_type=AVRO_CONTENT_TYPE,
        content_encoding="binary",
        delivery_mode=2,
        message_id=str(event_id),
        type=event_type,
        timestamp=int(now.timestamp()),
        app_id=source,
        headers=headers,
    )
    channel.confirm_delivery()
    channel.basic_publish(exchange, event_type, body.getvalue(), properties, mandatory=True)
    return event_id
