"""The background publisher on the real RabbitMQ: each process publishes the rows it wrote."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.db import transaction
from kombu import Connection

from events_celery.bus.publish import background
from events_celery.models import OutboxMessage
from tests.bus.conftest import received
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


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

    assert background.background_publisher().flush(timeout=30)

    messages = received(rabbitmq_url, probe)
    assert [m["ce_id"] for m in messages] == sent
    assert all(m["message_id"] == m["ce_id"] for m in messages)
    assert not OutboxMessage.objects.exists()


def test_the_background_publisher_keeps_rows_while_the_broker_is_away_then_publishes_them(
    rabbitmq_url: str, probe: str, settings: Any
) -> None:
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.2
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"interval_step": 0.05, "interval_max": 0.1}
    sent = str(PING.send_event(n=1).metadata.id)

    assert not background.background_publisher().flush(timeout=0.5)
    assert OutboxMessage.objects.count() == 1

    settings.EVENT_BUS_BROKER_URL = rabbitmq_url  # the broker is back
    assert background.background_publisher().flush(timeout=30)
    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == [sent]
    assert not OutboxMessage.objects.exists()


def test_the_process_that_parks_an_event_says_so(
    rabbitmq_url: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"relay-{uuid.uuid4().hex[:8]}."
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"lonely": {"enabled": True}}}
    caplog.set_level(logging.WARNING, logger="events_celery.bus.broker.declaring")
    try:
        PING.send_event(n=1)  # nobody subscribes to "lonely"
        assert background.background_publisher().flush(timeout=30)
    finally:
        background.stop_background_publisher()
        with Connection(rabbitmq_url) as connection:
            channel: Any = connection.default_channel
            channel.queue_delete(f"{prefix}lonely.unrouted")
            for name in (f"{prefix}lonely", f"{prefix}lonely.unrouted"):
                channel.exchange_delete(name)

    assert f"1 event(s) are parked in {prefix}lonely.unrouted" in caplog.text
