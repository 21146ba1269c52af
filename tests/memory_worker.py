"""A real Celery worker in the test process, on kombu's ``memory://`` broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController, state
from django.test import override_settings
from kombu import Connection

from tests.testapp.events import PING


def ping_worker_settings(service: str, topic: str) -> dict[str, Any]:
    """Settings of a ``service`` that sends PING to ``topic`` (direct) and consumes it there.

    Receivers get two quick attempts, and the consumer flushes its hand-offs every 10 ms.
    """
    return {
        "CELERY_BROKER_URL": "memory://",
        "EVENT_BUS_SERVICE_NAME": service,
        "EVENT_BUS_PUBLISH_MODE": "direct",
        "EVENT_BUS_CONSUMER_FLUSH_INTERVAL": 0.01,
        "EVENT_BUS_RETRY_POLICY": {"max_attempts": 2, "backoff": 0.01, "backoff_max": 0.01},
        "EVENT_BUS_CONSUMER_CONFIG": {topic: {}},
        "EVENT_BUS_PRODUCER_CONFIG": {PING.event_type: {topic: {"enabled": True}}},
    }


@contextmanager
def run_memory_worker(service: str, settings: Mapping[str, Any]) -> Iterator[WorkController]:
    """Run a solo-pool worker of ``service`` with ``settings`` until the block ends."""
    with override_settings(**settings):
        app = Celery(service, broker="memory://", set_as_current=True)
        app.conf.task_default_queue = f"{service}.celery"
        # The in-memory transport polls its queues, by default once a second.
        app.conf.broker_transport_options = {"polling_interval": 0.01}
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
            yield w


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``condition`` until it returns something truthy, and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)
    return value


def in_flight(queues: tuple[str, ...]) -> int:
    """Messages waiting in ``queues``, plus the tasks the worker holds (running or scheduled)."""
    with Connection("memory://") as connection:
        channel: Any = connection.default_channel
        queued: int = sum(
            channel.queue_declare(name, passive=True).message_count for name in queues
        )
    return queued + len(state.requests)


def idle(queues: tuple[str, ...], hand_off: float = 0.05) -> bool:
    """Whether nothing is in flight, twice over more than ``hand_off`` apart.

    ``hand_off``: longer than the consumer's flush interval, so an event the consumer held for
    its next hand-off is a task by the second look.
    """
    if in_flight(queues):
        return False
    time.sleep(hand_off)
    return in_flight(queues) == 0


def wait_until_idle(queues: tuple[str, ...]) -> None:
    """Wait until the in-process worker has nothing left to do in ``queues``."""
    wait_until(lambda: idle(queues), "the worker to finish its events and retries")
