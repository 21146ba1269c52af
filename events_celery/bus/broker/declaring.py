"""Declaring the bus's topology on a connection, and probing its queues.

:func:`declare` declares a :class:`~.topology.Topology` on a channel of its own;
:class:`Declarations` is the one declaration cache (each topology once per connection), and
:func:`declare_consumer` declares this service's queues once their partitions agree with the
broker's. :func:`queue_stats` is the one probe of a queue (:func:`queue_depth`,
:func:`warn_parked` and :func:`declared_partitions` read it).

Declaring is idempotent. It happens when a worker starts, on the first publish to a topic, and
with ``manage.py declare_event_topology``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu import Connection, Exchange, Queue

from events_celery.bus.broker.topology import Topology, consumer_topology, ordered_name
from events_celery.conf import BusSettings, Subscription
from events_celery.exceptions import ConfigurationError

logger = logging.getLogger(__name__)


def declare(connection: Connection, topology: Topology) -> None:
    """Declare every exchange and queue of ``topology`` (idempotent), on a channel of its own.

    A broker user without the right to configure an exchange (``403 ACCESS_REFUSED``: the
    least-privilege permissions of ``manage.py event_bus_permissions`` grant it on the
    service's own names only) uses the exchange as an administrator declared it: it is checked
    passively, on a new channel, since the refusal closed the first. The shared parking queues
    are declared only when they do not exist yet.

    Raises:
        ConfigurationError: an entity exists on the broker with other arguments (for instance a
            classic queue where the settings now ask for quorum), or it is missing and the broker
            user may not declare it.
    """
    channels = _Channels(connection)
    try:
        exchanges = {e.name: e for e in topology.exchanges}
        queues = []
        for queue in topology.queues:
            if queue.name.endswith(".unrouted") and queue_depth(connection, queue.name) is not None:
                continue  # shared by every publisher of the topic: keep it as it was declared
            queues.append(queue)
            for exchange in (queue.exchange, *(b.exchange for b in queue.bindings)):
                if exchange is not None and exchange.name:
                    exchanges.setdefault(exchange.name, exchange)
        for exchange in exchanges.values():
            _declare_exchange(exchange, channels)
        for queue in queues:
            _declare_queue(queue, channels)
    finally:
        channels.close()


class _Channels:
    """The channel declarations run on, replaced when the broker closes it with an error."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel: Any = None

    @property
    def current(self) -> Any:
        if self._channel is None:
            self._channel = self.connection.channel()
        return self._channel

    def renew(self) -> Any:
        """A new channel, after an error closed the current one."""
        self.close()
        return self.current

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception:  # already closed by the broker: nothing to release
                logger.debug("closing a declaration channel failed", exc_info=True)


def _declare_exchange(exchange: Exchange, channels: _Channels) -> None:
    try:
        _declare_one(exchange, channels.current)
    except Exception as exc:
        if reply_code(exc) != 403:
            raise
        # The broker user may not configure it: use it as it was declared, if it exists.
        channel = channels.renew()
        try:
            channel.exchange_declare(exchange.name, exchange.type, passive=True)
        except Exception as missing:
            if reply_code(missing) != 404:
                raise
            channels.renew()
            raise ConfigurationError(
                f"exchange {exchange.name!r} does not exist, and the broker user may not declare "
                f"it ({exc}); declare the topology once with an administrator's credentials "
                "(manage.py declare_event_topology), or grant the permissions manage.py "
                "event_bus_permissions prints"
            ) from missing
        logger.debug("exchange %r: declared by an administrator (%s)", exchange.name, exc)


def _declare_queue(queue: Queue, channels: _Channels) -> None:
    # kombu's Queue.declare() without declaring the exchanges again (see _declare_exchange).
    channel = channels.current
    try:
        bound = queue.bind(channel)
        _declare_one(bound, channel, queue_only=True)
        if bound.exchange is not None and bound.exchange.name:
            bound.queue_bind()
        for binding in bound.bindings:
            binding.bind(bound, channel=channel)
    except Exception as exc:
        if reply_code(exc) != 403:
            raise
        channels.renew()
        raise ConfigurationError(
            f"the broker user may not declare or bind queue {queue.name!r} ({exc}); grant the "
            "permissions manage.py event_bus_permissions prints, or declare the topology with "
            "an administrator's credentials (manage.py declare_event_topology)"
        ) from exc


def _declare_one(entity: Exchange | Queue, channel: Any, *, queue_only: bool = False) -> None:
    try:
        if isinstance(entity, Queue) and queue_only:
            entity.bind(channel).queue_declare()
        else:
            entity.bind(channel).declare()
    except Exception as exc:
        if reply_code(exc) == 406:  # PRECONDITION_FAILED: arguments differ
            raise ConfigurationError(
                f"{type(entity).__name__.lower()} {entity.name!r} already exists on the broker "
                f"with other arguments ({exc}); keep the settings it was declared with, or "
                "delete it (after draining it) so it can be declared again"
            ) from exc
        raise


class Declarations:
    """What one connection has declared: each topology once (as kombu's ``maybe_declare``).

    The one declaration cache of the bus; forget it when the connection is dropped.
    """

    def __init__(self) -> None:
        self._done: set[tuple[str, ...]] = set()

    def ensure(
        self,
        connection: Connection,
        topology: Topology,
        *,
        first: Callable[[], object] | None = None,
    ) -> None:
        """Declare ``topology`` on ``connection`` unless it was declared since the last forget.

        Args:
            connection: the connection.
            topology: what must exist.
            first: called before declaring (only when it declares).
        """
        if topology.names in self._done:
            return
        if first is not None:
            first()
        declare(connection, topology)
        self._done.add(topology.names)

    def forget(self) -> None:
        """Declare everything again on the next :meth:`ensure` (a new connection)."""
        self._done.clear()


def declare_consumer(
    connection: Connection, settings: BusSettings, max_priority: int | None = None
) -> None:
    """Declare this service's queues (:func:`consumer_topology`), once its partitions agree.

    Raises:
        ConfigurationError: see :func:`refuse_changed_partitions` and :func:`declare`.
    """
    refuse_changed_partitions(connection, settings)
    declare(connection, consumer_topology(settings, max_priority))


def refuse_changed_partitions(connection: Connection, settings: BusSettings) -> None:
    """Raise when an ordered subscription's ``partitions`` differs from the broker's queues.

    Raises:
        ConfigurationError: naming the subscription, both counts and the operation to run.
    """
    service = settings.require_service_name()
    for subscription in settings.subscriptions:
        if not subscription.order_by_key:
            continue
        found = declared_partitions(connection, service, subscription)
        if found and found != subscription.partitions:
            raise ConfigurationError(
                f"EVENT_BUS_CONSUMER_CONFIG[{subscription.topic!r}] asks for "
                f"{subscription.partitions} partition(s), but the broker has {found}: changing "
                "them moves keys between partitions. Stop this service's workers, run "
                f"`manage.py event_bus_partitions {subscription.topic} --apply` with the new "
                "settings (it moves the waiting events in their order), then start the workers"
            )


def declared_partitions(connection: Connection, service: str, subscription: Subscription) -> int:
    """How many partition queues of an ordered subscription exist on the broker (0: none).

    Partition queues are numbered from 0 without gaps, so the first missing one ends the count.
    """
    count = 0
    while count < 1024 and queue_stats(
        connection, f"{ordered_name(service, subscription.topic)}.{count}"
    ):
        count += 1
    return count


def warn_parked(connection: Connection, queue: str) -> None:
    """Log a WARNING when ``queue`` (a topic's parking queue) holds events."""
    parked = queue_depth(connection, queue)
    if parked:
        logger.warning(
            "%d event(s) are parked in %s: no service subscribes to their event type on this "
            "topic yet (the oldest are dropped past EVENT_BUS_UNROUTED_MAX_LENGTH)",
            parked,
            queue,
        )


def queue_depth(connection: Connection, queue: str) -> int | None:
    """How many messages ``queue`` holds, or ``None`` when it does not exist.

    Raises:
        Exception: the broker's error, for anything but a missing queue.
    """
    stats = queue_stats(connection, queue)
    return None if stats is None else stats[0]


def queue_stats(connection: Connection, queue: str) -> tuple[int, int] | None:
    """``(messages, consumers)`` of ``queue``, or ``None`` when it does not exist.

    The one probe of a queue: a passive declaration on a channel of its own (a 404 closes the
    channel it happens on).

    Raises:
        Exception: the broker's error, for anything but a missing queue.
    """
    channel: Any = connection.channel()  # a 404 closes the channel it happens on
    try:
        _, count, consumers = channel.queue_declare(queue, passive=True)
    except Exception as exc:
        if reply_code(exc) == 404:
            return None
        raise
    channel.close()
    return int(count), int(consumers)


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code of a broker error (404, 406, ...), whichever transport raised it."""
    for attribute in ("reply_code", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int) and value:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None
