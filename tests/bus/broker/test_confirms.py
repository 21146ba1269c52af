"""Publishing a batch with a window of outstanding confirms, on the real RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import amqp
import attrs
import pytest
from kombu import Connection

from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outcome, Outgoing, keep_key_order
from events_celery.wire import OutgoingMessage


@pytest.fixture
def names(rabbitmq_url: str) -> Iterator[dict[str, str]]:
    """A topic exchange with a probe queue bound to it, and a name that exists nowhere."""
    run = uuid.uuid4().hex[:8]
    found = {"exchange": f"confirms-{run}", "queue": f"confirms-{run}.probe"}
    client = amqp.Connection("127.0.0.1:5672")
    client.connect()
    channel = client.channel()
    channel.exchange_declare(found["exchange"], "topic", durable=False, auto_delete=False)
    channel.queue_declare(found["queue"], auto_delete=False)
    channel.queue_bind(found["queue"], found["exchange"], routing_key="routed.#")
    try:
        yield found
    finally:
        channel.queue_delete(found["queue"])
        channel.exchange_delete(found["exchange"])
        client.close()


def outgoing(key: int, exchange: str, routing_key: str = "routed.event") -> Outgoing:
    message = OutgoingMessage(
        body=f"body {key}".encode(),
        headers={"ce_id": str(key)},
        properties={"message_id": f"id-{key}", "delivery_mode": 2, "content_type": "x/y"},
    )
    return Outgoing(key, exchange, routing_key, message, topology.Topology((), ()))


def probe_bodies(rabbitmq_url: str, queue: str) -> list[bytes]:
    with Connection(rabbitmq_url) as connection:
        channel: Any = connection.default_channel
        bodies = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            bodies.append(bytes(message.body))
        return bodies


@pytest.mark.rabbitmq
def test_a_batch_larger_than_the_window_is_confirmed_in_order(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=16)
    try:
        outcome = publisher.publish(
            [outgoing(n, names["exchange"]) for n in range(200)], timeout=10
        )
    finally:
        publisher.close()

    assert outcome.error is None
    assert sorted(outcome.confirmed) == list(range(200))
    assert probe_bodies(rabbitmq_url, names["queue"]) == [f"body {n}".encode() for n in range(200)]


@pytest.mark.rabbitmq
def test_an_unroutable_message_is_refused_not_confirmed(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=8)
    batch = [
        outgoing(1, names["exchange"]),
        outgoing(2, names["exchange"], routing_key="nobody.listens"),
        outgoing(3, names["exchange"]),
    ]
    try:
        outcome = publisher.publish(batch, timeout=10)
    finally:
        publisher.close()

    assert sorted(outcome.confirmed) == [1, 3]
    assert list(outcome.refused) == [2]
    assert "unroutable" in outcome.refused[2]


@pytest.mark.rabbitmq
def test_a_missing_exchange_stops_the_batch_and_says_what_was_not_sent(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=4)
    batch = [outgoing(n, f"{names['exchange']}-missing") for n in range(10)]
    try:
        outcome = publisher.publish(batch, timeout=10)
        again = publisher.publish([outgoing(99, names["exchange"])], timeout=10)
    finally:
        publisher.close()

    assert outcome.error is not None
    assert outcome.confirmed == []
    assert sorted(outcome.unknown + outcome.unsent) == list(range(10))
    assert again.confirmed == [99]  # a new connection after the failure


def test_an_unreachable_broker_fails_the_batch_without_raising() -> None:
    publisher = ConfirmingPublisher(Connection("amqp://guest:guest@127.0.0.1:1//"), window=4)

    outcome = publisher.publish([outgoing(1, "anything")], timeout=0.5)

    assert "Connection refused" in str(outcome.error)
    assert outcome.unsent == [1]
    assert outcome.unknown == []


def test_a_virtual_transport_publishes_without_confirms() -> None:
    connection = Connection("memory://")
    queue_name = f"confirms-{uuid.uuid4().hex[:8]}"
    channel: Any = connection.default_channel
    channel.exchange_declare(queue_name, "direct")
    channel.queue_declare(queue_name)
    channel.queue_bind(queue_name, queue_name, "routed.event")
    publisher = ConfirmingPublisher(connection, window=4)

    outcome = publisher.publish([outgoing(1, queue_name), outgoing(2, queue_name)], timeout=1)

    assert outcome.confirmed == [1, 2]
    assert channel.basic_get(queue_name, no_ack=True).body == b"body 1"


def foreign(key: int, exchange: str) -> Outgoing:
    """A message whose ``user_id`` is not the connected user (``guest``)."""
    item = outgoing(key, exchange)
    properties = {**item.message.properties, "user_id": "not-guest"}
    return attrs.evolve(item, message=attrs.evolve(item.message, properties=properties))


@pytest.mark.rabbitmq
def test_a_message_with_a_foreign_user_id_is_forbidden_and_the_batch_goes_on_in_order(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=16)
    batch = [outgoing(n, names["exchange"]) for n in range(60)]
    batch[20] = foreign(20, names["exchange"])
    batch[45] = foreign(45, names["exchange"])
    try:
        outcome = publisher.publish(batch, timeout=10)
    finally:
        publisher.close()

    assert outcome.error is None
    assert sorted(outcome.confirmed) == [n for n in range(60) if n not in (20, 45)]
    reason = (
        "406 PRECONDITION_FAILED - user_id property set to 'not-guest' but authenticated user "
        "was 'guest': a message's user_id must be the connected broker user: publish as broker "
        "user 'not-guest', or set user_id to 'guest'"
    )
    assert outcome.forbidden == {20: reason, 45: reason}
    # Those the broker took before a refusal but never confirmed are sent again: at least once.
    bodies = list(dict.fromkeys(probe_bodies(rabbitmq_url, names["queue"])))
    assert bodies == [f"body {n}".encode() for n in range(60) if n not in (20, 45)]


@pytest.mark.rabbitmq
def test_without_resending_what_the_broker_took_before_a_refusal_is_unknown(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=64, resend_unknown=False)
    batch = [outgoing(n, names["exchange"]) for n in range(40)]
    batch[30] = foreign(30, names["exchange"])
    try:
        outcome = publisher.publish(batch, timeout=10)
    finally:
        publisher.close()

    assert list(outcome.forbidden) == [30]
    assert sorted(outcome.confirmed + outcome.unknown) == [n for n in range(40) if n != 30]
    assert max(outcome.unknown, default=0) < 30  # after the refusal, all are confirmed
    bodies = probe_bodies(rabbitmq_url, names["queue"])
    assert bodies == [f"body {n}".encode() for n in range(40) if n != 30]  # none twice


@pytest.mark.rabbitmq
def test_a_forbidden_message_holds_back_the_later_ones_of_its_ordering_key_only(
    rabbitmq_url: str, names: dict[str, str]
) -> None:
    publisher = ConfirmingPublisher(Connection(rabbitmq_url), window=16)
    batch = [
        attrs.evolve(outgoing(n, names["exchange"]), ordering_key=f"k{n % 3}") for n in range(30)
    ]
    batch[10] = attrs.evolve(foreign(10, names["exchange"]), ordering_key="k1")
    try:
        outcome = publisher.publish(batch, timeout=10)
    finally:
        publisher.close()

    held = [n for n in range(11, 30) if n % 3 == 1]
    assert list(outcome.forbidden) == [10]
    assert outcome.blocked == held
    assert sorted(outcome.confirmed) == [n for n in range(30) if n != 10 and n not in held]
    bodies = list(dict.fromkeys(probe_bodies(rabbitmq_url, names["queue"])))
    assert bodies == [f"body {n}".encode() for n in range(30) if n != 10 and n not in held]


def test_a_confirmed_message_after_a_refused_one_of_its_key_is_blocked_not_confirmed() -> None:
    batch = [attrs.evolve(outgoing(n, "x"), ordering_key=key) for n, key in enumerate("aabab")]
    outcome = Outcome(confirmed=[1, 2, 3, 4], refused={0: "basic.nack"})

    keep_key_order(batch, outcome)

    assert outcome.confirmed == [2, 4]  # key b had no failure
    assert outcome.blocked == [1, 3]
    assert outcome.refused == {0: "basic.nack"}
    assert outcome.unknown == []


def test_a_confirmed_message_after_an_unanswered_one_of_its_key_is_published_again() -> None:
    batch = [attrs.evolve(outgoing(n, "x"), ordering_key=key) for n, key in enumerate("aab")]
    batch.append(outgoing(3, "x"))  # no key: no order
    outcome = Outcome(confirmed=[1, 2, 3], unknown=[0], error=TimeoutError("no confirm"))

    keep_key_order(batch, outcome)

    assert outcome.confirmed == [2, 3]
    assert outcome.unknown == [0, 1]
    assert outcome.blocked == []
