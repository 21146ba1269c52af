"""The RabbitMQ topology of the bus: exchanges and queues, their names and their declaration.

* one durable ``topic`` exchange per topic, ``<prefix><topic>``; routing key = event type;
* on each topic exchange an alternate exchange, ``<prefix><topic>.unrouted``, that parks events
  no service subscribes to yet in a bounded queue of the same name;
* per consuming service and topic, a durable queue ``<service>.<topic>`` bound with the event
  types the service subscribes to (``#`` for all);
* per consuming service and topic ordered by key (``order_by_key``), instead of that queue: an
  intake queue ``<service>.<topic>.ordered`` bound the same way, a direct exchange of the same
  name and its partition queues ``<service>.<topic>.ordered.<n>``, all with a single active
  consumer (see :mod:`events_celery.bus.consume.ordered`);
* per service, a private queue ``<service>.events_celery.tasks`` for its receiver tasks, and a
  dead-letter exchange and queue ``<service>.events_celery.dead_letters`` that every queue of
  the service dead-letters to.

Only the exchange names carry ``EVENT_BUS_TOPIC_PREFIX``: environments that share a broker
each have a virtual host of their own (``docs/decisions/0009-...``, check ``W005``).

Declaring is idempotent. It happens when a worker starts, on the first publish to a topic, and
with ``manage.py declare_event_topology``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import attrs
from kombu import Connection, Exchange, Queue, binding

from events_celery.conf import BusSettings, Subscription
from events_celery.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

#: Queue and exchange names the library reserves inside each service's namespace.
RESERVED_SEGMENT = "events_celery"


def exchange_name(prefix: str, topic: str) -> str:
    """Name of the topic exchange of ``topic``."""
    return f"{prefix}{topic}"


def topic_exchange(prefix: str, topic: str) -> Exchange:
    """The durable topic exchange of ``topic``, with its alternate exchange for unrouted events."""
    name = exchange_name(prefix, topic)
    return Exchange(
        name,
        type="topic",
        durable=True,
        delivery_mode=2,
        arguments={"alternate-exchange": f"{name}.unrouted"},
    )


def unrouted_queue(prefix: str, topic: str, max_length: int, queue_type: str = "classic") -> Queue:
    """The bounded queue that parks events of ``topic`` no service subscribes to.

    Publishing never fails because of it: when it is full the broker drops the oldest parked
    event (``drop-head``). A publishing process logs how many are parked, at most once a
    minute per topic (:func:`warn_parked`), and ``manage.py show_event_bus`` shows it.
    Every service publishing to the topic shares this queue, so it is declared only when it
    does not exist yet (see :func:`declare`).

    It has the queue type of the other queues (``EVENT_BUS_QUEUE_TYPE``): on a cluster, a
    classic queue lives on one node, and while that node is down declaring it fails (404, "home
    node ... is down"), which would stop every publisher and worker that declares the topic.
    """
    name = unrouted_name(prefix, topic)
    return Queue(
        name,
        exchange=Exchange(name, type="fanout", durable=True),
        routing_key="",
        durable=True,
        queue_arguments={
            "x-queue-type": queue_type,
            "x-max-length": max_length,
            "x-overflow": "drop-head",
        },
    )


def unrouted_name(prefix: str, topic: str) -> str:
    """Name of the alternate exchange and parking queue of ``topic``."""
    return f"{exchange_name(prefix, topic)}.unrouted"


def dead_letter_exchange(service: str) -> Exchange:
    """The exchange every queue of ``service`` dead-letters to."""
    return Exchange(f"{service}.{RESERVED_SEGMENT}.dead_letters", type="fanout", durable=True)


def dead_letter_queue(service: str, queue_type: str = "classic") -> Queue:
    """The broker's dead-letter queue of ``service``: where rejected messages go, and dead letters
    written while the database was unavailable (``event_dead_letters import`` moves them into
    the table)."""
    exchange = dead_letter_exchange(service)
    return Queue(
        exchange.name,
        exchange=exchange,
        routing_key="",
        durable=True,
        queue_arguments={"x-queue-type": queue_type},
    )


def _dead_lettered(queue_type: str, service: str) -> dict[str, object]:
    arguments: dict[str, object] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": dead_letter_exchange(service).name,
    }
    if queue_type == "quorum":
        # Quorum queues can dead-letter at least once (classic queues only at most once);
        # RabbitMQ requires reject-publish overflow for it.
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


def task_queue(service: str, queue_type: str = "classic", max_priority: int | None = None) -> Queue:
    """The service-private queue of receiver tasks (first runs and retries).

    It sits behind its own topic exchange of the same name (not the default exchange): with
    quorum queues, Celery delays countdown tasks (receiver retries) on the broker only for
    queues reached through a topic or fanout exchange; otherwise the worker holds each pending
    retry unacknowledged, and enough of them stop it from taking new events.

    ``max_priority`` must be Celery's ``task_queue_max_priority``: Celery adds it to every
    queue a worker consumes, and a queue declared twice must have the same arguments.
    """
    name = f"{service}.{RESERVED_SEGMENT}.tasks"
    arguments = _dead_lettered(queue_type, service)
    if max_priority is not None:
        arguments["x-max-priority"] = max_priority
    return Queue(
        name,
        exchange=Exchange(name, type="topic", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=arguments,
    )


def service_queue(
    service: str, prefix: str, subscription: Subscription, queue_type: str = "classic"
) -> Queue:
    """The queue ``<service>.<topic>``, bound to the topic exchange with the subscribed types."""
    return Queue(
        f"{service}.{subscription.topic}",
        bindings=_subscribed(prefix, subscription),
        durable=True,
        queue_arguments=_dead_lettered(queue_type, service),
    )


def _subscribed(prefix: str, subscription: Subscription) -> list[binding]:
    """Bindings to the topic exchange for the subscribed event types (``#``: all)."""
    exchange = topic_exchange(prefix, subscription.topic)
    return [binding(exchange, routing_key=key) for key in subscription.event_types or ("#",)]


#: Times a partition queue on a quorum queue delivers a message before dead-lettering it. The
#: limit is needed for order: without one, RabbitMQ before 4.0 puts a returned message at the
#: back of a quorum queue. A message returns when its worker dies or hands its partition on.
PARTITION_DELIVERY_LIMIT = 100


def ordered_name(service: str, topic: str) -> str:
    """Name of the intake queue, and of the partition exchange, of an ordered subscription."""
    return f"{service}.{topic}.ordered"


def _single_active(queue_type: str, service: str) -> dict[str, object]:
    arguments = _dead_lettered(queue_type, service)
    arguments["x-single-active-consumer"] = True
    if queue_type == "quorum":
        arguments["x-delivery-limit"] = PARTITION_DELIVERY_LIMIT
    return arguments


def intake_queue(
    service: str, prefix: str, subscription: Subscription, queue_type: str = "classic"
) -> Queue:
    """The queue an ordered subscription takes its events from, in the order they came."""
    return Queue(
        ordered_name(service, subscription.topic),
        bindings=_subscribed(prefix, subscription),
        durable=True,
        queue_arguments=_single_active(queue_type, service),
    )


def partition_exchange(service: str, topic: str) -> Exchange:
    """The direct exchange that routes an ordered subscription's events to its partitions."""
    return Exchange(ordered_name(service, topic), type="direct", durable=True)


def partition_queue(
    service: str, subscription: Subscription, number: int, queue_type: str = "classic"
) -> Queue:
    """Partition queue ``number`` of an ordered subscription (routing key: the number)."""
    exchange = partition_exchange(service, subscription.topic)
    return Queue(
        f"{exchange.name}.{number}",
        exchange=exchange,
        routing_key=str(number),
        durable=True,
        queue_arguments=_single_active(queue_type, service),
    )


def partition_queues(
    service: str, subscription: Subscription, queue_type: str = "classic"
) -> tuple[Queue, ...]:
    """Every partition queue of an ordered subscription."""
    return tuple(
        partition_queue(service, subscription, n, queue_type)
        for n in range(subscription.partitions)
    )


def presence_queue(service: str, topic: str) -> Queue:
    """The queue each worker of an ordered subscription listens on, so they can count each other.

    Nothing is published to it; its consumer count is the number of workers. Unused for an
    hour, the broker deletes it.
    """
    return Queue(
        f"{ordered_name(service, topic)}.workers",
        durable=False,
        auto_delete=False,
        queue_arguments={"x-queue-type": "classic", "x-expires": 3_600_000},
    )


def subscription_queues(
    service: str, prefix: str, subscription: Subscription, queue_type: str = "classic"
) -> tuple[Queue, ...]:
    """The queues one subscription declares: its service queue, or the ordered ones."""
    if not subscription.order_by_key:
        return (service_queue(service, prefix, subscription, queue_type),)
    return (
        intake_queue(service, prefix, subscription, queue_type),
        *partition_queues(service, subscription, queue_type),
    )


@attrs.frozen
class Topology:
    """Exchanges and queues to declare together.

    Attributes:
        exchanges: the exchanges.
        queues: the queues (each declares its own exchange and bindings too).
        names: names of the exchanges, then the queues; identifies what was declared.
    """

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    names: tuple[str, ...] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        names = tuple(e.name for e in self.exchanges) + tuple(q.name for q in self.queues)
        object.__setattr__(self, "names", names)


@lru_cache(maxsize=1024)
def topic_topology(settings: BusSettings, topic: str) -> Topology:
    """What publishing to ``topic`` needs (cached: it is looked up on every publish)."""
    return producer_topology(settings, [topic])


def producer_topology(settings: BusSettings, topics: Iterable[str]) -> Topology:
    """Exchanges (and their parking queues) for publishing to ``topics``."""
    topics = sorted(set(topics))
    return Topology(
        exchanges=tuple(topic_exchange(settings.topic_prefix, t) for t in topics),
        queues=tuple(
            unrouted_queue(
                settings.topic_prefix, t, settings.unrouted_max_length, settings.queue_type
            )
            for t in topics
        ),
    )


def consumer_topology(settings: BusSettings, max_priority: int | None = None) -> Topology:
    """The queues of this service: one per subscribed topic, tasks, and dead letters.

    ``max_priority``: Celery's ``task_queue_max_priority`` (see :func:`task_queue`).
    """
    service = settings.require_service_name()
    producer = producer_topology(settings, (s.topic for s in settings.subscriptions))
    return Topology(
        exchanges=(*producer.exchanges, dead_letter_exchange(service)),
        queues=(
            *producer.queues,
            dead_letter_queue(service, settings.queue_type),
            task_queue(service, settings.queue_type, max_priority),
            *(
                queue
                for s in settings.subscriptions
                for queue in subscription_queues(
                    service, settings.topic_prefix, s, settings.queue_type
                )
            ),
        ),
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


def declare_consumer(
    connection: Connection, settings: BusSettings, max_priority: int | None = None
) -> None:
    """Declare this service's queues (:func:`consumer_topology`), once its partitions agree.

    Raises:
        ConfigurationError: see :func:`refuse_changed_partitions` and :func:`declare`.
    """
    refuse_changed_partitions(connection, settings)
    declare(connection, consumer_topology(settings, max_priority))


def service_topology(settings: BusSettings, max_priority: int | None = None) -> Topology:
    """All this service declares: the exchanges it publishes to, and its queues if it consumes."""
    published = {route.topic for routes in settings.routes.values() for route in routes}
    if not settings.subscriptions:
        return producer_topology(settings, published)
    consumer = consumer_topology(settings, max_priority)
    producer = producer_topology(settings, published - {s.topic for s in settings.subscriptions})
    return Topology(
        exchanges=consumer.exchanges + producer.exchanges,
        queues=consumer.queues + producer.queues,
    )


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


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code of a broker error (404, 406, ...), whichever transport raised it."""
    for attribute in ("reply_code", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int) and value:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None
