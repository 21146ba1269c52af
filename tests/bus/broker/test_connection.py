"""Broker connections: which URL, and failing over between the nodes of a cluster."""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Any

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outgoing
from events_celery.bus.broker.connection import broker_url, bus_connection, connect, drop
from events_celery.conf import bus_settings
from events_celery.wire import OutgoingMessage


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dead_url() -> str:
    return f"amqp://guest:guest@127.0.0.1:{closed_port()}//"


@pytest.mark.rabbitmq
def test_a_connection_fails_over_to_the_next_url_and_stays_on_the_one_that_answered(
    rabbitmq_url: str,
) -> None:
    dead = dead_url()
    connection = Connection(f"{dead};{rabbitmq_url}")
    try:
        transport = connect(connection, timeout=5)
        assert transport.connected
        assert connection.port == 5672
        connection.default_channel.basic_qos(0, 1, False)  # the connection works
    finally:
        drop(connection)

    # Reconnecting the same connection starts from the URL it is on, not from the dead one.
    try:
        connect(connection, timeout=5)
        assert connection.port == 5672
    finally:
        drop(connection)


@pytest.mark.rabbitmq
def test_a_batch_is_confirmed_through_the_second_url_when_the_first_is_down(
    rabbitmq_url: str,
) -> None:
    queue = f"failover-{uuid.uuid4().hex[:8]}"
    publisher = ConfirmingPublisher(Connection(f"{dead_url()};{rabbitmq_url}"), window=4)
    declare = topology.Topology((), ())
    with Connection(rabbitmq_url) as admin:
        channel: Any = admin.default_channel
        channel.queue_declare(queue, auto_delete=False)
        try:
            outcome = publisher.publish(
                [
                    Outgoing(
                        n,
                        "",
                        queue,
                        OutgoingMessage(b"body", {"ce_id": str(n)}, {"delivery_mode": 2}),
                        declare,
                    )
                    for n in range(3)
                ],
                timeout=5,
            )
            assert outcome.error is None
            assert outcome.confirmed == [0, 1, 2]
            _, count, _ = channel.queue_declare(queue, passive=True)
            assert count == 3
        finally:
            publisher.close()
            channel.queue_delete(queue)


def test_when_no_url_answers_each_is_tried_once_and_the_last_error_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = dead_url(), dead_url()
    connection = Connection(f"{first};{second}")
    with (
        caplog.at_level(logging.WARNING, "events_celery.bus.broker.connection"),
        pytest.raises(OperationalError),
    ):
        connect(connection, timeout=5)
    tried = [r.getMessage() for r in caplog.records]
    assert len(tried) == 1, tried  # the first failed, the second was tried and raised
    assert f":{Connection(first).port}" in tried[0]
    assert "trying the next broker URL" in tried[0]
    assert connection.port == Connection(second).port


def test_a_single_url_that_does_not_answer_raises_without_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = Connection(dead_url())
    with (
        caplog.at_level(logging.WARNING, "events_celery.bus.broker.connection"),
        pytest.raises(OperationalError),
    ):
        connect(connection, timeout=5)
    assert not caplog.records


def test_a_list_of_broker_urls_becomes_kombu_failover_urls(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = ["amqp://a:5672//", "amqp://b:5673//"]
    assert bus_settings().broker_url == "amqp://a:5672//;amqp://b:5673//"
    assert Connection(broker_url(bus_settings())).alt == ["amqp://a:5672//", "amqp://b:5673//"]


def test_celery_s_list_of_broker_urls_becomes_kombu_failover_urls(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery import current_app

    for name in ("EVENT_BUS_BROKER_URL", "CELERY_BROKER_URL"):
        if hasattr(settings, name):
            delattr(settings, name)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setattr(current_app.conf, "broker_url", ["amqp://a//", "amqp://b//"])
    assert broker_url(bus_settings()) == "amqp://a//;amqp://b//"


def test_a_broker_url_of_another_type_is_an_error_naming_the_fix(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = ["amqp://a//", 5672]
    problems = [p for p in bus_settings().problems if p.id == "E004"]
    assert problems
    assert "neither a URL nor a list of URLs" in problems[0].message
    assert "list of them" in problems[0].hint


def test_each_broker_url_is_checked_against_its_own_host_over_tls(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "amqps://localhost:5671//;amqps://rabbit-b:5671//"
    settings.CELERY_BROKER_USE_SSL = {}
    settings.CELERY_BROKER_LOGIN_METHOD = "EXTERNAL"

    connection = bus_connection(bus_settings())

    # kombu would check the first against 127.0.0.1 (it rewrites localhost), and every URL
    # against the first one's host.
    assert connection.ssl == {"server_hostname": "localhost"}
    assert connection.login_method == "EXTERNAL"
    connection.maybe_switch_next()
    assert connection.ssl == {"server_hostname": "rabbit-b"}
    connection.maybe_switch_next()
    assert connection.ssl == {"server_hostname": "localhost"}


def test_a_server_hostname_in_the_tls_options_is_kept(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "amqps://10.0.0.5:5671//"
    settings.CELERY_BROKER_USE_SSL = {"server_hostname": "rabbit.internal"}

    assert bus_connection(bus_settings()).ssl == {"server_hostname": "rabbit.internal"}


def test_plain_amqp_has_no_tls(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "amqp://localhost//"

    assert bus_connection(bus_settings()).ssl is False
