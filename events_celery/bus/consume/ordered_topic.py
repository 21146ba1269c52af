"""One ordered subscription in one worker: its router, its partitions, its share of them.

See :mod:`.ordered` for the path an event takes; this is the part of one subscription
(``order_by_key`` in ``EVENT_BUS_CONSUMER_CONFIG``): the intake's router, the partition queues,
and the presence queue through which the workers count each other to share the partitions.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from kombu import Consumer

from events_celery.bus.broker import topology
from events_celery.bus.consume.keys import partition_of
from events_celery.bus.consume.partition import Partition, close_channel
from events_celery.bus.consume.router import Router
from events_celery.conf import BusSettings, Subscription

if TYPE_CHECKING:
    from events_celery.bus.consume.ordered import OrderedConsumerStep

logger = logging.getLogger(__name__)


class OrderedTopic:
    """One ordered subscription in one worker: its router and its partitions."""

    def __init__(
        self, step: OrderedConsumerStep, settings: BusSettings, subscription: Subscription
    ):
        self.step = step
        self.settings = settings
        self.subscription = subscription
        service = settings.require_service_name()
        self.exchange = topology.exchange_name(settings.topic_prefix, subscription.topic)
        queues = topology.partition_queues(service, subscription, settings.queue_type)
        self.partitions = [Partition(self, n, queue) for n, queue in enumerate(queues)]
        self.router = Router(
            self,
            topology.intake_queue(
                service, settings.topic_prefix, subscription, settings.queue_type
            ),
            topology.Topology((topology.partition_exchange(service, subscription.topic),), queues),
        )
        self.presence = topology.presence_queue(service, subscription.topic)
        self._presence_channel: Any = None

    def open(self) -> None:
        """Register on the intake, every partition and the presence queue."""
        self._presence_channel = self.step.connection.channel()
        self.presence.bind(self._presence_channel).declare()
        Consumer(
            self._presence_channel, queues=[self.presence], no_ack=True, auto_declare=False
        ).consume()
        self.router.open()
        for partition in self.partitions:
            partition.open()
        logger.info(
            "events_celery: ordered by key: %s (%d partitions, %s)",
            self.router.queue.name,
            len(self.partitions),
            self.subscription.when_exhausted,
        )

    def pause(self) -> None:
        self.router.pause()
        for partition in self.partitions:
            partition.keys.paused = True
            partition.cancel_timers()

    def close(self) -> None:
        for channel in (self._presence_channel, self.router.channel):
            close_channel(channel)
        for partition in self.partitions:
            partition.flush_acks()
            close_channel(partition.channel)

    def kick(self, key: str) -> None:
        """A run of ``key`` finished: its next event may start, whichever partition holds it."""
        self.partitions[partition_of(key, len(self.partitions))].keys.kick(key)

    def workers(self) -> int:
        """How many workers consume this subscription (its presence queue's consumers)."""
        _, _, consumers = self._presence_channel.queue_declare(self.presence.name, passive=True)
        return max(int(consumers), 1)

    def rebalance(self) -> None:
        """Hand on the partitions past this worker's share, those with the least work first.

        An event waiting for its next attempt counts its attempts only in the worker holding
        it, so partitions with such an event are handed on last.
        """
        share = math.ceil(len(self.partitions) / self.workers())
        held = [p for p in self.partitions if p.active and not p.releasing]
        held.sort(key=lambda p: (p.retrying(), len(p.keys), -p.number))
        for partition in held[: len(held) - share]:
            partition.release()
