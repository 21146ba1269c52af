"""The AsyncAPI 3.0 document of one service: its broker, topic exchanges, events and operations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from kombu.utils.url import url_to_parts

from events_celery.catalog.model import CatalogEntry, ServiceRouting
from events_celery.metadata import SPEC_VERSION
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    HEADER_DATA_CONTENT_TYPE,
    HEADER_FINGERPRINT,
    HEADER_ID,
    HEADER_MINOR_VERSION,
    HEADER_PARTITION_KEY,
    HEADER_SIGNATURE,
    HEADER_SOURCE,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TYPE,
    REQUIRED_HEADERS,
)

ASYNCAPI_VERSION = "3.0.0"
#: How the AsyncAPI document marks a payload written as an Avro schema.
AVRO_SCHEMA_FORMAT = "application/vnd.apache.avro;version=1.9.0"
AMQP_BINDING_VERSION = "0.3.0"

#: What each header of the wire format carries (all values are AMQP long strings).
HEADER_DESCRIPTIONS = {
    HEADER_SPEC_VERSION: "CloudEvents spec version",
    HEADER_ID: "event id (UUID); the same on every redelivery and in every service",
    HEADER_TYPE: "event type; equal to the routing key",
    HEADER_SOURCE: "name of the sending service (EVENT_BUS_SERVICE_NAME)",
    HEADER_TIME: "when the event was sent, RFC 3339 in UTC with microseconds",
    HEADER_MINOR_VERSION: "minor version of the payload schema, decimal digits",
    HEADER_DATA_CONTENT_TYPE: "content type of the body",
    HEADER_SOURCE_HOST: "host name of the sending machine",
    HEADER_SOURCE_LIB: "version of the sending library",
    HEADER_FINGERPRINT: (
        "CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical Form, "
        "its 8 bytes little-endian (as Avro's single-object encoding writes them) in 16 "
        "lowercase hex digits"
    ),
    HEADER_PARTITION_KEY: (
        "the value at the topic's event_key_field, as text; sent when the route names one"
    ),
    HEADER_SIGNATURE: (
        "Ed25519 signatures over the CloudEvents headers and the body, '<key id>:<base64>' "
        "separated by spaces; sent when the publisher has signing keys"
    ),
}


def asyncapi_document(
    service: ServiceRouting,
    entries: Iterable[CatalogEntry],
    broker_url: str,
    *,
    api_version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``service`` (plain dicts and lists, ready for JSON/YAML).

    Args:
        service: the service described; its operations are its routes and subscriptions.
        entries: the catalog of the events (see :func:`.build_catalog`).
        broker_url: the broker URL; its credentials are left out.
        api_version: the ``info.version`` of the document.
    """
    entries = list(entries)
    servers, vhost = _servers(broker_url)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    sent: dict[str, list[CatalogEntry]] = {}
    received: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        for producer in entry.producers:
            if producer.service == service.name:
                sent.setdefault(producer.topic, []).append(entry)
        for consumer in entry.consumers:
            if consumer.service == service.name:
                received.setdefault(consumer.topic, []).append(entry)
        if any(p.service == service.name for p in entry.producers) or any(
            c.service == service.name for c in entry.consumers
        ):
            messages[entry.event_type] = _message(entry)
    for topic in sorted({*sent, *received}):
        exchange = service.exchange(topic)
        on_topic = {e.event_type for e in [*sent.get(topic, ()), *received.get(topic, ())]}
        channels[topic] = {
            "address": exchange,
            "title": f"topic {topic}",
            "description": (
                f"The durable topic exchange {exchange!r}; the routing key is the event type."
            ),
            "messages": {
                event_type: {"$ref": f"#/components/messages/{event_type}"}
                for event_type in sorted(on_topic)
            },
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": vhost,
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        if topic in sent:
            operations[f"send-{topic}"] = _send(service, topic, sent[topic])
        if topic in received:
            operations[f"receive-{topic}"] = _receive(service, topic, received[topic])
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{service.name} events",
            "version": api_version,
            "description": (
                f"Events the service {service.name!r} publishes and consumes on RabbitMQ. "
                "Each message is one event: an Avro body (schemaless binary of the payload "
                "record) with CloudEvents headers."
            ),
        },
        "servers": servers,
        "defaultContentType": AVRO_CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _servers(broker_url: str) -> tuple[dict[str, Any], str]:
    servers: dict[str, Any] = {}
    vhost = "/"
    for n, url in enumerate(u.strip() for u in broker_url.split(";") if u.strip()):
        transport, host, port, _user, _password, path, _query = url_to_parts(url)
        secure = transport in ("amqps",) or url.startswith("amqps")
        protocol = "amqps" if secure else "amqp" if "amqp" in transport else transport
        virtual_host = unquote(path) if path else "/"
        server: dict[str, Any] = {
            "host": f"{host or 'localhost'}:{port or (5671 if secure else 5672)}",
            "protocol": protocol,
            "description": f"virtual host {virtual_host!r}",
        }
        if protocol.startswith("amqp"):
            server["protocolVersion"] = "0.9.1"
        if n == 0:
            vhost = virtual_host
        servers["broker" if n == 0 else f"broker-{n + 1}"] = server
    return servers, vhost


def _message(entry: CatalogEntry) -> dict[str, Any]:
    signal = entry.signal
    required = [*REQUIRED_HEADERS, HEADER_FINGERPRINT]
    headers: dict[str, Any] = {
        name: {"type": "string", "description": HEADER_DESCRIPTIONS[name]}
        for name in [*REQUIRED_HEADERS, HEADER_DATA_CONTENT_TYPE, HEADER_FINGERPRINT]
    }
    headers[HEADER_SPEC_VERSION]["const"] = SPEC_VERSION
    headers[HEADER_ID]["format"] = "uuid"
    headers[HEADER_TYPE]["const"] = signal.event_type
    headers[HEADER_TIME]["format"] = "date-time"
    headers[HEADER_MINOR_VERSION]["pattern"] = "^[0-9]+$"
    headers[HEADER_MINOR_VERSION]["examples"] = [str(signal.minor_version)]
    headers[HEADER_DATA_CONTENT_TYPE]["const"] = AVRO_CONTENT_TYPE
    headers[HEADER_FINGERPRINT]["const"] = signal.serializer.fingerprint
    keys = sorted({p.key for p in entry.producers if p.key})
    if keys:
        headers[HEADER_PARTITION_KEY] = {
            "type": "string",
            "description": f"{HEADER_DESCRIPTIONS[HEADER_PARTITION_KEY]} ({', '.join(keys)})",
        }
    return {
        "name": signal.event_type,
        "title": signal.event_type,
        "summary": f"minor version {signal.minor_version}",
        "contentType": AVRO_CONTENT_TYPE,
        "correlationId": {
            "description": "the event id",
            "location": f"$message.header#/{HEADER_ID}",
        },
        "headers": {"type": "object", "required": required, "properties": headers},
        "payload": {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": signal.serializer.schema},
        "bindings": {
            "amqp": {
                "contentEncoding": "binary",
                "messageType": signal.event_type,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _refs(topic: str, entries: list[CatalogEntry]) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{topic}/messages/{e.event_type}"} for e in entries]


def _send(service: ServiceRouting, topic: str, entries: list[CatalogEntry]) -> dict[str, Any]:
    keys = [
        f"{e.event_type}: {p.key}"
        for e in entries
        for p in e.producers
        if p.service == service.name and p.topic == topic and p.key
    ]
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{topic}"},
        "title": f"publish to {topic}",
        "description": (
            "Published from the outbox (or directly, in direct mode) with publisher confirms, "
            "mandatory, persistent; the routing key is the event type."
            + (f" Partition keys ({HEADER_PARTITION_KEY}): {'; '.join(keys)}." if keys else "")
        ),
        "messages": _refs(topic, entries),
        "bindings": {
            "amqp": {
                "cc": [e.event_type for e in entries],
                "deliveryMode": 2,
                "mandatory": True,
                "timestamp": True,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _receive(service: ServiceRouting, topic: str, entries: list[CatalogEntry]) -> dict[str, Any]:
    subscription = next(s for s in service.subscriptions if s.topic == topic)
    keys = list(subscription.event_types or ("#",))
    return {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{topic}"},
        "title": f"consume {topic}",
        "description": (
            f"Consumed from the durable queue {service.queue(subscription)!r}, bound to the "
            f"exchange with {', '.join(keys)}; acknowledged once every receiver's work is "
            "owned by a task or done."
        ),
        "messages": _refs(topic, entries),
        "bindings": {"amqp": {"cc": keys, "ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
    }
