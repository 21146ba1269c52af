"""Fixtures of the bus tests: a broker dead-letter queue, an unreachable broker, a probe queue."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from django.db import connection
from kombu import Connection
from kombu.message import Message

from events_celery.bus.broker import connection as bus_connection_module
from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.retrying import retrying_publisher
from events_celery.conf import bus_settings
from events_celery.models import DeadLetter
from tests.testapp.events import PING


@attrs.frozen
class DeadLetterStore:
    """The broker dead-letter queue of this test's service, on the broker the settings name."""

    broker_url: str
    service: str

    @property
    def name(self) -> str:
        """The queue (and exchange) name of the store."""
        return topology.dead_letter_queue(self.service).name

    def take(self) -> list[Message]:
        """Every message parked in the store, oldest first; the store is left empty."""
        with Connection(self.broker_url) as connection:
            queue = topology.dead_letter_queue(self.service)(connection.default_channel)
            taken = []
            while (message := queue.get(no_ack=True)) is not None:
                taken.append(message)
            return taken

    def delete(self) -> None:
        """Delete the store's queue and exchange from the broker."""
        with Connection(self.broker_url) as connection:
            queue = topology.dead_letter_queue(self.service)(connection.default_channel)
            queue.delete()
            queue.exchange.delete()


def _store(settings: Any, broker_url: str, prefix: str) -> Iterator[DeadLetterStore]:
    store = DeadLetterStore(broker_url, f"{prefix}-{uuid.uuid4().hex[:8]}")
    settings.CELERY_BROKER_URL = broker_url
    settings.EVENT_BUS_SERVICE_NAME = store.service
    try:
        yield store
    finally:
        # the connection this test's dead letters went by
        retrying_publisher(bus_settings()).close()
        store.delete()


@pytest.fixture
def memory_store(settings: Any) -> Iterator[DeadLetterStore]:
    """This test's service, on kombu's in-memory transport."""
    yield from _store(settings, "memory://", "memory-store")


@pytest.fixture
def rabbitmq_store(settings: Any, rabbitmq_url: str) -> Iterator[DeadLetterStore]:
    """This test's service, on the real local RabbitMQ."""
    yield from _store(settings, rabbitmq_url, "rabbitmq-store")


@pytest.fixture
def table_missing(transactional_db: Any) -> Iterator[None]:
    """The dead-letter table is gone for this test (as before ``migrate``), then comes back."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {DeadLetter._meta.db_table} RENAME TO {_AWAY}")
    try:
        yield
    finally:
        connection.close()  # a connection that saw errors may be broken
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {_AWAY} RENAME TO {DeadLetter._meta.db_table}")


_AWAY = "events_celery_dead_letter_away"


UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def unreachable_broker(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = UNREACHABLE
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.5
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 2, "interval_step": 0.01}
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
    monkeypatch.setattr("events_celery.bus.broker.confirms.connect", connect)
    return calls


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
        declaring.declare(connection, topology.producer_topology(bus_settings(), ["pings"]))
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
