"""Hostile messages from a plain AMQP client: each is parked, and the worker keeps going.

After every hostile message a valid event is sent; it must still reach the receiver.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import amqp
import pytest

from events_celery.metadata import EventMetadata
from events_celery.wire import OutgoingMessage, encode_event
from tests.faults.report import report
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import ORDER_PLACED, PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"
AVRO = "application/avro"


def valid(n: int) -> OutgoingMessage:
    metadata = EventMetadata.create(PING.event_type, source="plain-client")
    return encode_event(PING, metadata, PING.serializer.encode({"n": n}))


def headers_with(**changes: Any) -> dict[str, Any]:
    headers: dict[str, Any] = dict(valid(0).headers)
    for name, value in changes.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def order_headers() -> dict[str, Any]:
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="plain-client")
    return encode_event(ORDER_PLACED, metadata, b"").headers


#: name -> (body, headers, content type, routing key, expected words in the reason)
Hostile = tuple[bytes, dict[str, Any], str | None, str, str]
HOSTILE: dict[str, Callable[[], Hostile]] = {
    "truncated body": lambda: (valid(300).body[:1], headers_with(), AVRO, PING.event_type, "Avro"),
    "random body": lambda: (os.urandom(64), headers_with(), AVRO, PING.event_type, "Avro"),
    "empty body": lambda: (b"", headers_with(), AVRO, PING.event_type, "Avro"),
    "oversize body": lambda: (
        b"\x00" * (1 << 20 + 1),
        headers_with(),
        AVRO,
        PING.event_type,
        "EVENT_BUS_MAX_MESSAGE_SIZE",
    ),
    # An order starts with a string: its length prefix claims 2 GiB, then the body ends.
    "fake length prefix": lambda: (
        b"\xfe\xff\xff\xff\x0f" + b"x" * 8,
        order_headers(),
        AVRO,
        ORDER_PLACED.event_type,
        "cannot decode the Avro payload (13 bytes)",
    ),
    "pickle content type": lambda: (
        b"\x80\x04K\x01.",
        headers_with(),
        "application/x-python-serialize",
        PING.event_type,
        "content type",
    ),
    "json content type": lambda: (
        b'{"n": 1}',
        headers_with(),
        "application/json",
        PING.event_type,
        "content type",
    ),
    "no content type": lambda: (valid(1).body, headers_with(), None, PING.event_type, "type"),
    "unknown event type": lambda: (
        valid(1).body,
        headers_with(ce_type="org.example.nobody.knows.v1"),
        AVRO,
        "org.example.nobody.knows.v1",
        "unknown event type",
    ),
    "unknown fingerprint": lambda: (
        valid(1).body,
        headers_with(schemafingerprint="0" * 16),
        AVRO,
        PING.event_type,
        "fingerprint",
    ),
    "no headers": lambda: (valid(1).body, {}, AVRO, PING.event_type, "missing"),
    "mistyped headers": lambda: (
        valid(1).body,
        headers_with(ce_minorversion=5, sourcehost=7),
        AVRO,
        PING.event_type,
        "not text",
    ),
    "malformed time": lambda: (
        valid(1).body,
        headers_with(ce_time="yesterday"),
        AVRO,
        PING.event_type,
        "ce_time",
    ),
    "id not a uuid": lambda: (
        valid(1).body,
        headers_with(ce_id="42"),
        AVRO,
        PING.event_type,
        "not a UUID",
    ),
    "routing key disagrees with ce_type": lambda: (
        valid(1).body,
        headers_with(ce_type=ORDER_PLACED.event_type),
        AVRO,
        PING.event_type,
        "routed with",
    ),
    "huge header table": lambda: (
        valid(1).body,
        headers_with(**{f"x-junk-{i}": "j" * 1000 for i in range(100)}, ce_id="nope"),
        AVRO,
        PING.event_type,
        "not a UUID",
    ),
}


def test_hostile_messages_are_parked_and_the_worker_keeps_delivering(
    fault_bus: Bus, settings: Any
) -> None:
    billing = fault_bus.service_name("billing")
    fault_bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PUBLISH_MODE = "direct"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {TOPIC: {"enabled": True}}}
    sent = [str(PING.send_event(n=-1).metadata.id)]
    wait_for(lambda: fault_bus.records(service=billing, n=-1), "the first ping")
    channel = fault_bus.amqp.channel()

    expected = {}
    for n, (name, make) in enumerate(HOSTILE.items()):
        body, headers, content_type, routing_key, words = make()
        properties = {"content_type": content_type} if content_type else {}
        channel.basic_publish(
            amqp.Message(body, application_headers=headers, **properties),
            exchange=f"{fault_bus.prefix}{TOPIC}",
            routing_key=routing_key,
        )
        expected[name] = words
        sent.append(str(PING.send_event(n=n).metadata.id))
        wait_for(lambda n=n: fault_bus.records(service=billing, n=n), f"the ping after {name}")
    tasks = f"{billing}.events_celery.tasks"
    channel.basic_publish(
        amqp.Message(b"not: json", content_type="application/x-yaml"),
        exchange=tasks,
        routing_key=tasks,
    )
    expected["non-JSON on the task queue"] = "undecodable message on the receiver task queue"
    sent.append(str(PING.send_event(n=1000).metadata.id))
    wait_for(lambda: fault_bus.records(service=billing, n=1000), "the last ping")

    reasons: list[str] = []

    def parked() -> bool:
        reasons[:] = [f"{row.reason}: {row.error}" for row in fault_bus.dead_letters(billing)]
        return len(reasons) >= len(expected)

    deadline = time.monotonic() + 60
    while not parked() and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"\nhostile inputs: {len(expected)} sent, {len(reasons)} parked, worker alive")
    counts = Counter(r["event_id"] for r in fault_bus.records(service=billing))
    row = report(
        f"{len(expected)} hostile messages, a valid event after each",
        sent,
        counts,
        phantom=set(counts) - set(sent),  # a hostile message that ran a receiver
    )
    assert row.lost == 0
    assert row.phantom == 0
    missing = [name for name, words in expected.items() if not any(words in r for r in reasons)]
    assert missing == [], f"not parked with the expected reason: {missing}; reasons: {reasons}"
    assert len(reasons) == len(expected), "\n".join(reasons)
    assert fault_bus.depth(f"{billing}.events_celery.dead_letters") == 0  # all in the table
    pings = [r for r in fault_bus.records(service=billing) if r.get("receiver") == "on_ping"]
    assert all(r["from_event_bus"] for r in pings)
    assert fault_bus.records(service=billing, receiver="on_order") == []
    assert all(w.process.poll() is None for w in fault_bus.workers)
