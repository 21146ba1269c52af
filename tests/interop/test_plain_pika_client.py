"""The plain pika client against the wire format, without a broker."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pika
import pytest
from django.core.management import call_command

from events_celery import schema_store
from events_celery.metadata import EventMetadata
from events_celery.wire import decode_event, encode_event
from tests.interop import plain_pika_client as client
from tests.testapp.events import ORDER_PLACED, CustomerData, Mode, OrderData

HERE = Path(__file__).resolve().parent
SCHEMAS = client.SchemaDirectory(HERE / "avro_schemas")


def test_the_client_imports_nothing_from_events_celery():
    # A fresh interpreter loads the client file alone (no package __init__ of tests/).
    path = HERE / "plain_pika_client.py"
    ours = ("events_celery", "tests", "django", "kombu", "celery")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('client', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {ours!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_the_committed_schemas_are_the_current_definitions():
    out = io.StringIO()
    call_command(
        "check_avro_schemas",
        ORDER_PLACED.event_type,
        "org.example.test.ping.v1",
        "--dir",
        str(HERE / "avro_schemas"),
        stdout=out,
        stderr=io.StringIO(),
    )


def _order() -> OrderData:
    return OrderData(
        id=uuid.uuid4(),
        customer=CustomerData(id=uuid.uuid4(), email="ada@example.org"),
        total=Decimal("1234.50"),
        placed_at=datetime(2026, 11, 29, 6, 30, 1, 250, tzinfo=UTC),
        mode=Mode.VERIFIED,
        note=None,
    )


def test_the_client_decodes_a_message_events_celery_encoded():
    order = _order()
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="shop")
    payload = {"order": order}
    message = encode_event(
        ORDER_PLACED, metadata, ORDER_PLACED.serializer.encode(payload), partition_key="k-1"
    )
    properties = pika.BasicProperties(headers=message.headers, **message.properties)

    event = client.decode(SCHEMAS, ORDER_PLACED.event_type, properties, message.body)

    assert event["id"] == metadata.id
    assert event["time"] == metadata.time
    assert (event["source"], event["minor_version"], event["partition_key"]) == ("shop", 0, "k-1")
    assert event["payload"]["order"] == {
        "id": order.id,
        "customer": {"id": order.customer.id, "email": "ada@example.org"},
        "total": Decimal("1234.50"),
        "placed_at": order.placed_at,
        "mode": "VERIFIED",
        "note": None,
    }


def test_events_celery_decodes_a_message_the_client_encoded():
    order = _order()
    published = []

    class Channel:  # records what pika would send; the broker round trip is in tests/integration
        def confirm_delivery(self):
            pass

        def basic_publish(self, exchange, routing_key, body, properties, mandatory):
            published.append((exchange, routing_key, body, properties, mandatory))

    record = {
        "order": {
            "id": order.id,
            "customer": {"id": order.customer.id, "email": order.customer.email},
            "total": order.total,
            "placed_at": order.placed_at,
            "mode": "VERIFIED",
            "note": "leave at the door",
        }
    }
    event_id = client.publish(
        Channel(), "p.shop", SCHEMAS, ORDER_PLACED.event_type, record, source="legacy"
    )
    [(exchange, key, body, properties, mandatory)] = published
    assert (exchange, key, mandatory) == ("p.shop", ORDER_PLACED.event_type, True)

    received = decode_event(
        properties.headers,
        body,
        content_type=properties.content_type,
        max_size=1 << 20,
        writer_schemas=schema_store.find_schema,
        routing_key=key,
    )
    assert received.signal is ORDER_PLACED
    assert received.metadata.id == event_id
    assert received.metadata.source == "legacy"
    assert received.payload["order"] == OrderData(
        id=order.id,
        customer=order.customer,
        total=order.total,
        placed_at=order.placed_at,
        mode=Mode.VERIFIED,
        note="leave at the door",
    )


def test_a_message_with_an_unknown_fingerprint_is_refused_by_the_client():
    message = encode_event(
        ORDER_PLACED,
        EventMetadata.create(ORDER_PLACED.event_type, source="shop"),
        ORDER_PLACED.serializer.encode({"order": _order()}),
    )
    headers = {**message.headers, "schemafingerprint": "0000000000000000"}
    properties = pika.BasicProperties(headers=headers, **message.properties)
    with pytest.raises(client.WireFormatError, match=r"no committed schema has fingerprint 0{16}"):
        client.decode(SCHEMAS, ORDER_PLACED.event_type, properties, message.body)
