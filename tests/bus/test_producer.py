"""Publish modes with a broker that cannot be reached (the URL points at a closed port)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import transaction
from kombu import Connection

from events_celery import PayloadValidationError, PublishError
from events_celery.bus import connection as bus_connection_module
from events_celery.bus import producer
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.testapp.events import PING

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def unreachable_broker(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = UNREACHABLE
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.5
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_step": 0.01}
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        PING.event_type: {"pings": {"enabled": True}, "audit": {"enabled": True}}
    }


@pytest.fixture
def broker_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that tried to connect to the broker."""
    calls: list[str] = []
    real_connect = bus_connection_module.connect

    def connect(connection: Any, *, timeout: float) -> Any:
        calls.append(threading.current_thread().name)
        return real_connect(connection, timeout=timeout)

    monkeypatch.setattr(bus_connection_module, "connect", connect)
    monkeypatch.setattr("events_celery.bus.confirms.connect", connect)
    return calls


@pytest.mark.django_db(transaction=True)
def test_outbox_mode_never_raises_publish_error_nor_touches_the_broker_in_the_caller(
    unreachable_broker: None, broker_calls: list[str]
) -> None:
    with transaction.atomic():
        sent = PING.send_event(n=1)

    assert OutboxMessage.objects.filter(event_id=sent.metadata.id).count() == 2  # two topics
    assert threading.current_thread().name not in broker_calls


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


def test_a_payload_above_the_size_limit_is_refused_before_publishing(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_MAX_MESSAGE_SIZE = 1

    with pytest.raises(PayloadValidationError, match="EVENT_BUS_MAX_MESSAGE_SIZE"):
        PING.send_event(n=1_000_000)


def test_publish_error_keeps_the_single_event_id_of_older_callers() -> None:
    error = PublishError("x", event_ids=("a", "b"), topic="t", may_be_delivered=True)

    assert error.event_id == "a"
    assert error.event_ids == ("a", "b")
    assert error.may_be_delivered is True


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
    try:
        PING.send_event(n=1)  # confirmed at once; nobody subscribes to "lonely"
    finally:
        producer._direct_publisher(bus_settings()).close()
        with Connection(rabbitmq_url) as connection:
            channel: Any = connection.default_channel
            channel.queue_delete(f"{prefix}lonely.unrouted")
            for name in (f"{prefix}lonely", f"{prefix}lonely.unrouted"):
                channel.exchange_delete(name)

    assert f"1 event(s) are parked in {prefix}lonely.unrouted" in caplog.text
