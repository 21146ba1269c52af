"""The bus's own confirmed publishes: one connection per process and thread, with retries."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from kombu import Producer

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.retrying import RetryingPublisher, retrying_publisher
from events_celery.conf import bus_settings
from events_celery.exceptions import PublishError

NOTHING = topology.Topology(exchanges=(), queues=())


@pytest.fixture
def memory_broker(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = "memory://"
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {
        "max_attempts": 3,
        "interval_start": 0.0,
        "interval_step": 0.0,
        "interval_max": 0.0,
    }


def test_an_operation_that_fails_runs_again_on_a_fresh_connection(memory_broker: None) -> None:
    connections: list[Any] = []

    def operation(producer: Producer) -> None:
        connections.append(producer.connection)
        if len(connections) == 1:
            raise ConnectionError("connection reset")

    RetryingPublisher(bus_settings()).run(operation, NOTHING, describe=lambda: "a test publish")

    assert len(connections) == 2
    assert connections[0] is not connections[1]


def test_an_operation_that_keeps_failing_raises_publish_error_after_the_policy(
    memory_broker: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="events_celery.bus.broker.retrying")
    attempts: list[int] = []

    def operation(producer: Producer) -> None:
        attempts.append(1)
        raise ConnectionError("connection reset")

    with pytest.raises(PublishError) as raised:
        RetryingPublisher(bus_settings()).run(
            operation, NOTHING, describe=lambda: "a test publish", event_id="e-1"
        )

    assert len(attempts) == 3  # max_attempts 3
    assert str(raised.value) == (
        "publishing a test publish was not confirmed by the broker after 3 attempt(s): "
        "ConnectionError: connection reset"
    )
    assert raised.value.event_id == "e-1"
    assert "publishing a test publish failed (ConnectionError: connection reset); retry 2/2" in (
        caplog.text
    )


def test_what_a_publish_needs_is_declared_once_per_connection(
    memory_broker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = topology.dead_letter_queue("publisher-test")
    declared: list[str] = []
    real_declare = declaring.declare

    def declare(connection: Any, what: topology.Topology) -> None:
        declared.extend(what.names)
        real_declare(connection, what)

    monkeypatch.setattr(declaring, "declare", declare)
    current = RetryingPublisher(bus_settings())
    needs = topology.Topology(exchanges=(), queues=(queue,))

    for _ in range(3):
        current.run(lambda producer: None, needs, describe=lambda: "a test publish")
    current.close()  # a new connection declares again
    current.run(lambda producer: None, needs, describe=lambda: "a test publish")

    assert declared == [queue.name, queue.name]


def test_each_thread_has_its_own_publisher_and_new_settings_make_a_new_one(
    memory_broker: None, settings: Any
) -> None:
    mine = retrying_publisher()
    theirs: list[RetryingPublisher] = []
    thread = threading.Thread(target=lambda: theirs.append(retrying_publisher()))
    thread.start()
    thread.join()

    assert retrying_publisher() is mine
    assert theirs[0] is not mine
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 3.0
    assert retrying_publisher() is not mine
    assert retrying_publisher().settings is bus_settings()


def test_a_stop_ends_the_pause_before_the_next_attempt(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = "memory://"
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 3, "interval_start": 600.0}
    stop = threading.Event()
    attempts: list[int] = []

    def operation(producer: Producer) -> None:
        attempts.append(1)
        stop.set()  # SIGTERM while the broker is away: the 600 s pause must not be waited out
        raise ConnectionError("connection reset")

    with pytest.raises(PublishError) as raised:
        RetryingPublisher(bus_settings()).run(
            operation, NOTHING, describe=lambda: "a test publish", stop=stop
        )

    assert len(attempts) == 1
    assert "after 1 attempt(s) (stopped: no more attempts)" in str(raised.value)
