"""The dead-letter store: what a dead letter carries, on the in-memory transport and RabbitMQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from unittest.mock import ANY

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection

from events_celery.bus import topology
from events_celery.bus.dead_letters import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_ORIGIN,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_TIME,
    HEADER_TRACEBACK,
    KEPT_PROPERTIES,
    MAX_TRACEBACK,
    dead_letter,
    plain_headers,
)
from events_celery.bus.dispatch import encode_event
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError, PublishError
from events_celery.metadata import EventMetadata, parse_time
from tests.bus.conftest import DeadLetterStore
from tests.testapp.events import PING

AVRO = "application/avro"


def test_plain_headers_keep_text_and_numbers_and_decode_bytes() -> None:
    headers = {"text": "a", "count": 3, "ratio": 0.5, "flag": True, "raw": b"caf\xc3\xa9"}
    assert plain_headers(headers) == {
        "text": "a",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "raw": "café",
    }


def test_plain_headers_replace_bytes_that_are_not_utf8() -> None:
    assert plain_headers({"raw": b"\xff ok"}) == {"raw": "\ufffd ok"}


def test_plain_headers_drop_what_is_not_text_or_a_number() -> None:
    headers = {
        "x-death": [{"queue": "shop.orders", "count": 1}],
        "table": {"a": 1},
        "none": None,
        "at": datetime(2024, 5, 1, tzinfo=UTC),
        "amount": Decimal("1.50"),
        "kept": "yes",
    }
    assert plain_headers(headers) == {"kept": "yes"}


def test_no_headers_are_no_plain_headers() -> None:
    assert plain_headers(None) == {}
    assert plain_headers({}) == {}


HEADER_VALUES = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.datetimes(timezones=st.just(UTC)),
)


@given(headers=st.dictionaries(st.text(max_size=10), HEADER_VALUES, max_size=8))
def test_plain_headers_are_the_text_and_numbers_and_survive_json(headers: dict[str, Any]) -> None:
    plain = plain_headers(headers)
    assert set(plain) == {k for k, v in headers.items() if isinstance(v, str | bytes | int | float)}
    assert json.loads(json.dumps(plain)) == plain


def test_a_dead_letter_keeps_the_body_and_plain_headers_and_says_why_and_when(
    memory_store: DeadLetterStore,
) -> None:
    body = b"\x00\xff not Avro"
    headers = {"ce_id": "e-1", "ce_type": b"org.example.test.ping.v1", "x-death": [{"count": 1}]}
    before = datetime.now(UTC)
    dead_letter(bus_settings(), body, headers, reason="undecodable Avro body", content_type=AVRO)
    after = datetime.now(UTC)

    [message] = memory_store.take()
    assert message.body == body
    assert message.content_type == AVRO
    assert message.headers == {
        "ce_id": "e-1",
        "ce_type": "org.example.test.ping.v1",
        HEADER_REASON: "undecodable Avro body",
        HEADER_TIME: ANY,
    }
    assert before <= parse_time(message.headers[HEADER_TIME]) <= after


def test_a_failed_receiver_is_named_with_its_error_traceback_attempts_and_origin(
    memory_store: DeadLetterStore,
) -> None:
    dead_letter(
        bus_settings(),
        b"body",
        {"ce_id": "e-2"},
        reason="receiver failed after 3 attempt(s)",
        content_type=AVRO,
        origin="shop/org.example.test.ping.v1",
        receiver="billing.receivers.on_ping",
        error="ValueError: no such customer",
        traceback="Traceback (most recent call last):\nValueError: no such customer\n",
        attempts=3,
    )

    [message] = memory_store.take()
    assert {k: v for k, v in message.headers.items() if k != HEADER_TIME} == {
        "ce_id": "e-2",
        HEADER_REASON: "receiver failed after 3 attempt(s)",
        HEADER_ORIGIN: "shop/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_ERROR: "ValueError: no such customer",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: no such customer\n",
        HEADER_ATTEMPTS: "3",  # every header events_celery adds is text
    }


def test_a_long_error_keeps_its_start_and_a_long_traceback_its_end(
    memory_store: DeadLetterStore,
) -> None:
    error = "ValueError: " + "x" * 5000
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: end\n"
    dead_letter(
        bus_settings(),
        b"body",
        {},
        reason="receiver failed after 1 attempt(s)",
        content_type=AVRO,
        error=error,
        traceback=traceback,
    )

    [message] = memory_store.take()
    assert message.headers[HEADER_ERROR] == error[:2000]
    assert len(message.headers[HEADER_TRACEBACK]) == MAX_TRACEBACK
    assert message.headers[HEADER_TRACEBACK].endswith("  frame\nValueError: end\n")


def test_dead_lettering_again_replaces_the_reasons_of_the_first_time(
    memory_store: DeadLetterStore,
) -> None:
    earlier = {
        "ce_id": "e-3",
        HEADER_REASON: "the first reason",
        HEADER_ATTEMPTS: "5",
        HEADER_RECEIVER: "an.earlier.receiver",
        HEADER_TRACEBACK: "the first traceback",
    }
    dead_letter(
        bus_settings(), b"body", earlier, reason="the second reason", content_type=AVRO, attempts=1
    )

    [message] = memory_store.take()
    assert message.headers[HEADER_REASON] == "the second reason"
    assert message.headers[HEADER_ATTEMPTS] == "1"
    assert HEADER_RECEIVER not in message.headers  # nothing of the first time is left over
    assert HEADER_TRACEBACK not in message.headers
    assert message.headers["ce_id"] == "e-3"


def test_only_the_properties_that_identify_the_event_are_kept(
    memory_store: DeadLetterStore,
) -> None:
    identifying = {
        "message_id": "e-4",
        "type": "org.example.test.ping.v1",
        "timestamp": 1_714_566_615,
        "app_id": "shop",
        "correlation_id": "c-1",
    }
    assert set(identifying) == KEPT_PROPERTIES
    others = {"reply_to": "somewhere", "expiration": "1000", "priority": 9, "content_type": "x/y"}
    dead_letter(
        bus_settings(),
        b"body",
        {},
        reason="r",
        content_type=AVRO,
        properties={**identifying, **others},
    )

    [message] = memory_store.take()
    assert {k: message.properties[k] for k in KEPT_PROPERTIES} == identifying
    assert "reply_to" not in message.properties
    assert "expiration" not in message.properties
    assert message.properties.get("priority", 0) == 0
    assert message.content_type == AVRO  # the argument, not the original's property


def test_a_body_of_unknown_content_type_is_parked_as_persistent_binary(
    memory_store: DeadLetterStore,
) -> None:
    dead_letter(bus_settings(), b"\x01\x02", None, reason="no content type", content_type=None)

    [message] = memory_store.take()
    assert message.body == b"\x01\x02"
    assert message.content_type == "application/octet-stream"
    assert message.content_encoding == "binary"
    assert message.properties["delivery_mode"] == 2


def test_a_dead_letter_the_broker_does_not_take_raises_publish_error(settings: Any) -> None:
    settings.EVENT_BUS_SERVICE_NAME = "dead-letters-unreachable"
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 1.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_retries": 0}

    with pytest.raises(PublishError, match="not confirmed by the broker"):
        dead_letter(bus_settings(), b"body", {}, reason="r", content_type=AVRO)


def ping_message(n: int) -> Any:
    metadata = EventMetadata.create(PING.event_type, source="dead-letter-tests")
    return encode_event(PING, metadata, PING.serializer.encode({"n": n}))


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_dead_letter_is_a_persistent_copy_of_the_event_with_its_reasons(
    rabbitmq_store: DeadLetterStore,
) -> None:
    event = ping_message(5)
    headers = {**event.headers, "count": 2, "ratio": 0.25, "flag": True}
    properties = {**event.properties, "correlation_id": "c-1", "reply_to": "x", "priority": 7}
    dead_letter(
        bus_settings(),
        event.body,
        headers,
        reason="receiver failed after 2 attempt(s)",
        content_type=AVRO,
        origin="pings/org.example.test.ping.v1",
        receiver="billing.receivers.on_ping",
        error="ValueError: boom",
        traceback="Traceback (most recent call last):\nValueError: boom\n",
        attempts=2,
        properties=properties,
    )

    [message] = rabbitmq_store.take()
    assert PING.serializer.decode(message.body) == {"n": 5}
    assert {k: v for k, v in message.headers.items() if k != HEADER_TIME} == {
        **headers,
        HEADER_REASON: "receiver failed after 2 attempt(s)",
        HEADER_ORIGIN: "pings/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_ERROR: "ValueError: boom",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: boom\n",
        HEADER_ATTEMPTS: "2",
    }
    parse_time(message.headers[HEADER_TIME])
    assert {k: message.properties[k] for k in KEPT_PROPERTIES} == {
        k: properties[k] for k in KEPT_PROPERTIES
    }
    assert "reply_to" not in message.properties
    assert message.properties["priority"] == 0
    assert message.properties["delivery_mode"] == 2
    assert (message.content_type, message.content_encoding) == (AVRO, "binary")


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_longest_error_and_traceback_fit_in_any_script(
    rabbitmq_store: DeadLetterStore,
) -> None:
    # Four bytes a character in UTF-8: the most a header of this many characters can take.
    error, traceback = "\U0001f525" * 10_000, "\U0001f525" * 50_000
    dead_letter(
        bus_settings(),
        b"body",
        {},
        reason="receiver failed after 1 attempt(s)",
        content_type=AVRO,
        error=error,
        traceback=traceback,
    )

    [message] = rabbitmq_store.take()
    assert message.headers[HEADER_ERROR] == error[:2000]
    assert message.headers[HEADER_TRACEBACK] == traceback[-MAX_TRACEBACK:]


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_store_is_created_with_the_configured_queue_type(
    rabbitmq_store: DeadLetterStore, rabbitmq_url: str, settings: Any
) -> None:
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    dead_letter(bus_settings(), b"body", {}, reason="r", content_type=AVRO)

    assert len(rabbitmq_store.take()) == 1
    classic = topology.dead_letter_queue(rabbitmq_store.service, "classic")
    with (
        Connection(rabbitmq_url) as connection,
        pytest.raises(ConfigurationError, match="already exists on the broker"),
    ):
        topology.declare(connection, topology.Topology(exchanges=(), queues=(classic,)))
