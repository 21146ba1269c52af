"""The RabbitMQ topology of the bus: exchanges and queues, and their names.

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

A :class:`Topology` is what to declare together; :mod:`.declaring` declares it on a
connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import attrs
from kombu import Exchange, Queue, binding

from events_celery.conf import BusSettings, Subscription

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
    minute per topic (:func:`~.declaring.warn_parked`), and ``manage.py show_event_bus`` shows it.
    Every service publishing to the topic shares this queue, so it is declared only when it
    does not exist yet (see :func:`~.declaring.declare`).

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
