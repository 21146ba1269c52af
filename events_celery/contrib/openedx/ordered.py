"""``consume_events`` of a topic ordered by key: the events of one key run in publish order.

A consumer group's topic is ordered when ``EVENT_BUS_CONSUMER_CONFIG[topic]`` of the process
running ``consume_events`` has ``order_by_key: True``; its ``partitions`` and
``when_exhausted`` apply, and the group id takes the place of the service name in the queue
names. The path is the one of the Celery workers (:mod:`events_celery.bus.consume.ordered`,
``docs/decisions/0010-...``), with the same queues:

1. **Intake.** ``<group>.<topic>.ordered`` is bound to the topic's exchange with ``#`` and has
   a single active consumer: one process of the group routes it. Each message is checked
   (a poison one is dead-lettered) and republished, on one channel with publisher confirms,
   to the partition of its key (:func:`~events_celery.bus.consume.keys.partition_of`; an
   event without a key counts as the key ``""``), then acknowledged.
2. **Partitions.** Every process registers on every partition queue
   ``<group>.<topic>.ordered.<n>`` (single active consumer), so each is a standby for the
   others. A process that holds more than its share (partitions ÷ processes, counted through
   the presence queue) hands partitions on by closing their channel and registering again.
3. **One event at a time.** ``consume_events`` runs one event at a time, so each partition
   runs its events first in, first out: an event starts when the one before it in its
   partition is finished or dead-lettered. A failing event runs again after its backoff with
   its message unacknowledged (no retry queue: it would let later events overtake it), while
   the other partitions go on. After the last attempt it is dead-lettered and its key goes on
   (``when_exhausted: "continue"``) or holds its later events as dead letters (``"stop"``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
from kombu import Connection, Consumer, Queue
from kombu.message import Message

from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outgoing
from events_celery.bus.broker.connection import (
    bus_connection,
    is_amqp,
    publisher_user,
    raw_body,
)
from events_celery.bus.consume import returns
from events_celery.bus.consume.keys import Recent, partition_of
from events_celery.bus.consume.partition import close_channel
from events_celery.bus.consume.router import acknowledge_routed
from events_celery.bus.dead_letters.store import Failure, Reason, key_held
from events_celery.conf import Subscription
from events_celery.wire import (
    HEADER_ID,
    HEADER_PARTITION_KEY,
    HEADER_TYPE,
    HEADER_USER_ID,
    KEPT_PROPERTIES,
    OutgoingMessage,
    header_text,
    plain_headers,
)

if TYPE_CHECKING:
    from events_celery.contrib.openedx.consumer import EventsCeleryConsumer

logger = logging.getLogger(__name__)

#: Seconds between two counts of the group's processes (and hand-overs past a share).
REBALANCE_EVERY = 2.0

#: Unacknowledged messages a process takes from each partition it holds. One event runs at a
#: time, so a few are enough to keep it busy; a hand-over gives back at most these.
PARTITION_PREFETCH = 8


@attrs.define(eq=False)
class Waiting:
    """An event of a partition, in line or waiting for its next attempt."""

    message: Message
    event_id: str
    key: str
    attempt: int = 1
    #: ``time.monotonic()`` before which it does not run (its backoff).
    not_before: float = 0.0
    #: Its message came back (``redelivered``): its first start here is counted.
    returned: bool = False


class Partition:
    """One partition queue in this process, and the events it delivered, in their order."""

    def __init__(self, number: int, queue: Queue) -> None:
        self.number = number
        self.queue = queue
        self.channel: Any = None
        self.waiting: deque[Waiting] = deque()
        #: It delivered an event since this process registered: this process is its active one.
        self.active = False

    def open(self, connection: Connection) -> None:
        """Register on the partition queue (last in line when others are registered)."""
        self.waiting.clear()
        self.active = False
        self.channel = connection.channel()
        self.channel.basic_qos(0, PARTITION_PREFETCH, False)
        Consumer(
            self.channel, queues=[self.queue], on_message=self.on_message, auto_declare=False
        ).consume()

    def on_message(self, message: Message) -> None:
        self.active = True
        headers = plain_headers(message.headers)
        self.waiting.append(
            Waiting(
                message,
                str(headers.get(HEADER_ID)),
                str(headers.get(HEADER_PARTITION_KEY, "")),
                returned=bool(message.delivery_info.get("redelivered")),
            )
        )

    def next_at(self) -> float | None:
        """When its first event may run (``None``: nothing waiting)."""
        return self.waiting[0].not_before if self.waiting else None

    def close(self) -> None:
        """Close its channel: its unacknowledged events go back to the queue, in order."""
        close_channel(self.channel)
        self.channel = None
        self.waiting.clear()
        self.active = False

    def hand_on(self, connection: Connection) -> None:
        """Let the next registered process take this partition; register again, last."""
        logger.info("events_celery: handing %s on to another process", self.queue.name)
        self.close()
        self.open(connection)


class Router:
    """Routes the intake's events to the partitions of their keys (in the active process)."""

    def __init__(self, group: OrderedGroup, queue: Queue) -> None:
        self.group = group
        self.queue = queue
        self.channel: Any = None
        self.publisher = ConfirmingPublisher(
            bus_connection(group.consumer.settings, confirm_publish=False),
            window=group.consumer.settings.publish_window,
        )
        self.batch: list[tuple[Message, Outgoing]] = []

    def open(self, connection: Connection) -> None:
        self.batch = []
        self.channel = connection.channel()
        self.channel.basic_qos(0, self.group.consumer.settings.consumer_batch_size, False)
        Consumer(
            self.channel, queues=[self.queue], on_message=self.on_message, auto_declare=False
        ).consume()

    @property
    def full(self) -> bool:
        return len(self.batch) >= self.group.consumer.settings.consumer_batch_size

    def on_message(self, message: Message) -> None:
        """Check an event and line it up for the partition of its key."""
        consumer = self.group.consumer
        headers = dict(message.headers or {})
        info = message.delivery_info
        exchange, routing_key = str(info.get("exchange") or ""), info.get("routing_key")
        origin = f"{exchange}/{routing_key}"
        if not consumer.came_by(message, exchange, consumer.exchange, origin):
            return
        if consumer.read_event(message, headers, routing_key, origin) is None:
            return  # poison: dead-lettered
        plain = {k: v for k, v in plain_headers(headers).items() if k != HEADER_USER_ID}
        # Republished by the group's user (the broker checks user_id against it): the user the
        # event came from, checked above, travels in a header the partitions trust.
        original = consumer.publisher_of(message, headers)
        if original is not None:
            plain[HEADER_USER_ID] = original
        partition = self.group.partitions[
            partition_of(str(plain.get(HEADER_PARTITION_KEY, "")), len(self.group.partitions))
        ]
        properties: dict[str, Any] = {
            **{k: v for k, v in message.properties.items() if k in KEPT_PROPERTIES},
            "content_type": message.content_type,
            "content_encoding": "binary",
            "delivery_mode": 2,
        }
        own = publisher_user(consumer.settings)
        if own is not None:
            properties["user_id"] = own
        self.batch.append(
            (
                message,
                Outgoing(
                    len(self.batch),
                    partition.queue.exchange.name,
                    partition.queue.routing_key,
                    OutgoingMessage(raw_body(message), plain, properties),
                    self.group.declared,
                ),
            )
        )

    def flush(self, connection: Connection) -> None:
        """Publish the batch to the partitions; acknowledge what the broker confirmed, in order."""
        batch, self.batch = self.batch, []
        if not batch:
            return
        settings = self.group.consumer.settings
        outcome = self.publisher.publish(
            [outgoing for _, outgoing in batch], timeout=settings.publish_timeout
        )
        if acknowledge_routed(batch, outcome, self.queue.name, multiple=is_amqp(connection)):
            return
        close_channel(self.channel)
        self.open(connection)

    def close(self) -> None:
        self.batch = []
        close_channel(self.channel)
        self.channel = None


class OrderedGroup:
    """A consumer group's ordered topic in one ``consume_events`` process."""

    def __init__(self, consumer: EventsCeleryConsumer, subscription: Subscription) -> None:
        self.consumer = consumer
        self.subscription = subscription
        settings = consumer.settings
        group = consumer.group_id
        self.intake = topology.intake_queue(
            group, settings.topic_prefix, subscription, settings.queue_type
        )
        queues = topology.partition_queues(group, subscription, settings.queue_type)
        self.partitions = [Partition(n, queue) for n, queue in enumerate(queues)]
        self.exchange = topology.partition_exchange(group, subscription.topic)
        self.declared = topology.Topology((self.exchange,), queues)
        self.presence = topology.presence_queue(group, subscription.topic)
        self.router = Router(self, self.intake)
        self.recent = Recent()
        self.connection: Any = None
        self.channel: Any = None
        self._turn = 0
        self._rebalance_at = 0.0

    def queues(self) -> tuple[Queue, ...]:
        """The intake and the partition queues (declared with the group's other queues)."""
        return (self.intake, *self.declared.queues)

    def open(self, connection: Connection, channel: Any) -> None:
        """Register on the intake and on every partition (once per connection)."""
        self.connection, self.channel = connection, channel
        self.router.open(connection)
        for partition in self.partitions:
            partition.open(connection)
        self._rebalance_at = time.monotonic() + REBALANCE_EVERY

    def close(self) -> None:
        """Close every channel: what is not finished goes back to the broker, in order."""
        self.router.close()
        for partition in self.partitions:
            partition.close()
        self.router.publisher.close()

    def presence_consumer(self, channel: Any) -> Consumer:
        """The consumer on the presence queue whose count tells the processes of the group."""
        return Consumer(channel, queues=[self.presence], no_ack=True)

    def step(self, drained: bool) -> None:
        """Route what came in, hand partitions on when due, and run at most one event.

        Args:
            drained: the last wait for the broker delivered something (more may follow at
                once, so a batch that is not full waits for them).
        """
        if self.router.batch and (self.router.full or not drained):
            self.router.flush(self.connection)
        now = time.monotonic()
        if now >= self._rebalance_at:
            self._rebalance_at = now + REBALANCE_EVERY
            self.rebalance()
        partition = self._next_ready(now)
        if partition is not None:
            self.run(partition)

    def wait_time(self, longest: float) -> float:
        """How long the loop may wait for the broker before :meth:`step` has work."""
        now = time.monotonic()
        if self.router.batch:
            return 0.001
        wake = min(
            (at for p in self.partitions if (at := p.next_at()) is not None),
            default=now + longest,
        )
        return max(min(wake - now, self._rebalance_at - now, longest), 0.001)

    def _next_ready(self, now: float) -> Partition | None:
        # Partitions take turns, so a busy one does not starve the others.
        count = len(self.partitions)
        for offset in range(count):
            partition = self.partitions[(self._turn + offset) % count]
            at = partition.next_at()
            if at is not None and at <= now:
                self._turn = (self._turn + offset + 1) % count
                return partition
        return None

    def run(self, partition: Partition) -> None:
        """Run the first event of ``partition``: finished, dead-lettered, or to run again."""
        consumer = self.consumer
        waiting = partition.waiting[0]
        message = waiting.message
        if waiting.event_id in self.recent:  # a copy of an event finished here (routed twice)
            partition.waiting.popleft()
            message.ack()
            return
        headers = dict(message.headers or {})
        event_type = header_text(headers.get(HEADER_TYPE, ""))
        origin = f"{consumer.exchange}/{event_type}"
        exchange = str(message.delivery_info.get("exchange") or "")
        if not consumer.came_by(message, exchange, self.exchange.name, origin):
            partition.waiting.popleft()
            return
        event = consumer.read_event(message, headers, event_type, origin)
        if event is None:
            partition.waiting.popleft()
            return
        # "stop": while an earlier event of the key is a pending dead letter, this one is held.
        stopped = self.subscription.when_exhausted == "stop"
        if stopped and key_held(
            consumer.settings, consumer.exchange, waiting.key, waiting.event_id
        ):
            partition.waiting.popleft()
            self._hold(waiting, origin)
            return
        if waiting.returned and waiting.attempt == 1 and self._started_too_often(waiting, origin):
            partition.waiting.popleft()
            return
        failures = consumer.run_receivers(event)
        if failures and waiting.attempt < consumer.settings.retry_policy.max_attempts:
            delay = consumer.retry_in(waiting.attempt)
            consumer.log_retry(event, failures, waiting.attempt, delay)
            waiting.attempt += 1
            waiting.not_before = time.monotonic() + delay
            return
        partition.waiting.popleft()
        if failures:
            consumer.give_up(message, failures, waiting.attempt, origin)
        else:
            message.ack()
        if waiting.returned:
            returns.forget(consumer.settings.db_alias, consumer.group_id, waiting.event_id)
        self.recent.add(waiting.event_id)

    def _started_too_often(self, waiting: Waiting, origin: str) -> bool:
        """Count this start of an event that came back; past the limit, dead-letter it.

        ``consume_events`` runs events in its own process, so an event that kills what runs
        it would otherwise come back for ever on a classic queue (see
        :mod:`events_celery.bus.consume.returns`).
        """
        settings, group = self.consumer.settings, self.consumer.group_id
        why = returns.past_limit(
            settings.db_alias, group, waiting.event_id, settings.max_redeliveries
        )
        if why is None:
            return False
        failure = Failure(Reason.REDELIVERED, why, origin=origin)
        self.consumer.dead_letter_message(waiting.message, failure)
        returns.forget(settings.db_alias, group, waiting.event_id)
        self.recent.add(waiting.event_id)
        return True

    def rebalance(self) -> None:
        """Hand on the partitions past this process's share, those with the least work first."""
        try:
            _, _, processes = self.channel.queue_declare(self.presence.name, passive=True)
        except Exception:  # the broker went away: the consumer reconnects
            logger.exception("counting the processes of group %r failed", self.consumer.group_id)
            return
        share = math.ceil(len(self.partitions) / max(int(processes), 1))
        held = [p for p in self.partitions if p.active]
        # One waiting for a retry keeps its attempt count only while this process holds it.
        held.sort(key=lambda p: (bool(p.waiting) and p.waiting[0].attempt > 1, len(p.waiting)))
        for partition in held[: len(held) - share]:
            partition.hand_on(self.connection)

    def _hold(self, waiting: Waiting, origin: str) -> None:
        self.consumer.dead_letter_message(
            waiting.message,
            Failure(
                Reason.KEY_HELD,
                f"held: an earlier event of key {waiting.key!r} is a dead letter, and this "
                "group stops a key after a dead letter (when_exhausted: 'stop'); replay or "
                "discard that one, then replay this",
                origin=origin,
            ),
        )
        self.recent.add(waiting.event_id)
