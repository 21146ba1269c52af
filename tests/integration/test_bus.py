"""The event bus against the real local RabbitMQ with real Celery worker processes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from django.db import transaction

from events_celery.bus.dead_letters.store import MAX_HEADER_VALUE
from events_celery.exceptions import PublishError
from events_celery.metadata import EventMetadata
from events_celery.wire import encode_event
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import (
    CRASHING,
    DOOMED,
    FLAKY,
    ORDER_PLACED,
    PICKY,
    PING,
    SLOW,
    CustomerData,
    OrderData,
)

pytestmark = pytest.mark.rabbitmq

TOPIC = "shop"
#: Workers write dead letters to this test's database, where the test reads them.
DB = pytest.mark.django_db(transaction=True)


def route(*signals: Any, topic: str = TOPIC) -> dict[str, Any]:
    return {s.event_type: {topic: {"event_key_field": None, "enabled": True}} for s in signals}


def test_each_subscribing_service_gets_every_event(bus: Bus, settings: Any) -> None:
    billing, notifications = bus.service_name("billing"), bus.service_name("notifications")
    bus.start(billing, {TOPIC: {}})
    bus.start(notifications, {TOPIC: {"event_types": [PING.event_type]}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)

    for n in range(10):
        PING.send_event(n=n)

    for service in (billing, notifications):
        wait_for(lambda s=service: len(bus.records(service=s)) >= 10, f"10 pings in {service}")
        records = bus.records(service=service)
        assert sorted(r["n"] for r in records) == list(range(10))
        assert all(r["from_event_bus"] for r in records)
        assert len({r["event_id"] for r in records}) == 10


def test_payload_travels_intact_with_its_metadata(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {TOPIC: {"event_key_field": "order.customer.id", "enabled": True}}
    }
    order = OrderData(
        id=uuid.uuid4(),
        customer=CustomerData(id=uuid.uuid4(), email="ada@example.org"),
        total=Decimal("1234.50"),
        placed_at=datetime.now(UTC),
    )
    ORDER_PLACED.send_event(order=order)  # declares the exchange on first publish
    queue = bus.probe()
    ORDER_PLACED.send_event(order=order)

    record = wait_for(lambda: bus.records(service=billing, receiver="on_order"), "the order")[0]
    assert record["total"] == "1234.50"
    assert record["email"] == "ada@example.org"
    message = wait_for(lambda: bus.get(queue), "the probe copy of the message")
    assert message.properties["content_type"] == "application/avro"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["type"] == ORDER_PLACED.event_type
    headers = message.properties["application_headers"]
    assert headers["ce_type"] == ORDER_PLACED.event_type
    assert headers["ce_partitionkey"] == str(order.customer.id)
    assert headers["schemafingerprint"] == ORDER_PLACED.serializer.fingerprint


def test_workers_of_one_service_share_the_work(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}}, node="billing-a", batch_size=2)
    bus.start(billing, {TOPIC: {}}, node="billing-b", batch_size=2)
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)

    for n in range(200):
        PING.send_event(n=n)

    wait_for(lambda: len(bus.records(service=billing)) >= 200, "200 pings handled")
    records = bus.records(service=billing)
    assert sorted(r["n"] for r in records) == list(range(200)), "each event handled once"
    assert {r["node"] for r in records} == {"billing-a", "billing-b"}


def test_a_failing_receiver_is_retried_alone(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(FLAKY)

    FLAKY.send_event(n=7)

    wait_for(lambda: bus.records(service=billing, receiver="flaky", outcome="ok"), "flaky ok")
    flaky = bus.records(service=billing, receiver="flaky")
    assert [r["outcome"] for r in flaky] == ["failed", "failed", "ok"]
    bus.wait_idle(billing)  # a wrong re-run of the steady receiver has run by then
    assert len(bus.records(service=billing, receiver="steady")) == 1


@DB
def test_a_receiver_failing_every_attempt_is_dead_lettered(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED)

    sent = DOOMED.send_event(n=13).metadata

    [row] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert row.event_id == sent.id
    assert row.event_type == DOOMED.event_type
    assert row.receiver == "tests.integration.receivers.handlers.doomed"
    assert row.reason == "receiver-failed"
    assert row.attempts == 3
    assert row.error.startswith("receiver failed after 3 attempt(s): ValueError: doomed")
    assert "ValueError: doomed receiver always fails (n=13)" in row.traceback
    assert row.headers["ce_id"] == str(sent.id)
    assert row.origin == f"{bus.prefix}{TOPIC}/{DOOMED.event_type}"
    assert row.content_type == "application/avro"
    assert DOOMED.serializer.decode(bytes(row.body)) == {"n": 13}
    assert (row.status, row.failures) == ("pending", 1)
    assert len(bus.records(service=billing, receiver="doomed")) == 3
    assert bus.depth(f"{billing}.events_celery.dead_letters") == 0


@DB
def test_a_dead_letter_with_headers_near_the_frame_size_is_stored_bounded_and_flagged(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED)
    PING.send_event(n=0)  # declares the topic exchange
    message = encode_event(
        DOOMED,
        EventMetadata.create(DOOMED.event_type, source="plain-client"),
        DOOMED.serializer.encode({"n": 7}),
    )
    # The event fits in a frame (131,072 bytes); with the traceback and the other dead-letter
    # headers added, a dead letter on the broker would not: in the table it is bounded.
    headers = {**message.headers, "x-bulky": "b" * 130_000}
    _publish_raw(bus, message.body, headers, content_type="application/avro")

    [row] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert row.reason == "receiver-failed"
    assert row.headers_truncated
    assert row.headers["x-bulky"] == "b" * MAX_HEADER_VALUE
    assert row.headers["ce_id"] == message.headers["ce_id"]
    assert len(bus.records(service=billing, receiver="doomed")) == 3  # never re-run


def _publish_raw(bus: Bus, body: bytes, headers: dict[str, Any], **properties: Any) -> None:
    channel = bus.amqp.channel()
    channel.basic_publish(
        amqp.Message(body, application_headers=headers, **properties),
        exchange=f"{bus.prefix}{TOPIC}",
        routing_key=headers.get("ce_type", PING.event_type),
    )
    channel.close()


@DB
def test_undecodable_messages_are_dead_lettered_and_the_worker_keeps_going(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)
    PING.send_event(n=1)
    wait_for(lambda: bus.records(service=billing, n=1), "the first ping")
    good = encode_event(
        PING,
        EventMetadata.create(PING.event_type, source="plain-client"),
        PING.serializer.encode({"n": 2}),
    )
    avro = {"content_type": "application/avro"}
    unknown = {**good.headers, "ce_type": "org.example.nobody.defines.this.v1"}
    _publish_raw(bus, b"\xff\xff\xff garbage", good.headers, **avro)
    _publish_raw(bus, good.body, unknown, **avro)
    _publish_raw(bus, good.body, {"ce_type": PING.event_type}, **avro)
    _publish_raw(bus, b'{"n": 2}', good.headers, content_type="application/json")
    _publish_raw(bus, good.body, {**good.headers, "schemafingerprint": "0" * 16}, **avro)
    PING.send_event(n=3)

    wait_for(lambda: bus.records(service=billing, n=3), "the ping after the poison messages")
    wait_for(lambda: len(bus.dead_letters(billing)) == 5, "the 5 dead letters")
    rows = bus.dead_letters(billing)
    assert {row.reason for row in rows} == {"poison"}
    assert {row.receiver for row in rows} == {""}
    reasons = [row.error for row in rows]
    joined = "\n".join(reasons)
    assert "undecodable Avro body" in joined
    assert "unknown event type 'org.example.nobody.defines.this.v1'" in joined
    assert "is missing" in joined
    assert "content type is 'application/json'" in joined
    assert "unknown writer schema fingerprint" in joined
    assert bus.records(service=billing, n=2) == []


@DB
def test_the_routing_key_decides_not_the_ce_type_header(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {"event_types": [PING.event_type]}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)
    PING.send_event(n=1)
    wait_for(lambda: bus.records(service=billing, n=1), "the first ping")
    # Routed as a PING (which billing subscribes to), but its ce_type claims ORDER_PLACED.
    forged = encode_event(
        ORDER_PLACED,
        EventMetadata.create(ORDER_PLACED.event_type, source="plain-client"),
        ORDER_PLACED.serializer.encode(
            {
                "order": OrderData(
                    id=uuid.uuid4(),
                    customer=CustomerData(id=uuid.uuid4(), email="eve@example.org"),
                    total=Decimal("1.00"),
                    placed_at=datetime.now(UTC),
                )
            }
        ),
    )
    channel = bus.amqp.channel()
    channel.basic_publish(
        amqp.Message(
            forged.body, application_headers=forged.headers, content_type="application/avro"
        ),
        exchange=f"{bus.prefix}{TOPIC}",
        routing_key=PING.event_type,
    )
    channel.close()
    PING.send_event(n=2)

    wait_for(lambda: bus.records(service=billing, n=2), "the ping after the forged message")
    [dead] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert dead.reason == "poison"
    assert f"'{ORDER_PLACED.event_type}' but the message was routed with" in dead.error
    assert bus.records(service=billing, receiver="on_order") == []


@DB
def test_an_undecodable_message_on_the_task_queue_is_parked_not_dropped(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)
    tasks = f"{billing}.events_celery.tasks"
    channel = bus.amqp.channel()
    channel.basic_publish(
        amqp.Message(b"task: whatever", content_type="application/x-yaml"),
        exchange=tasks,
        routing_key=tasks,
    )
    channel.close()
    PING.send_event(n=1)

    wait_for(lambda: bus.records(service=billing, n=1), "the ping after the bad task message")
    [dead] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert bytes(dead.body) == b"task: whatever"
    assert dead.content_type == "application/x-yaml"
    assert f"undecodable message on the receiver task queue '{tasks}'" in dead.error
    assert "'application/x-yaml'" in dead.error


@DB
def test_an_event_whose_receiver_kills_the_worker_comes_back_a_bounded_number_of_times(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}}, env={"TEST_MAX_REDELIVERIES": "2"})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(CRASHING, PING)
    sent = CRASHING.send_event(n=1).metadata

    [dead] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert dead.reason == "redelivered"
    assert "came back unfinished 3 time(s)" in dead.error
    assert "EVENT_BUS_MAX_REDELIVERIES is 2" in dead.error
    assert dead.event_id == sent.id
    assert len(bus.records(service=billing, receiver="crash")) == 3  # the first run and 2 more
    PING.send_event(n=2)
    wait_for(lambda: bus.records(service=billing, n=2), "a ping after the crash loop")


@DB
def test_receivers_retry_by_their_own_options_with_sub_second_waits(
    bus: Bus, settings: Any
) -> None:
    check_receivers_retry_by_their_own_options(bus, settings, "classic")


def check_receivers_retry_by_their_own_options(bus: Bus, settings: Any, queue_type: str) -> None:
    """PICKY's receivers: one gives up at once on ValueError, one succeeds on attempt 4."""
    billing = bus.service_name(f"billing-{queue_type}")
    bus.start(billing, {TOPIC: {"event_types": [PICKY.event_type]}}, queue_type=queue_type)
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PICKY)

    PICKY.send_event(n=5)

    wait_for(
        lambda: bus.records(service=billing, receiver="persistent", outcome="ok"),
        "the fourth attempt of the persistent receiver",
    )
    [dead] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert dead.receiver == "tests.integration.receivers.handlers.gives_up"
    assert dead.reason == "gave-up"
    assert "gave up at once on ValueError" in dead.error
    assert [r["attempt"] for r in bus.records(service=billing, receiver="gives_up")] == [1]
    attempts = [r["attempt"] for r in bus.records(service=billing, receiver="persistent")]
    assert attempts == [1, 2, 3, 4]


def test_events_received_from_the_bus_are_not_published_again(bus: Bus, settings: Any) -> None:
    billing = bus.service_name("billing")
    # The consuming service routes the same event to the same topic: a loop would show up
    # as the event arriving again and again.
    bus.start(billing, {TOPIC: {}}, producer_config=route(PING))
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)

    for n in range(3):
        PING.send_event(n=n)

    wait_for(lambda: len(bus.records(service=billing)) >= 3, "three pings")
    bus.wait_idle(billing)  # a republished event has come round by then
    assert len(bus.records(service=billing)) == 3
    assert bus.depth(f"{billing}.{TOPIC}") == 0


@pytest.mark.django_db(transaction=True)
def test_publishing_waits_for_commit_and_a_rollback_publishes_nothing(
    bus: Bus, settings: Any
) -> None:
    bus.topics.add(TOPIC)
    settings.EVENT_BUS_PUBLISH_MODE = "direct"
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)
    PING.send_event(n=0)  # declares the topic exchange
    queue = bus.probe()

    with transaction.atomic():
        PING.send_event(n=1)
        assert bus.depth(queue) == 0, "nothing is published before the commit"
    wait_for(lambda: bus.depth(queue) == 1, "the event after commit")

    class RollbackError(Exception):
        pass

    def send_then_fail() -> None:
        with transaction.atomic():
            PING.send_event(n=2)
            raise RollbackError

    with pytest.raises(RollbackError):
        send_then_fail()
    PING.send_event(n=3)  # outside a transaction: published at once
    wait_for(lambda: bus.depth(queue) == 2, "the event sent after the rollback")
    bodies = [PING.serializer.decode(bus.get(queue).body)["n"] for _ in range(2)]
    assert bodies == [1, 3]


def test_events_nobody_subscribes_to_yet_are_parked(bus: Bus, settings: Any) -> None:
    bus.topics.add("lonely")
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING, topic="lonely")

    PING.send_event(n=1)
    PING.send_event(n=2)

    assert bus.depth(f"{bus.prefix}lonely.unrouted") == 2


def test_a_full_parking_queue_keeps_the_newest_and_never_fails_the_sender(
    bus: Bus, settings: Any
) -> None:
    bus.topics.add("lonely")
    settings.EVENT_BUS_UNROUTED_MAX_LENGTH = 3
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING, topic="lonely")
    for n in range(5):
        PING.send_event(n=n)

    # Another service declares the same parking queue with another limit: no conflict.
    settings.EVENT_BUS_UNROUTED_MAX_LENGTH = 50
    PING.send_event(n=5)

    parked = [PING.serializer.decode(bus.get(f"{bus.prefix}lonely.unrouted").body)["n"]]
    while (message := bus.get(f"{bus.prefix}lonely.unrouted")) is not None:
        parked.append(PING.serializer.decode(message.body)["n"])
    assert parked == [3, 4, 5]


def test_an_unreachable_broker_raises_publish_error_naming_event_and_topic(
    bus: Bus, settings: Any
) -> None:
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.5
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 2, "interval_start": 0.0}
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)

    with pytest.raises(PublishError) as raised:
        PING.send_event(n=1)

    assert raised.value.topic == TOPIC
    assert raised.value.event_id
    assert str(raised.value.event_id) in str(raised.value)


def test_a_worker_killed_mid_event_leaves_the_event_to_another_worker(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    first = bus.start(billing, {TOPIC: {}}, node="billing-a")
    settings.EVENT_BUS_PRODUCER_CONFIG = route(SLOW)

    SLOW.send_event(n=5)
    wait_for(lambda: bus.records(service=billing, receiver="slow"), "the receiver to start")
    first.kill()
    second = bus.start(billing, {TOPIC: {}}, node="billing-b")

    done = wait_for(
        lambda: bus.records(service=billing, receiver="slow", outcome="ok"), "the redelivery"
    )
    assert [r["node"] for r in done] == ["billing-b"]
    started = bus.records(service=billing, receiver="slow", outcome="started")
    assert [r["node"] for r in started] == ["billing-a", "billing-b"]
    # the batch came back unfinished, so each of its events got a task of its own
    assert "1 event(s) came back unfinished (1 time(s) now" in second.log.read_text()
