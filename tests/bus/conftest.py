"""Fixtures of the bus tests: the broker dead-letter queue of a service made up for one test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from django.db import connection
from kombu import Connection
from kombu.message import Message

from events_celery.bus import topology
from events_celery.bus.producer import publisher
from events_celery.conf import bus_settings
from events_celery.models import DeadLetter


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
        publisher(bus_settings()).close()  # the connection this test's dead letters went by
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
