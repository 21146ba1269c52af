"""Encoding: an event ⇄ the headers, properties and body of its message."""

from events_celery import (
    __version__,
)
from events_celery.avro import fingerprint
from events_celery.wire import (
    HEADER_FINGERPRINT,
    HEADER_PARTITION_KEY,
    encode_event,
)
from tests.testapp.events import ORDER_PLACED, PING
from tests.wire.messages import (
    encode,
    make_metadata,
    make_order,
)

# --- encode_event ---------------------------------------------------------------------------


def test_properties_follow_the_wire_format():
    metadata = make_metadata(ORDER_PLACED.event_type)

    message = encode(ORDER_PLACED, {"order": make_order()}, metadata=metadata)

    assert message.properties["content_type"] == "application/avro"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["message_id"] == "12345678-1234-5678-1234-567812345678"
    assert message.properties["type"] == ORDER_PLACED.event_type
    assert message.properties["app_id"] == "shop"
    assert message.properties["timestamp"] == int(metadata.time.timestamp())


def test_headers_follow_the_wire_format():
    message = encode(ORDER_PLACED, {"order": make_order()})

    assert message.headers == {
        "ce_specversion": "1.0",
        "ce_id": "12345678-1234-5678-1234-567812345678",
        "ce_type": ORDER_PLACED.event_type,
        "ce_source": "shop",
        "ce_time": "2024-05-01T12:30:15.654321Z",
        "ce_minorversion": "1",
        "ce_datacontenttype": "application/avro",
        "sourcehost": "web-1",
        "sourcelib": __version__,
        "schemafingerprint": ORDER_PLACED.serializer.fingerprint,
    }


def test_fingerprint_header_is_the_schemas_crc64():
    message = encode(PING, {"n": 1})

    assert message.headers[HEADER_FINGERPRINT] == fingerprint(PING.serializer.schema)
    assert len(message.headers[HEADER_FINGERPRINT]) == 16


def test_partition_key_header_only_when_given():
    without = encode(PING, {"n": 1})
    with_key = encode(PING, {"n": 1}, partition_key="customer-42")

    assert HEADER_PARTITION_KEY not in without.headers
    assert with_key.headers[HEADER_PARTITION_KEY] == "customer-42"


def test_body_is_the_avro_payload_unchanged():
    body = PING.serializer.encode({"n": 7})

    message = encode_event(PING, make_metadata(PING.event_type), body)

    assert message.body == body
