"""A plain pika client (tests/interop/plain_pika_client.py) and events_celery on one broker."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from django.core.management import call_command

from tests.integration.conftest import Bus, wait_for
from tests.interop import plain_pika_client as client
from tests.testapp.events import ORDER_PLACED, CustomerData, OrderData

pytestmark = pytest.mark.rabbitmq

SCHEMAS = client.SchemaDirectory(Path(__file__).resolve().parents[1] / "interop" / "avro_schemas")
TOPIC = "shop"


def pika_channel(bus: Bus) -> Any:
    # The harness's URL names the default virtual host kombu's way ("//"); pika spells it "%2F".
    parts = urlsplit(bus.url)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            parts.hostname,
            parts.port or 5672,
            "/",
            pika.PlainCredentials(parts.username or "guest", parts.password or "guest"),
        )
    )
    return connection, connection.channel()


def test_a_plain_pika_client_decodes_an_event_published_by_events_celery(
    bus: Bus, settings: Any
) -> None:
    bus.topics.add(TOPIC)
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {TOPIC: {"event_key_field": "order.customer.id"}}
    }
    call_command("declare_event_topology", stdout=io.StringIO())
    connection, channel = pika_channel(bus)
    try:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, f"{bus.prefix}{TOPIC}", routing_key=ORDER_PLACED.event_type)
        order = OrderData(
            id=uuid.uuid4(),
            customer=CustomerData(id=uuid.uuid4(), email="ada@example.org"),
            total=Decimal("1234.50"),
            placed_at=datetime.now(UTC),
        )
        sent = ORDER_PLACED.send_event(order=order).metadata
        assert sent is not None

        event = client.receive(channel, queue, SCHEMAS)
    finally:
        connection.close()

    assert (event["id"], event["type"], event["source"]) == (sent.id, sent.event_type, "tests")
    assert (event["time"], event["minor_version"]) == (sent.time, sent.minor_version)
    assert event["partition_key"] == str(order.customer.id)
    assert event["payload"]["order"]["customer"] == {
        "id": order.customer.id,
        "email": "ada@example.org",
    }
    assert event["payload"]["order"]["total"] == Decimal("1234.50")
    assert event["payload"]["order"]["mode"] == "AUDIT"


def test_a_real_worker_delivers_an_event_published_by_a_plain_pika_client(bus: Bus) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {"event_types": [ORDER_PLACED.event_type]}})  # declares it all
    record = {
        "order": {
            "id": uuid.uuid4(),
            "customer": {"id": uuid.uuid4(), "email": "grace@example.org"},
            "total": Decimal("99.90"),
            "placed_at": datetime.now(UTC),
            "mode": "VERIFIED",
            "note": None,
        }
    }
    connection, channel = pika_channel(bus)
    try:
        event_id = client.publish(
            channel,
            f"{bus.prefix}{TOPIC}",
            SCHEMAS,
            ORDER_PLACED.event_type,
            record,
            source="legacy-shop",
        )
    finally:
        connection.close()

    [delivered] = wait_for(
        lambda: bus.records(service=billing, receiver="on_order", event_id=str(event_id)),
        "the billing worker to run on_order for the pika client's event",
    )
    assert (delivered["total"], delivered["email"]) == ("99.90", "grace@example.org")
