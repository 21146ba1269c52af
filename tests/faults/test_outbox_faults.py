"""The outbox while the broker is away or blocking publishers (private RabbitMQ node).

Every scenario counts event ids at a real worker's receiver: none lost, none from a rolled-back
transaction (phantom), and how many arrived twice. Commits never touch the broker: the test
records which threads tried to connect.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.db import transaction

from events_celery.bus.broker import confirms
from events_celery.bus.publish import background
from events_celery.models import OutboxMessage
from tests.faults.node import RabbitMQNode
from tests.faults.report import report
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"
ROUTE = {PING.event_type: {TOPIC: {"enabled": True}}}


@pytest.fixture
def connecting_threads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of the threads of this process that opened a broker connection to publish."""
    names: set[str] = set()
    real_connect = confirms.connect

    def connect(connection: Any, *, timeout: float) -> Any:
        names.add(threading.current_thread().name)
        return real_connect(connection, timeout=timeout)

    monkeypatch.setattr(confirms, "connect", connect)
    return names


def delivered(bus: Bus, service: str) -> Counter[str]:
    return Counter(r["event_id"] for r in bus.records(service=service, from_event_bus=True))


def commit_events(count: int, *, rollback_every: int) -> tuple[list[str], list[str]]:
    """Commit ``count`` transactions with one event each; roll back every n-th one."""
    committed, rolled_back = [], []
    for n in range(count):
        with transaction.atomic():
            sent = str(PING.send_event(n=n).metadata.id)
            if n % rollback_every == rollback_every - 1:
                transaction.set_rollback(True)
                rolled_back.append(sent)
            else:
                committed.append(sent)
    return committed, rolled_back


def start_consumer(bus: Bus, settings: Any) -> str:
    consumer = bus.service_name("billing")
    bus.start(consumer, {TOPIC: {"event_types": [PING.event_type]}})
    settings.EVENT_BUS_PRODUCER_CONFIG = ROUTE
    warm_up = str(PING.send_event(n=-1).metadata.id)
    wait_for(lambda: warm_up in delivered(bus, consumer), "the first event")
    assert background.background_publisher().flush(timeout=30)  # its row is deleted too
    return consumer


def test_events_committed_while_the_broker_is_stopped_arrive_once_it_is_back(
    fault_bus: Bus,
    rabbitmq_node: RabbitMQNode,
    settings: Any,
    connecting_threads: set[str],
) -> None:
    consumer = start_consumer(fault_bus, settings)

    rabbitmq_node.stop_app()
    try:
        committed, rolled_back = commit_events(30, rollback_every=6)  # 25 committed
        assert OutboxMessage.objects.count() == len(committed)
    finally:
        rabbitmq_node.start_app()

    wait_for(lambda: len(delivered(fault_bus, consumer)) > len(committed), "every event")
    background.background_publisher().flush(timeout=30)
    counts = delivered(fault_bus, consumer)
    report("broker stopped at commit", committed, counts, rolled_back)
    assert set(committed) <= set(counts), "a committed event was lost"
    assert not set(rolled_back) & set(counts), "a rolled-back event arrived"
    assert all(counts[i] == 1 for i in committed), "an event arrived twice"
    assert threading.current_thread().name not in connecting_threads, "a commit waited"
    assert not OutboxMessage.objects.exists()


def test_events_committed_while_the_broker_blocks_publishers_arrive_once_it_unblocks(
    fault_bus: Bus,
    rabbitmq_node: RabbitMQNode,
    settings: Any,
    connecting_threads: set[str],
) -> None:
    consumer = start_consumer(fault_bus, settings)

    rabbitmq_node.set_memory_alarm(True)
    try:
        committed, rolled_back = commit_events(24, rollback_every=4)  # 18 committed
        assert OutboxMessage.objects.count() == len(committed)
        time.sleep(6)  # longer than a batch's timeout (2 s): the publisher must wait, not resend
    finally:
        rabbitmq_node.set_memory_alarm(False)

    wait_for(lambda: set(committed) <= set(delivered(fault_bus, consumer)), "every event")
    background.background_publisher().flush(timeout=30)
    counts = delivered(fault_bus, consumer)
    report("broker blocking publishers at commit", committed, counts, rolled_back)
    assert not set(rolled_back) & set(counts), "a rolled-back event arrived"
    assert all(counts[i] == 1 for i in committed), "an event arrived twice"
    assert threading.current_thread().name not in connecting_threads, "a commit waited"
    assert not OutboxMessage.objects.exists()


def test_a_broker_restart_mid_stream_loses_nothing(
    fault_bus: Bus, rabbitmq_node: RabbitMQNode, settings: Any
) -> None:
    consumer = start_consumer(fault_bus, settings)
    committed: list[str] = []
    rolled_back: list[str] = []

    def commit_some(count: int) -> None:
        more, less = commit_events(count, rollback_every=10)
        committed.extend(more)
        rolled_back.extend(less)

    commit_some(100)  # while events flow to the worker ...
    rabbitmq_node.stop_app()  # ... the broker goes away ...
    try:
        commit_some(100)
    finally:
        rabbitmq_node.start_app()  # ... and comes back; nobody is restarted
    commit_some(100)

    wait_for(
        lambda: set(committed) <= set(delivered(fault_bus, consumer)),
        "every committed event after the restart",
        timeout=120,
    )
    background.background_publisher().flush(timeout=30)
    counts = delivered(fault_bus, consumer)
    report("broker restart mid-stream", committed, counts, rolled_back)
    assert not set(rolled_back) & set(counts), "a rolled-back event arrived"
    assert not OutboxMessage.objects.exists()


def test_a_worker_killed_mid_batch_loses_nothing(fault_bus: Bus, settings: Any) -> None:
    consumer = fault_bus.service_name("billing")
    settings.EVENT_BUS_PRODUCER_CONFIG = ROUTE
    doomed = fault_bus.start(consumer, {TOPIC: {}}, node="billing-a")
    committed, rolled_back = commit_events(400, rollback_every=8)
    wait_for(lambda: len(delivered(fault_bus, consumer)) >= 50, "the first events")
    doomed.kill()  # SIGKILL, pool processes included, with a batch in hand
    fault_bus.start(consumer, {TOPIC: {}}, node="billing-b")

    wait_for(
        lambda: set(committed) <= set(delivered(fault_bus, consumer)),
        "every event, by the second worker",
        timeout=120,
    )
    counts = delivered(fault_bus, consumer)
    report("worker SIGKILL mid-batch", committed, counts, rolled_back)
    assert not set(rolled_back) & set(counts), "a rolled-back event arrived"
