"""Direct publishing gives up within EVENT_BUS_PUBLISH_TIMEOUT, whatever the broker does.

Each case would block far longer (or for ever) without the bound; the test shows the
``PublishError`` the caller gets, and prints how long the send took (no timing is asserted).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from events_celery import PublishError
from tests.faults.node import RabbitMQNode
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def direct(settings: Any) -> Any:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 1.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 3, "interval_step": 0.1}
    settings.EVENT_BUS_TOPIC_PREFIX = f"bound-{time.monotonic_ns()}."
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    return settings


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A TCP server that accepts connections and never says a word (a dead peer)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}//"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


def send_and_time() -> tuple[PublishError, float]:
    started = time.monotonic()
    with pytest.raises(PublishError) as raised:
        PING.send_event(n=1)
    return raised.value, time.monotonic() - started


def test_a_refused_connection_fails_within_the_bound(direct: Any) -> None:
    direct.EVENT_BUS_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"

    error, took = send_and_time()

    print(f"\nrefused connection: PublishError after {took:.2f}s")
    assert "EVENT_BUS_PUBLISH_TIMEOUT (1s" in str(error)
    assert error.may_be_delivered is False


def test_a_peer_that_never_answers_fails_within_the_bound(direct: Any, silent_peer: str) -> None:
    direct.EVENT_BUS_BROKER_URL = silent_peer

    error, took = send_and_time()

    print(f"\nsilent peer: PublishError after {took:.2f}s")
    assert "EVENT_BUS_PUBLISH_TIMEOUT (1s" in str(error)
    assert error.may_be_delivered is False


def test_a_broker_blocking_publishers_fails_within_the_bound(
    direct: Any, rabbitmq_node: RabbitMQNode
) -> None:
    direct.EVENT_BUS_BROKER_URL = rabbitmq_node.url
    PING.send_event(n=0)  # connected and declared while the broker accepts publishes
    rabbitmq_node.set_memory_alarm(True)
    try:
        error, took = send_and_time()
    finally:
        rabbitmq_node.set_memory_alarm(False)

    print(f"\nblocking broker: PublishError after {took:.2f}s: {error}")
    assert "blocking publishers" in str(error)
    assert [str(i) for i in error.event_ids] == [str(error.event_id)]
