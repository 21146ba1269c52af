"""The dead-letter store: the row a dead letter writes, and the broker queue it falls back to."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.bus.dead_letters.store import (
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    Failure,
    Reason,
    dead_letter,
    text_headers,
)
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError, PublishError
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import (
    HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_ERROR,
    HEADER_ORIGIN,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_TRACEBACK,
    KEPT_PROPERTIES,
    MAX_ERROR,
    MAX_TRACEBACK,
    encode_event,
    parse_time,
)
from tests.bus.conftest import DeadLetterStore
from tests.testapp.events import PING

AVRO = "application/avro"
DB = pytest.mark.django_db(transaction=True)


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


def test_text_headers_are_text_and_json_for_the_rest() -> None:
    headers = {"ce_id": "e-1", "count": 3, "raw": b"caf\xc3\xa9", "x-death": [{"count": 1}]}
    texts, truncated = text_headers(headers)
    assert texts == {"ce_id": "e-1", "count": "3", "raw": "café", "x-death": '[{"count": 1}]'}
    assert not truncated


def test_a_long_header_value_keeps_its_start_and_is_flagged() -> None:
    texts, truncated = text_headers({"ce_id": "e-1", "x-bulky": "b" * (MAX_HEADER_VALUE + 10)})
    assert texts["x-bulky"] == "b" * MAX_HEADER_VALUE
    assert texts["ce_id"] == "e-1"
    assert truncated


def test_headers_past_the_total_bound_are_left_out_but_the_wire_headers_are_kept() -> None:
    bulky = {f"x-bulk-{n}": "b" * MAX_HEADER_VALUE for n in range(MAX_HEADERS // MAX_HEADER_VALUE)}
    texts, truncated = text_headers({**bulky, "ce_type": "t.v1", "ce_id": "e-1"})
    assert truncated
    assert texts["ce_type"] == "t.v1"
    assert texts["ce_id"] == "e-1"
    assert sum(len(k) + len(v) for k, v in texts.items()) <= MAX_HEADERS
    assert len(texts) < len(bulky) + 2


@given(headers=st.dictionaries(st.text(max_size=10), HEADER_VALUES, max_size=8))
def test_text_headers_are_always_text_that_survives_json(headers: dict[str, Any]) -> None:
    texts, _ = text_headers(headers)
    assert all(isinstance(v, str) for v in texts.values())
    assert json.loads(json.dumps(texts)) == texts


def test_a_failure_names_one_of_the_reasons() -> None:
    assert {r.value for r in Reason} == {
        "receiver-failed",
        "gave-up",
        "redelivered",
        "receiver-gone",
        "poison",
        "key-held",
    }
    with pytest.raises(ValueError, match="reason"):
        Failure("receiver failed after 3 attempt(s)", "x")


def ping_message(n: int) -> Any:
    metadata = EventMetadata.create(PING.event_type, source="dead-letter-tests")
    return encode_event(PING, metadata, PING.serializer.encode({"n": n}))


def doomed(attempts: int = 3, **changes: Any) -> Failure:
    return Failure(
        Reason.RECEIVER_FAILED,
        f"receiver failed after {attempts} attempt(s): ValueError: no such customer",
        receiver="billing.receivers.on_ping",
        traceback="Traceback (most recent call last):\nValueError: no such customer\n",
        attempts=attempts,
        origin="shop/org.example.test.ping.v1",
        **changes,
    )


@DB
def test_a_receiver_that_used_up_its_attempts_is_one_row_with_everything_about_it() -> None:
    event = ping_message(5)
    before = datetime.now(UTC)
    where = dead_letter(bus_settings(), event.body, event.headers, doomed(), content_type=AVRO)

    assert where == "database"
    row = DeadLetter.objects.get()
    assert row.service == "tests"
    assert row.event_id == uuid.UUID(event.headers["ce_id"])
    assert row.event_type == PING.event_type
    assert row.receiver == "billing.receivers.on_ping"
    assert row.reason == Reason.RECEIVER_FAILED
    assert row.error == "receiver failed after 3 attempt(s): ValueError: no such customer"
    assert row.traceback.endswith("ValueError: no such customer\n")
    assert not row.traceback_truncated
    assert row.attempts == 3
    assert row.headers == event.headers
    assert not row.headers_truncated
    assert PING.serializer.decode(bytes(row.body)) == {"n": 5}
    assert not row.body_truncated
    assert row.content_type == AVRO
    assert row.origin == "shop/org.example.test.ping.v1"
    assert before <= row.first_failed_at == row.last_failed_at <= datetime.now(UTC)
    assert (row.failures, row.status, row.replays) == (1, "pending", 0)


@DB
def test_a_long_error_keeps_its_start_and_a_long_traceback_its_end_flagged() -> None:
    error = "ValueError: " + "x" * 5000
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: end\n"
    event = ping_message(1)
    failure = doomed(attempts=1)
    failure = Failure(failure.reason, error, receiver=failure.receiver, traceback=traceback)
    dead_letter(bus_settings(), event.body, event.headers, failure, content_type=AVRO)

    row = DeadLetter.objects.get()
    assert row.error == error[:MAX_ERROR]
    assert len(row.traceback) == MAX_TRACEBACK
    assert row.traceback.endswith("  frame\nValueError: end\n")
    assert row.traceback_truncated


@DB
def test_huge_headers_and_a_body_above_the_size_limit_are_kept_bounded_and_flagged(
    settings: Any,
) -> None:
    settings.EVENT_BUS_MAX_MESSAGE_SIZE = 1000
    event = ping_message(1)
    headers = {**event.headers, "x-bulky": "b" * 131_000}
    body = b"\x01" * 5000
    dead_letter(
        bus_settings(), body, headers, Failure(Reason.POISON, "too large"), content_type=AVRO
    )

    row = DeadLetter.objects.get()
    assert row.headers_truncated
    assert len(row.headers["x-bulky"]) == MAX_HEADER_VALUE
    assert row.headers["ce_id"] == event.headers["ce_id"]
    assert bytes(row.body) == body[:1000]
    assert row.body_truncated


@DB
def test_the_same_event_and_receiver_dead_lettered_again_updates_its_row() -> None:
    event = ping_message(2)
    dead_letter(bus_settings(), event.body, event.headers, doomed(), content_type=AVRO)
    first = DeadLetter.objects.get()
    DeadLetter.objects.update(status=DeadLetter.Status.REPLAYING, replays=1)

    again = Failure(
        Reason.RECEIVER_FAILED, "receiver failed after 3 attempt(s): KeyError: 'id'",
        receiver="billing.receivers.on_ping", traceback="KeyError: 'id'\n", attempts=3,
    )  # fmt: skip
    dead_letter(bus_settings(), event.body, event.headers, again, content_type=AVRO)

    row = DeadLetter.objects.get()
    assert row.pk == first.pk
    assert row.failures == 2
    assert row.status == "pending"
    assert row.error == "receiver failed after 3 attempt(s): KeyError: 'id'"
    assert row.traceback == "KeyError: 'id'\n"
    assert row.first_failed_at == first.first_failed_at < row.last_failed_at
    assert row.replays == 1


@DB
def test_another_receiver_of_the_same_event_gets_a_row_of_its_own() -> None:
    event = ping_message(3)
    dead_letter(bus_settings(), event.body, event.headers, doomed(), content_type=AVRO)
    other = Failure(Reason.GAVE_UP, "gave up", receiver="billing.receivers.other")
    dead_letter(bus_settings(), event.body, event.headers, other, content_type=AVRO)
    whole = Failure(Reason.REDELIVERED, "came back unfinished 4 time(s)")
    dead_letter(bus_settings(), event.body, event.headers, whole, content_type=AVRO)

    rows = DeadLetter.objects.order_by("id")
    assert [(r.receiver, r.reason) for r in rows] == [
        ("billing.receivers.on_ping", "receiver-failed"),
        ("billing.receivers.other", "gave-up"),
        ("", "redelivered"),
    ]


@DB
def test_two_poison_messages_claiming_one_event_id_keep_a_row_each() -> None:
    event = ping_message(6)
    for body in (b"\xff first", b"\xff second"):
        dead_letter(
            bus_settings(), body, event.headers, Failure(Reason.POISON, "bad"), content_type=AVRO
        )

    rows = DeadLetter.objects.order_by("id")
    assert [bytes(r.body) for r in rows] == [b"\xff first", b"\xff second"]
    assert {r.event_id for r in rows} == {uuid.UUID(event.headers["ce_id"])}


@DB
def test_the_same_poison_message_dead_lettered_again_updates_its_row() -> None:
    """Its task ran twice (a batch came back from the broker): one row, failures 2."""
    event = ping_message(6)
    for error in ("first", "again"):
        dead_letter(
            bus_settings(),
            b"\xff same",
            event.headers,
            Failure(Reason.POISON, error),
            content_type=AVRO,
        )

    row = DeadLetter.objects.get()
    assert (bytes(row.body), row.failures, row.error, row.status) == (
        b"\xff same",
        2,
        "again",
        "pending",
    )


@DB
def test_a_replay_that_fails_again_updates_the_row_it_replayed() -> None:
    event = ping_message(7)
    dead_letter(
        bus_settings(), b"\xff", event.headers, Failure(Reason.POISON, "first"), content_type=AVRO
    )
    first = DeadLetter.objects.get()
    DeadLetter.objects.update(status=DeadLetter.Status.REPLAYING)

    again = Failure(Reason.POISON, "still bad", replay_of=first.pk)
    dead_letter(bus_settings(), b"\xff", event.headers, again, content_type=AVRO)

    row = DeadLetter.objects.get()
    assert (row.pk, row.failures, row.status, row.error) == (first.pk, 2, "pending", "still bad")


@DB
def test_poison_messages_without_a_valid_event_id_each_get_a_row() -> None:
    for ce_id in (None, "not-a-uuid", "not-a-uuid"):
        headers = {"ce_type": "x.v1"} if ce_id is None else {"ce_id": ce_id, "ce_type": "x.v1"}
        dead_letter(
            bus_settings(), b"\xff", headers, Failure(Reason.POISON, "bad"), content_type="x/y"
        )

    rows = list(DeadLetter.objects.all())
    assert len(rows) == 3
    assert {r.event_id for r in rows} == {None}
    assert {r.event_type for r in rows} == {"x.v1"}


@DB
def test_a_hostile_event_type_too_long_for_its_column_is_cut_not_refused() -> None:
    dead_letter(
        bus_settings(),
        b"\xff",
        {"ce_type": "t" * 1000, "ce_id": str(uuid.uuid4())},
        Failure(Reason.POISON, "bad", origin="o" * 1000),
        content_type="c" * 1000,
    )

    row = DeadLetter.objects.get()
    assert (len(row.event_type), len(row.origin), len(row.content_type)) == (255, 500, 255)


def test_when_the_table_is_missing_the_dead_letter_goes_to_the_broker_queue(
    table_missing: None, memory_store: DeadLetterStore
) -> None:
    event = ping_message(4)
    headers = {**event.headers, "x-death": [{"count": 1}]}
    before = datetime.now(UTC)
    where = dead_letter(bus_settings(), event.body, headers, doomed(), content_type=AVRO)

    assert where == "broker"
    [message] = memory_store.take()
    assert message.body == event.body
    assert message.content_type == AVRO
    assert {k: v for k, v in message.headers.items() if k != HEADER_DEAD_LETTERED_AT} == {
        **event.headers,
        HEADER_REASON: "receiver-failed",
        HEADER_ERROR: "receiver failed after 3 attempt(s): ValueError: no such customer",
        HEADER_ORIGIN: "shop/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: no such customer\n",
        HEADER_ATTEMPTS: "3",  # every header events_celery adds is text
    }
    assert before <= parse_time(message.headers[HEADER_DEAD_LETTERED_AT]) <= datetime.now(UTC)


def test_in_the_broker_queue_a_dead_letter_again_replaces_the_reasons_of_the_first_time(
    table_missing: None, memory_store: DeadLetterStore
) -> None:
    earlier = {
        "ce_id": "e-3",
        HEADER_REASON: "the first reason",
        HEADER_ATTEMPTS: "5",
        HEADER_RECEIVER: "an.earlier.receiver",
        HEADER_TRACEBACK: "the first traceback",
    }
    failure = Failure(Reason.POISON, "the second error", attempts=1)
    dead_letter(bus_settings(), b"body", earlier, failure, content_type=AVRO)

    [message] = memory_store.take()
    assert message.headers[HEADER_REASON] == "poison"
    assert message.headers[HEADER_ERROR] == "the second error"
    assert message.headers[HEADER_ATTEMPTS] == "1"
    assert HEADER_RECEIVER not in message.headers  # nothing of the first time is left over
    assert HEADER_TRACEBACK not in message.headers
    assert message.headers["ce_id"] == "e-3"


def test_in_the_broker_queue_only_the_properties_that_identify_the_event_are_kept(
    table_missing: None, memory_store: DeadLetterStore
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
        Failure(Reason.POISON, "r"),
        content_type=AVRO,
        properties={**identifying, **others},
    )

    [message] = memory_store.take()
    assert {k: message.properties[k] for k in KEPT_PROPERTIES} == identifying
    assert "reply_to" not in message.properties
    assert "expiration" not in message.properties
    assert message.properties.get("priority", 0) == 0
    assert message.content_type == AVRO  # the argument, not the original's property


def test_in_the_broker_queue_a_body_of_unknown_content_type_is_persistent_binary(
    table_missing: None, memory_store: DeadLetterStore
) -> None:
    dead_letter(bus_settings(), b"\x01\x02", None, Failure(Reason.POISON, "r"), content_type=None)

    [message] = memory_store.take()
    assert message.body == b"\x01\x02"
    assert message.content_type == "application/octet-stream"
    assert message.content_encoding == "binary"
    assert message.properties["delivery_mode"] == 2


def test_when_neither_the_database_nor_the_broker_takes_it_publish_error_is_raised(
    table_missing: None, settings: Any
) -> None:
    settings.EVENT_BUS_SERVICE_NAME = "dead-letters-unreachable"
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 1.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 1}

    with pytest.raises(PublishError, match="not confirmed by the broker"):
        dead_letter(bus_settings(), b"body", {}, Failure(Reason.POISON, "r"), content_type=AVRO)


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_fallback_dead_letter_is_a_persistent_copy_of_the_event_with_its_reasons(
    table_missing: None, rabbitmq_store: DeadLetterStore
) -> None:
    event = ping_message(5)
    headers = {**event.headers, "count": 2, "ratio": 0.25, "flag": True}
    properties = {**event.properties, "correlation_id": "c-1", "reply_to": "x", "priority": 7}
    dead_letter(
        bus_settings(),
        event.body,
        headers,
        Failure(
            Reason.RECEIVER_FAILED,
            "receiver failed after 2 attempt(s): ValueError: boom",
            origin="pings/org.example.test.ping.v1",
            receiver="billing.receivers.on_ping",
            traceback="Traceback (most recent call last):\nValueError: boom\n",
            attempts=2,
        ),
        content_type=AVRO,
        properties=properties,
    )

    [message] = rabbitmq_store.take()
    assert PING.serializer.decode(message.body) == {"n": 5}
    assert {k: v for k, v in message.headers.items() if k != HEADER_DEAD_LETTERED_AT} == {
        **headers,
        HEADER_REASON: "receiver-failed",
        HEADER_ORIGIN: "pings/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_ERROR: "receiver failed after 2 attempt(s): ValueError: boom",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: boom\n",
        HEADER_ATTEMPTS: "2",
    }
    parse_time(message.headers[HEADER_DEAD_LETTERED_AT])
    assert {k: message.properties[k] for k in KEPT_PROPERTIES} == {
        k: properties[k] for k in KEPT_PROPERTIES
    }
    assert "reply_to" not in message.properties
    assert message.properties["priority"] == 0
    assert message.properties["delivery_mode"] == 2
    assert (message.content_type, message.content_encoding) == (AVRO, "binary")


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_longest_error_and_traceback_fit_in_any_script(
    table_missing: None, rabbitmq_store: DeadLetterStore
) -> None:
    # Four bytes a character in UTF-8: the most a header of this many characters can take.
    error, traceback = "\U0001f525" * 10_000, "\U0001f525" * 50_000
    dead_letter(
        bus_settings(),
        b"body",
        {},
        Failure(Reason.RECEIVER_FAILED, error, traceback=traceback),
        content_type=AVRO,
    )

    [message] = rabbitmq_store.take()
    assert message.headers[HEADER_ERROR] == error[:2000]
    assert message.headers[HEADER_TRACEBACK] == traceback[-MAX_TRACEBACK:]


@pytest.mark.rabbitmq
def test_on_rabbitmq_the_store_is_created_with_the_configured_queue_type(
    table_missing: None, rabbitmq_store: DeadLetterStore, rabbitmq_url: str, settings: Any
) -> None:
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    dead_letter(bus_settings(), b"body", {}, Failure(Reason.POISON, "r"), content_type=AVRO)

    assert len(rabbitmq_store.take()) == 1
    classic = topology.dead_letter_queue(rabbitmq_store.service, "classic")
    with (
        Connection(rabbitmq_url) as connection,
        pytest.raises(ConfigurationError, match="already exists on the broker"),
    ):
        declaring.declare(connection, topology.Topology(exchanges=(), queues=(classic,)))
