"""``"direct"`` publish mode: confirmed at send time, or a PublishError that says what failed."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.db import transaction
from kombu import Connection

from events_celery import PublishError
from events_celery.bus.publish import direct
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.testapp.events import PING


@pytest.mark.django_db(transaction=True)
def test_direct_mode_names_every_event_and_topic_that_failed(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"

    with pytest.raises(PublishError) as raised:
        PING.send_event(n=1)

    error = raised.value
    assert len(error.event_ids) == 1
    assert str(error.event_ids[0]) in str(error)
    assert "'audit'" in str(error)
    assert "'pings'" in str(error)
    assert error.may_be_delivered is False
    assert "will not be delivered" in str(error)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_direct_mode_publishes_after_the_commit_and_says_so_when_it_fails(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"

    def send_in_a_transaction() -> None:
        with transaction.atomic():
            PING.send_event(n=1)  # nothing is published (nor fails) before the commit

    with pytest.raises(PublishError) as raised:
        send_in_a_transaction()

    assert any("after the database transaction committed" in n for n in raised.value.__notes__)


@pytest.mark.django_db(transaction=True)
def test_direct_mode_publishes_nothing_on_rollback(
    unreachable_broker: None, settings: Any, broker_calls: list[str]
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"

    with transaction.atomic():
        PING.send_event(n=1)
        transaction.set_rollback(True)

    assert broker_calls == []


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_a_direct_publish_that_parks_an_event_says_so_in_the_sending_process(
    rabbitmq_url: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"producer-{uuid.uuid4().hex[:8]}."
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_PUBLISH_MODE = "direct"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"lonely": {"enabled": True}}}
    caplog.set_level(logging.WARNING, logger="events_celery.bus.broker.declaring")
    try:
        PING.send_event(n=1)  # confirmed at once; nobody subscribes to "lonely"
    finally:
        direct._direct_publisher(bus_settings()).close()
        with Connection(rabbitmq_url) as connection:
            channel: Any = connection.default_channel
            channel.queue_delete(f"{prefix}lonely.unrouted")
            for name in (f"{prefix}lonely", f"{prefix}lonely.unrouted"):
                channel.exchange_delete(name)

    assert f"1 event(s) are parked in {prefix}lonely.unrouted" in caplog.text
