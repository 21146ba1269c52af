"""Changing the number of partitions of an ordered subscription without reordering a key.

A key's partition is its hash modulo the number of partitions, so a new number moves most
keys. The events waiting in the old partition queues are older than any the router will
route from now on, and they must stay first. With the service's workers stopped,
:func:`repartition` moves them, partition by partition and each in its order, to a holding
queue, then from there to their new partitions; only then may the router (a worker) start.
Every move is confirmed by the broker before the message is acknowledged where it was, so a
crash in between leaves a copy, never a gap (receivers dedupe by ``metadata.id``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
from kombu import Connection, Queue

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outgoing
from events_celery.bus.broker.connection import bus_connection
from events_celery.bus.consume.keys import partition_of
from events_celery.conf import BusSettings, Subscription
from events_celery.exceptions import ConfigurationError, PublishError
from events_celery.wire import HEADER_PARTITION_KEY, OutgoingMessage

logger = logging.getLogger(__name__)

#: Messages moved per confirmed batch.
BATCH = 500


@attrs.frozen
class Repartitioned:
    """What :func:`repartition` did: partitions before and after, and events moved."""

    before: int
    after: int
    moved: int


def repartition(
    connection: Connection,
    settings: BusSettings,
    subscription: Subscription,
    *,
    say: Callable[[str], object] = logger.info,
) -> Repartitioned:
    """Give ``subscription`` its configured number of partitions, keeping each key's order.

    Raises:
        ConfigurationError: a worker still consumes the subscription, or it is not ordered.
        PublishError: the broker did not confirm a move (run it again: nothing is lost).
    """
    if not subscription.order_by_key:
        raise ConfigurationError(f"topic {subscription.topic!r} is not ordered by key")
    service = settings.require_service_name()
    name = topology.ordered_name(service, subscription.topic)
    before = declaring.declared_partitions(connection, service, subscription)
    busy = _consumers(connection, [name, *(f"{name}.{n}" for n in range(before))])
    if busy:
        raise ConfigurationError(
            f"{', '.join(busy)} still have consumers: stop every worker of {service!r} first "
            "(the partitions can only move while no worker routes or runs their events)"
        )
    holding, spreading = (
        Queue(f"{name}.{part}", durable=True, queue_arguments={"x-queue-type": settings.queue_type})
        for part in ("moving", "spreading")
    )
    publisher = ConfirmingPublisher(
        bus_connection(settings, confirm_publish=False), window=settings.publish_window
    )
    channel: Any = connection.default_channel
    try:
        # Phase 1: the old partitions, each in its order, to the holding queue. A run that
        # stopped in phase 2 (``spreading`` exists) must not do it again: the new partitions
        # then hold the first events of their keys, and the holding queue the rest.
        if declaring.queue_stats(connection, spreading.name) is None:
            holding.bind(channel).declare()
            for number in range(before):
                _move(
                    connection,
                    publisher,
                    settings,
                    f"{name}.{number}",
                    lambda key: ("", holding.name),
                )
            spreading.bind(channel).declare()
        # Phase 2: from the holding queue to the new partitions, in that order.
        wanted = topology.partition_queues(service, subscription, settings.queue_type)
        declaring.declare(connection, topology.Topology((), wanted))
        exchange = topology.partition_exchange(service, subscription.topic).name

        def route(key: str) -> tuple[str, str]:
            return exchange, str(partition_of(key, subscription.partitions))

        moved = _move(connection, publisher, settings, holding.name, route)
        for number in range(subscription.partitions, before):  # surplus partitions: now empty
            channel.queue_delete(f"{name}.{number}", if_empty=True)
        channel.queue_delete(holding.name, if_empty=True)
        channel.queue_delete(spreading.name)
    finally:
        publisher.close()
    say(f"moved {moved} waiting event(s) of {subscription.topic} to their new partitions")
    return Repartitioned(before, subscription.partitions, moved)


def _consumers(connection: Connection, queues: list[str]) -> list[str]:
    busy = []
    for queue in queues:
        stats = declaring.queue_stats(connection, queue)
        if stats is not None and stats[1]:
            busy.append(queue)
    return busy


def _move(
    connection: Connection,
    publisher: ConfirmingPublisher,
    settings: BusSettings,
    source: str,
    target: Callable[[str], tuple[str, str]],
) -> int:
    """Move every message of ``source``, in order, to ``target(key)`` (exchange, routing key)."""
    channel: Any = connection.channel()
    moved = 0
    try:
        while True:
            batch: list[Any] = []
            while len(batch) < BATCH:
                message = channel.basic_get(source, no_ack=False)
                if message is None:
                    break
                batch.append(message)
            if not batch:
                return moved
            outgoing = []
            for n, message in enumerate(batch):
                headers = dict(message.headers or {})
                exchange, routing_key = target(str(headers.get(HEADER_PARTITION_KEY, "")))
                properties = dict(message.properties)
                properties.pop("application_headers", None)
                outgoing.append(
                    Outgoing(
                        n,
                        exchange,
                        routing_key,
                        OutgoingMessage(bytes(message.body), headers, properties),
                        topology.Topology((), ()),
                    )
                )
            outcome = publisher.publish(outgoing, timeout=settings.publish_timeout)
            if len(outcome.confirmed) != len(batch):
                raise PublishError(
                    f"moving events out of {source!r} was not confirmed by the broker "
                    f"({outcome.error or outcome.refused}); run the command again"
                )
            channel.basic_ack(batch[-1].delivery_tag, multiple=True)
            moved += len(batch)
    finally:
        channel.close()
