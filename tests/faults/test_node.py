"""The private RabbitMQ node does what fault tests need: go away, come back, block publishers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import amqp
import pytest

from tests.faults.node import RabbitMQNode

pytestmark = pytest.mark.rabbitmq

CONFIRM_TIMEOUT = 10.0


@contextmanager
def _connection(node: RabbitMQNode, **kwargs: object) -> Iterator[amqp.Connection]:
    conn = amqp.Connection(
        f"127.0.0.1:{node.amqp_port}", userid="guest", password="guest", connect_timeout=5, **kwargs
    )
    conn.connect()
    try:
        yield conn
    finally:
        conn.collect()


@contextmanager
def _queue(node: RabbitMQNode) -> Iterator[str]:
    """A queue named with this run's unique prefix, deleted at the end on a fresh connection."""
    name = f"ec-fault-test-{secrets.token_hex(4)}"
    with _connection(node) as conn:
        conn.channel().queue_declare(name, durable=False, auto_delete=False)
        conn.close()
    try:
        yield name
    finally:
        with _connection(node) as conn:
            conn.channel().queue_delete(name)
            conn.close()


def _publish_confirmed(channel: amqp.Channel, queue: str, body: str, timeout: float) -> None:
    channel.basic_publish_confirm(amqp.Message(body), routing_key=queue, confirm_timeout=timeout)


def _message_count(node: RabbitMQNode, queue: str) -> int:
    with _connection(node) as conn:
        _name, count, _consumers = conn.channel().queue_declare(queue, passive=True)
        conn.close()
    return int(count)


def test_the_node_is_private(rabbitmq_node: RabbitMQNode) -> None:
    assert rabbitmq_node.name.startswith("ec-fault-")
    assert rabbitmq_node.name != "rabbit@localhost"
    assert rabbitmq_node.amqp_port != 5672
    assert rabbitmq_node.url == f"amqp://guest:guest@127.0.0.1:{rabbitmq_node.amqp_port}//"


def test_publish_with_confirms(rabbitmq_node: RabbitMQNode) -> None:
    with _queue(rabbitmq_node) as queue, _connection(rabbitmq_node) as conn:
        _publish_confirmed(conn.channel(), queue, "hello", CONFIRM_TIMEOUT)
        conn.close()
        assert _message_count(rabbitmq_node, queue) == 1


def test_stop_app_refuses_connections_until_start_app(rabbitmq_node: RabbitMQNode) -> None:
    rabbitmq_node.stop_app()
    try:
        with pytest.raises(ConnectionRefusedError), _connection(rabbitmq_node):
            pass
    finally:
        rabbitmq_node.start_app()

    with _queue(rabbitmq_node) as queue, _connection(rabbitmq_node) as conn:
        _publish_confirmed(conn.channel(), queue, "back again", CONFIRM_TIMEOUT)
        conn.close()
        assert _message_count(rabbitmq_node, queue) == 1


def test_memory_alarm_blocks_publishers_until_cleared(rabbitmq_node: RabbitMQNode) -> None:
    events: list[str] = []
    with _queue(rabbitmq_node) as queue:
        with _connection(
            rabbitmq_node,
            on_blocked=lambda reason: events.append("blocked"),
            on_unblocked=lambda: events.append("unblocked"),
        ) as conn:
            channel = conn.channel()
            _publish_confirmed(channel, queue, "before", CONFIRM_TIMEOUT)

            rabbitmq_node.set_memory_alarm(True)
            try:
                with pytest.raises(TimeoutError):
                    _publish_confirmed(channel, queue, "during", 2.0)
                assert events == ["blocked"]
            finally:
                rabbitmq_node.set_memory_alarm(False)

            # The publish made while blocked is confirmed once the alarm clears...
            channel.wait([amqp.spec.Basic.Ack], timeout=CONFIRM_TIMEOUT)
            assert events == ["blocked", "unblocked"]
            # ...and new ones are confirmed as usual.
            _publish_confirmed(channel, queue, "after", CONFIRM_TIMEOUT)
            conn.close()
        assert _message_count(rabbitmq_node, queue) == 3
