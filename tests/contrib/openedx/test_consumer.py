"""The consumer in this process, on the real broker: receivers, poison messages, metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from openedx_events.data import EventsMetadata  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from events_celery.bus.broker import topology  # noqa: E402
from events_celery.bus.broker.retrying import retrying_publisher  # noqa: E402
from events_celery.conf import bus_settings  # noqa: E402
from events_celery.contrib.openedx import EventsCeleryConsumer, wire  # noqa: E402
from events_celery.wire import HEADER_FINGERPRINT  # noqa: E402
from tests.contrib.openedx.enrollments import (  # noqa: E402
    COURSE_ENROLLMENT_CREATED,
    TOPIC,
    enrollment,
)
from tests.integration.conftest import Bus, open_bus, wait_for  # noqa: E402

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def bus(rabbitmq_url: str, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    with open_bus(rabbitmq_url, tmp_path, settings, "direct") as harness:
        settings.EVENT_BUS_BROKER_URL = rabbitmq_url
        harness.topics.add(TOPIC)
        yield harness


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    COURSE_ENROLLMENT_CREATED.connect(receiver, dispatch_uid="test_consumer_receiver")
    try:
        yield calls
    finally:
        COURSE_ENROLLMENT_CREATED.disconnect(dispatch_uid="test_consumer_receiver")


def consumer_of(bus: Bus) -> EventsCeleryConsumer:
    group = bus.service_name("catalog")
    bus.services.add(group)
    consumer = EventsCeleryConsumer(topic=TOPIC, group_id=group)
    consumer.connection.ensure_connection(max_retries=3)
    channel = consumer.connection.channel()
    consumer.get_consumers(lambda **kwargs: None, channel)  # declares the group's queues
    channel.close()
    return consumer


def publish(message: wire.OutgoingMessage) -> None:
    settings = bus_settings()
    retrying_publisher(settings).publish(
        message,
        exchange=topology.exchange_name(settings.topic_prefix, TOPIC),
        routing_key=COURSE_ENROLLMENT_CREATED.event_type,
        declare=topology.topic_topology(settings, TOPIC),
    )


def enrollment_message() -> tuple[wire.OutgoingMessage, EventsMetadata]:
    metadata = EventsMetadata(
        event_type=COURSE_ENROLLMENT_CREATED.event_type,
        id=uuid.uuid1(),
        source="openedx/lms/web",
        time=datetime(2026, 11, 2, 10, 30, tzinfo=UTC),
    )
    data = {"enrollment": enrollment("ada")}
    return wire.encode(COURSE_ENROLLMENT_CREATED, data, metadata, event_key_field=None), metadata


def consume_one(consumer: EventsCeleryConsumer) -> None:
    for _ in consumer.consume(limit=1, timeout=30):
        pass


def count(name: str, group: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": group, "topic": TOPIC, **labels}) or 0.0


def test_an_event_runs_the_receivers_with_its_metadata_and_is_counted(
    bus: Bus, received: list[dict[str, Any]]
) -> None:
    consumer = consumer_of(bus)
    event_type = COURSE_ENROLLMENT_CREATED.event_type
    before = count(
        "events_celery_consumed_messages_total", consumer.group_id, event_type=event_type
    )
    message, metadata = enrollment_message()
    publish(message)

    consume_one(consumer)

    (call,) = received
    assert call["metadata"] == metadata
    assert call["from_event_bus"] is True
    assert call["enrollment"] == enrollment("ada")
    after = count("events_celery_consumed_messages_total", consumer.group_id, event_type=event_type)
    assert after == before + 1
    assert bus.depth(consumer.queue.name) == 0


def test_a_message_of_another_schema_is_dead_lettered_with_the_reason_and_counted(
    bus: Bus, received: list[dict[str, Any]]
) -> None:
    consumer = consumer_of(bus)
    before = count("events_celery_poison_messages_total", consumer.group_id)
    message, _ = enrollment_message()
    message.headers[HEADER_FINGERPRINT] = "0123456789abcdef"
    publish(message)

    consume_one(consumer)

    assert not received
    [letter] = wait_for(lambda: bus.dead_letters(consumer.group_id), "the dead letter")
    assert letter.reason == "poison"
    assert "writer schema fingerprint 0123456789abcdef" in letter.error
    assert count("events_celery_poison_messages_total", consumer.group_id) == before + 1
