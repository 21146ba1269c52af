"""Relays on the real RabbitMQ: the writer's background publisher and ``relay_events``."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from kombu import Connection

from events_celery.bus import relay, topology
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def probe(rabbitmq_url: str, settings: Any) -> Iterator[str]:
    """Route PING to a topic of this test; a probe queue sees everything published to it."""
    prefix = f"relay-{uuid.uuid4().hex[:8]}."
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    queue = f"{prefix}probe"
    with Connection(rabbitmq_url) as connection:
        topology.declare(connection, topology.producer_topology(bus_settings(), ["pings"]))
        channel: Any = connection.default_channel
        channel.queue_declare(queue, auto_delete=False)
        channel.queue_bind(queue, f"{prefix}pings", routing_key="#")
    try:
        yield queue
    finally:
        with Connection(rabbitmq_url) as connection:
            channel = connection.default_channel
            for name in (queue, f"{prefix}pings.unrouted"):
                channel.queue_delete(name)
            for name in (f"{prefix}pings", f"{prefix}pings.unrouted"):
                channel.exchange_delete(name)


def received(rabbitmq_url: str, queue: str) -> list[dict[str, Any]]:
    """Headers of every message in ``queue``, in order (the queue is emptied)."""
    with Connection(rabbitmq_url) as connection:
        channel: Any = connection.default_channel
        found = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            found.append({**message.headers, "message_id": message.properties["message_id"]})
        return found


def test_committed_events_are_published_after_the_commit_and_their_rows_deleted(
    rabbitmq_url: str, probe: str
) -> None:
    sent = []
    with transaction.atomic():
        for n in range(300):
            sent.append(str(PING.send_event(n=n).metadata.id))
    with transaction.atomic():
        PING.send_event(n=-1)
        transaction.set_rollback(True)

    assert relay.background_publisher().flush(timeout=30)

    messages = received(rabbitmq_url, probe)
    assert [m["ce_id"] for m in messages] == sent
    assert all(m["message_id"] == m["ce_id"] for m in messages)
    assert not OutboxMessage.objects.exists()


def test_relay_events_publishes_rows_left_by_a_dead_writer_in_write_order(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.BackgroundPublisher, "submit", lambda self, rows: None)
    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in range(1200)]  # > one batch
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    out = io.StringIO()
    call_command("relay_events", stdout=out)

    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == sent
    assert "relayed 1200 event message(s); 0 wait in the outbox" in out.getvalue()
    assert not OutboxMessage.objects.exists()


def test_relay_events_leaves_rows_their_writer_still_holds(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.BackgroundPublisher, "submit", lambda self, rows: None)
    PING.send_event(n=1)

    out = io.StringIO()
    call_command("relay_events", stdout=out)

    assert received(rabbitmq_url, probe) == []
    assert "relayed 0 event message(s); 1 wait in the outbox" in out.getvalue()


def test_the_background_publisher_keeps_rows_while_the_broker_is_away_then_publishes_them(
    rabbitmq_url: str, probe: str, settings: Any
) -> None:
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.2
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"interval_step": 0.05, "interval_max": 0.1}
    sent = str(PING.send_event(n=1).metadata.id)

    assert not relay.background_publisher().flush(timeout=0.5)
    assert OutboxMessage.objects.count() == 1

    settings.EVENT_BUS_BROKER_URL = rabbitmq_url  # the broker is back
    assert relay.background_publisher().flush(timeout=30)
    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == [sent]
    assert not OutboxMessage.objects.exists()


def test_show_event_bus_prints_the_backlog(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(relay.BackgroundPublisher, "submit", lambda self, rows: None)
    settings.EVENT_BUS_OUTBOX_WARN_AFTER = 10
    late = PING.send_event(n=1)
    PING.send_event(n=2)
    OutboxMessage.objects.filter(event_id=late.metadata.id).update(
        created_at=timezone.now() - timedelta(seconds=90)
    )

    out = io.StringIO()
    call_command("show_event_bus", stdout=out)

    line = next(x for x in out.getvalue().splitlines() if x.startswith("outbox:"))
    assert line.startswith("outbox: 2 unpublished, oldest 9")
    assert str(late.metadata.id) in line


def test_the_process_that_parks_an_event_says_so(
    rabbitmq_url: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A Celery worker started by another test module may have raised the root level.
    caplog.set_level(logging.WARNING, logger="events_celery")
    prefix = f"relay-{uuid.uuid4().hex[:8]}."
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"lonely": {"enabled": True}}}
    try:
        PING.send_event(n=1)  # nobody subscribes to "lonely"
        assert relay.background_publisher().flush(timeout=30)
    finally:
        relay.stop_background_publisher()
        with Connection(rabbitmq_url) as connection:
            channel: Any = connection.default_channel
            channel.queue_delete(f"{prefix}lonely.unrouted")
            for name in (f"{prefix}lonely", f"{prefix}lonely.unrouted"):
                channel.exchange_delete(name)

    assert f"1 event(s) are parked in {prefix}lonely.unrouted" in caplog.text
