"""Fixtures of the bus tests: the dead-letter store of a service made up for one test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from kombu import Connection
from kombu.message import Message

from events_celery.bus import topology
from events_celery.bus.producer import publisher
from events_celery.conf import bus_settings


@attrs.frozen
class DeadLetterStore:
    """The dead-letter store of this test's service, on the broker the settings name."""

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
