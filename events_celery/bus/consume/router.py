"""The router of an ordered subscription: intake queue to the partitions of the keys.

One worker at a time is the active consumer of the intake queue ``<service>.<topic>.ordered``
(see :mod:`.ordered`); its router checks each event as the unordered consumer does,
republishes it to the partition of its key on one channel with publisher confirms, and
acknowledges what the broker confirmed, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Queue
from kombu.message import Message

from events_celery.bus import hooks
from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outcome, Outgoing
from events_celery.bus.broker.connection import bus_connection, is_amqp, raw_body
from events_celery.bus.consume.handoff import Envelope, deliver_later, envelope
from events_celery.bus.consume.keys import partition_of
from events_celery.bus.consume.partition import close_channel
from events_celery.bus.consume.step import dead_letter_poison, origin, poison_reason
from events_celery.exceptions import PublishError
from events_celery.wire import (
    HEADER_PARTITION_KEY,
    HEADER_USER_ID,
    OutgoingMessage,
    plain_headers,
)

if TYPE_CHECKING:
    from events_celery.bus.consume.ordered_topic import OrderedTopic

logger = logging.getLogger(__name__)


class Router:
    """Routes the intake queue's events to the partitions of their keys (when this worker is
    the intake's active consumer)."""

    def __init__(self, topic: OrderedTopic, queue: Queue, partitions: topology.Topology) -> None:
        self.topic = topic
        self.queue = queue
        self.declare = partitions
        self.channel: Any = None
        self.publisher = ConfirmingPublisher(
            bus_connection(topic.settings, confirm_publish=False),
            window=topic.settings.publish_window,
        )
        self._batch: list[tuple[Message, Outgoing]] = []
        self._flush_entry: Any = None
        self._failures = 0  # routing failures in a row (see _reopen)
        self.multiple_acks = True
        self.paused = False

    def open(self) -> None:
        self.paused = False
        self.multiple_acks = is_amqp(self.topic.step.connection)
        self.channel = self.topic.step.connection.channel()
        self.channel.basic_qos(0, self.topic.settings.consumer_batch_size * 2, False)
        Consumer(
            self.channel, queues=[self.queue], on_message=self.on_message, auto_declare=False
        ).consume()

    def pause(self) -> None:
        self.paused = True
        self._cancel_flush()
        self._batch = []  # unacknowledged: back to the intake, in order, with the channel

    def on_message(self, message: Message) -> None:
        """Check an event and queue it for the partition of its key."""
        if self.paused:
            return
        topic, settings = self.topic, self.topic.settings
        body = raw_body(message)
        routing_key = message.delivery_info.get("routing_key")
        reason = poison_reason(settings, message, body)
        if reason is not None:
            dead_letter_poison(settings, message, reason)
            return
        hooks.consumed(settings, topic.subscription.topic, str(routing_key))
        headers = plain_headers(message.headers)
        key = headers.get(HEADER_PARTITION_KEY)
        if key is None:
            user_id = message.properties.get("user_id")
            self._unordered(
                message, envelope(headers, body, origin=origin(message), user_id=user_id)
            )
            return
        number = partition_of(str(key), len(topic.partitions))
        partition = topic.partitions[number]
        outgoing = Outgoing(
            len(self._batch),
            partition.queue.exchange.name,
            partition.queue.routing_key,
            OutgoingMessage(body, *_forwarded(headers, message)),
            self.declare,
        )
        self._batch.append((message, outgoing))
        if len(self._batch) >= settings.consumer_batch_size:
            self.flush()
        elif self._flush_entry is None:
            self._flush_entry = topic.step.timer.call_after(
                settings.consumer_flush_interval, self.flush
            )

    def flush(self) -> None:
        """Publish the batch to the partitions; acknowledge what the broker confirmed in order."""
        self._cancel_flush()
        batch, self._batch = self._batch, []
        if not batch or self.paused:
            return
        outcome = self.publisher.publish(
            [outgoing for _, outgoing in batch], timeout=self.topic.settings.publish_timeout
        )
        if acknowledge_routed(batch, outcome, self.queue.name, multiple=self.multiple_acks):
            self._failures = 0
            return
        self._reopen()

    def _unordered(self, message: Message, item: Envelope) -> None:
        # An event without a key keeps no order (as a Kafka record without a key): the
        # unordered receiver tasks run it.
        try:
            deliver_later(self.topic.step.app, self.topic.settings, [item])
        except PublishError:
            logger.exception("handing an event without a key to the receiver tasks failed")
            self._reopen()
            return
        message.ack()

    def _reopen(self) -> None:
        """Give the intake's events back (in order) and register again after a backoff.

        The publisher starts over too, declaring the partitions again (a returned copy means
        one lost its queue or binding).
        """
        close_channel(self.channel)
        self.channel = None
        self.publisher.close()
        self._failures += 1
        pause = min(2.0 ** (self._failures - 1) * 0.5, 30.0)
        logger.warning("routing %s again in %.1fs", self.queue.name, pause)
        self.topic.step.timer.call_after(pause, self._open_unless_paused)

    def _open_unless_paused(self) -> None:
        if not self.paused and self.channel is None:
            self.open()

    def _cancel_flush(self) -> None:
        if self._flush_entry is not None:
            self._flush_entry.cancel()
            self._flush_entry = None


def acknowledge_routed(
    batch: Sequence[tuple[Message, Outgoing]], outcome: Outcome, queue: str, *, multiple: bool
) -> bool:
    """Acknowledge the intake messages of ``batch`` the broker confirmed, from its start on.

    Acknowledging past an unconfirmed event would let later events of its key overtake it:
    the caller gives the rest back to the intake (in order, by closing the channel). Returns
    whether the whole batch was confirmed. ``multiple``: one frame for the run, where the
    transport honours it.
    """
    confirmed = set(outcome.confirmed)
    done = 0
    while done < len(batch) and batch[done][1].key in confirmed:
        done += 1
    if done and multiple:
        batch[done - 1][0].ack(multiple=True)
    elif done:
        for message, _ in batch[:done]:
            message.ack()
    if done == len(batch):
        return True
    logger.warning(
        "routing %d event(s) of %s to their partitions was not confirmed (%s); they go back "
        "to the intake queue",
        len(batch) - done,
        queue,
        outcome.error or outcome.refused or "no answer",
    )
    return False


def _forwarded(headers: dict[str, Any], message: Message) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headers and properties of an event the router republishes to a partition.

    The broker checks ``user_id`` against the publishing user, here the router's: the user the
    event came from (checked by the router) travels in a header instead.
    """
    properties = dict(message.properties)
    properties.pop("application_headers", None)
    user_id = properties.pop("user_id", None)
    headers = {k: v for k, v in headers.items() if k != HEADER_USER_ID}
    if user_id is not None:
        headers[HEADER_USER_ID] = str(user_id)
    return headers, properties
