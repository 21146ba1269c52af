"""The consumer openedx-events runs (``EVENT_BUS_CONSUMER``): ``manage.py consume_events``.

``consume_events -t TOPIC -g GROUP`` makes one :class:`EventsCeleryConsumer` and calls
:meth:`~EventsCeleryConsumer.consume_indefinitely`. It consumes the durable queue
``<GROUP>.<TOPIC>``, bound to the topic's exchange with ``#`` (every event type), so every
process of a group competes on one queue and each group gets every event. Each event runs the
signal's receivers through ``send_event_with_custom_metadata`` with the metadata that
travelled, one event at a time, and is acknowledged only afterwards:

* a receiver that raised makes the event wait in a retry queue (``EVENT_BUS_RETRY_POLICY``:
  attempt ``n`` waits ``min(backoff * 2 ** (n - 2), backoff_max)`` seconds, without jitter)
  and every receiver runs again; after ``max_attempts`` the event goes to the group's
  dead-letter store with the receivers' names, errors and traceback;
* a message that can never become an event (design section 6) is dead-lettered with the reason;
* a message that comes back unfinished (its consumer died) more than
  ``EVENT_BUS_MAX_REDELIVERIES`` times is dead-lettered instead of run again.

A topic that ``EVENT_BUS_CONSUMER_CONFIG`` orders by key is consumed instead through an intake
and partition queues, with retries held in the process (:mod:`.ordered`).
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from kombu import Connection, Consumer, Exchange, Queue, binding
from kombu.message import Message
from kombu.mixins import ConsumerMixin
from openedx_events.event_bus import EventBusConsumer
from openedx_events.tooling import prepare_for_new_work_cycle

from events_celery.bus import hooks
from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.backoff import retry_delay
from events_celery.bus.broker.connection import bus_connection, publisher_user, raw_body
from events_celery.bus.broker.retrying import retrying_publisher
from events_celery.bus.broker.tls import tls_failure
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter
from events_celery.conf import BusSettings, Subscription, bus_settings
from events_celery.conf.declarations import NAME_PATTERN
from events_celery.conf.routing import TOPIC_PATTERN
from events_celery.contrib.openedx import wire
from events_celery.contrib.openedx.ordered import OrderedGroup
from events_celery.exceptions import BrokerTLSError, ConfigurationError, PublishError
from events_celery.receivers import dotted_name
from events_celery.wire import (
    HEADER_ATTEMPT_NUMBER,
    HEADER_ORIGIN,
    HEADER_REDELIVERIES,
    HEADER_USER_ID,
    KEPT_PROPERTIES,
    OutgoingMessage,
    PoisonMessageError,
    header_text,
    plain_headers,
)

logger = logging.getLogger(__name__)


def put_back_exchange(group: str) -> Exchange:
    """The direct exchange by which ``group`` puts events back: into a retry queue, or its queue.

    An exchange of the group's own names, not the default exchange: a broker user allowed to
    publish to the default exchange could publish to every queue of the virtual host, so the
    least-privilege permissions (``manage.py event_bus_permissions``) grant it to no one.
    """
    return Exchange(f"{group}.{topology.RESERVED_SEGMENT}.put-back", type="direct", durable=True)


def retry_queue(group: str, topic: str, delay: float, queue_type: str = "classic") -> Queue:
    """The queue where events of ``group`` wait ``delay`` seconds before their next attempt.

    Every message in it waits as long (``x-message-ttl``), so they leave in order; then the
    broker dead-letters them back to the queue ``<group>.<topic>`` by
    :func:`put_back_exchange`, by which events reach it too (routing key: its name).
    """
    milliseconds = max(round(delay * 1000), 1)
    name = f"{group}.{topology.RESERVED_SEGMENT}.{topic}.wait-{milliseconds}ms"
    arguments: dict[str, object] = {
        "x-queue-type": queue_type,
        "x-message-ttl": milliseconds,
        # Not the default exchange: declaring a queue needs the right to write to its
        # dead-letter exchange, which no service's broker user has on the default one.
        "x-dead-letter-exchange": put_back_exchange(group).name,
        "x-dead-letter-routing-key": f"{group}.{topic}",
    }
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return Queue(
        name, put_back_exchange(group), routing_key=name, durable=True, queue_arguments=arguments
    )


class _StopRequestedError(Exception):
    """A stop was asked for while the consumer waited for the broker."""


class EventsCeleryConsumer(EventBusConsumer, ConsumerMixin):  # type: ignore[misc]
    """Consumes one topic as one consumer group, on RabbitMQ.

    Args:
        topic: the topic, without ``EVENT_BUS_TOPIC_PREFIX``.
        group_id: the consumer group; it names the group's queues (``<group_id>.<topic>``)
            and dead-letter store (``<group_id>.events_celery.dead_letters``), as a service
            name does.

    Raises:
        ConfigurationError: the topic or group id cannot name queues, or options other
            than ``topic`` and ``group_id`` were given.
    """

    def __init__(self, *, topic: str, group_id: str, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigurationError(
                f"consume_events: events_celery takes no extra options, got {sorted(kwargs)}"
            )
        if not isinstance(topic, str) or not TOPIC_PATTERN.match(topic):
            raise ConfigurationError(
                f"consume_events: {topic!r} is not a valid topic name (letters, digits, '.', "
                "'-', '_', starting with a letter or digit)"
            )
        if not isinstance(group_id, str) or not NAME_PATTERN.match(group_id):
            raise ConfigurationError(
                f"consume_events: group id {group_id!r} cannot name queues: use lowercase "
                "letters, digits, '-' and '_', starting with a letter or digit"
            )
        self.topic = topic
        self.group_id = group_id
        subscription = _subscription(bus_settings(), topic)
        self.settings: BusSettings = attrs.evolve(
            bus_settings(), service_name=group_id, consumer_config=(subscription,)
        )
        self.exchange = topology.exchange_name(self.settings.topic_prefix, topic)
        self.put_back = put_back_exchange(group_id)
        queue = topology.service_queue(
            group_id, self.settings.topic_prefix, subscription, self.queue_type
        )
        #: ``<group>.<topic>``: bound to the topic's exchange, and to :attr:`put_back` by name.
        self.queue = Queue(
            queue.name,
            bindings=[*queue.bindings, binding(self.put_back, routing_key=queue.name)],
            durable=True,
            queue_arguments=queue.queue_arguments,
        )
        #: The topic is ordered by key (``None``: it is not).
        self.ordered = OrderedGroup(self, subscription) if subscription.order_by_key else None
        self.connection: Connection = bus_connection(self.settings, confirm_publish=False)
        self._stopping = threading.Event()

    @property
    def queue_type(self) -> str:
        """``EVENT_BUS_QUEUE_TYPE``: the type of every queue of the group."""
        return self.settings.queue_type

    def consume_indefinitely(self) -> None:
        """Consume until the process is stopped; reconnects whenever the broker goes away.

        ``SIGTERM`` (what process managers send) stops it after the event being processed,
        so that event is not delivered again as one that came back unfinished, and within a
        second while it waits for an unreachable broker.
        """
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._stop) if main else None
        try:
            self._run()
        except _StopRequestedError:
            logger.info(
                "events_celery: group %r stopped while the broker was unreachable", self.group_id
            )
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    def _run(self) -> None:
        try:
            self.run()
        except (_StopRequestedError, BrokerTLSError):
            raise
        except Exception as exc:
            refused = tls_failure(exc, self.settings, str(self.connection.hostname))
            if refused is None:
                raise
            raise refused from exc  # a certificate login the broker refused

    def _stop(self, signum: int, frame: Any) -> None:
        logger.info("events_celery: group %r stopping (signal %d)", self.group_id, signum)
        self.should_stop = True
        self._stopping.set()  # a put-back waiting to try the broker again gives up

    @contextmanager  # celery-types declares the mixin's method a plain function
    def establish_connection(self) -> Iterator[Connection]:  # type: ignore[override]
        """Connect, retrying while the broker is away, until a stop is asked for.

        kombu's own loop (``ConsumerMixin.establish_connection``) retries for good without
        looking at ``should_stop``; its ``callback`` runs about once a second while it waits.
        """
        with self.create_connection() as connection:
            connection.ensure_connection(
                self.on_connection_error,
                self.connect_max_retries,  # type: ignore[arg-type]  # None: no limit, as in kombu
                callback=self._raise_if_stopping,
            )
            yield connection

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        """Log the failed attempt, or end the wait if a stop was asked for meanwhile.

        Raises:
            BrokerTLSError: the broker refused the TLS handshake or the certificate login;
                the consumer stops, since trying again cannot help until a certificate or a
                setting changes.
        """
        self._raise_if_stopping()
        tls = self.connection.ssl if isinstance(self.connection.ssl, dict) else {}
        refused = tls_failure(
            exc, self.settings, str(tls.get("server_hostname") or self.connection.hostname)
        )
        if refused is not None:
            raise refused from exc
        logger.warning(
            "events_celery: group %r cannot reach the broker (%s: %s); trying again in %.0f s",
            self.group_id,
            type(exc).__name__,
            exc,
            interval,
        )

    def _raise_if_stopping(self) -> None:
        if self.should_stop:
            raise _StopRequestedError

    def consume(  # type: ignore[override]  # celery-types declares a generator a function
        self,
        limit: int | None = None,
        timeout: int | None = None,
        safety_interval: int = 1,
        **kwargs: Any,
    ) -> Iterator[None]:
        """The loop :meth:`run` drives: wait for the broker, then run what may run.

        An ordered topic waits no longer than until its next event may run (a retry's backoff
        ends, or a batch is ready to route), and runs its events between two waits.
        """
        if self.ordered is None:
            yield from super().consume(limit, timeout, safety_interval, **kwargs)  # type: ignore[misc]
            return
        ordered = self.ordered
        with self.consumer_context(**kwargs) as (connection, _, _):  # type: ignore[attr-defined]
            drained = False
            while not self.should_stop:
                ordered.step(drained)
                try:
                    connection.drain_events(timeout=ordered.wait_time(safety_interval))
                    drained = True
                except TimeoutError:
                    connection.heartbeat_check()
                    drained = False
                except OSError:
                    if not self.should_stop:
                        raise
                yield None

    def get_consumers(
        self, consumer_class: Callable[..., Consumer], channel: Any
    ) -> list[Consumer]:
        """Declare the group's topology, and consume its queue one message at a time.

        An ordered topic consumes its presence queue here; its intake and partitions get a
        channel each once the consumer is ready (:meth:`on_consume_ready`).
        """
        connection = channel.connection.client
        queues: tuple[Queue, ...] = (self.queue,)
        if self.ordered is not None:
            declaring.refuse_changed_partitions(connection, self.settings)
            queues = self.ordered.queues()
        producer = topology.producer_topology(self.settings, [self.topic])
        declaring.declare(
            connection,
            topology.Topology(
                exchanges=(*producer.exchanges, topology.dead_letter_exchange(self.group_id)),
                queues=(
                    *producer.queues,
                    topology.dead_letter_queue(self.group_id, self.queue_type),
                    *queues,
                ),
            ),
        )
        if self.ordered is not None:
            return [self.ordered.presence_consumer(channel)]
        channel.basic_qos(0, 1, False)
        # Declared above; kombu's own declaration would configure the topic exchange, which a
        # least-privilege broker user may not (declaring.declare checks it passively instead).
        return [
            consumer_class(
                queues=[self.queue], on_message=self.on_message, no_ack=False, auto_declare=False
            )
        ]

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        """Log that the group consumes its queue (once per connection)."""
        if self.ordered is not None:
            self.ordered.open(connection, channel)
            logger.info(
                "events_celery: group %r consuming %s ordered by key (%d partitions, %s)",
                self.group_id,
                self.ordered.intake.name,
                len(self.ordered.partitions),
                self.ordered.subscription.when_exhausted,
            )
            return
        logger.info(
            "events_celery: group %r consuming %s (topic exchange %r)",
            self.group_id,
            self.queue.name,
            self.exchange,
        )

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Close an ordered topic's channels: unfinished events go back, in their order."""
        if self.ordered is not None:
            self.ordered.close()

    def on_message(self, message: Message) -> None:
        """Run the receivers of one event, then acknowledge it (or retry, or dead-letter)."""
        headers = dict(message.headers or {})
        info = message.delivery_info
        exchange, routing_key = str(info.get("exchange") or ""), info.get("routing_key")
        if self.was_put_back(exchange):  # by this consumer: where did it come from at first?
            exchange, _, routing_key = header_text(headers.get(HEADER_ORIGIN, "")).rpartition("/")
        origin = f"{exchange}/{routing_key}"
        if not self.came_by(message, exchange, self.exchange, origin):
            return
        if info.get("redelivered"):
            self._count_return(message, headers, origin)
            return
        event = self.read_event(message, headers, routing_key, origin)
        if event is None:
            return
        attempt = _number(headers.get(HEADER_ATTEMPT_NUMBER), default=1)
        failures = self.run_receivers(event)
        if not failures:
            message.ack()
            return
        policy = self.settings.retry_policy
        if attempt < policy.max_attempts:
            delay = self.retry_in(attempt)
            queue = retry_queue(self.group_id, self.topic, delay, self.queue_type)
            if self._put_back(
                message, headers, origin, queue, {HEADER_ATTEMPT_NUMBER: str(attempt + 1)}
            ):
                self.log_retry(event, failures, attempt, delay)
            return
        self.give_up(message, failures, attempt, origin)

    def came_by(self, message: Message, exchange: str, expected: str, origin: str) -> bool:
        """Whether ``message`` came by the ``expected`` exchange; if not, it is dead-lettered."""
        if exchange == expected:
            return True
        hooks.poisoned(self.settings, exchange)
        self.dead_letter_message(
            message,
            Failure(
                Reason.POISON,
                f"arrived by exchange {exchange!r}, not the expected exchange {expected!r}",
                origin=origin,
            ),
        )
        return False

    def read_event(
        self, message: Message, headers: dict[str, Any], routing_key: str | None, origin: str
    ) -> wire.ReceivedOpenedxEvent | None:
        """The Open edX event of ``message``; ``None`` when it is poison (then dead-lettered)."""
        user_id = self.publisher_of(message, headers)
        try:
            event = wire.decode(
                headers,
                raw_body(message),
                content_type=message.content_type,
                max_size=self.settings.max_message_size,
                routing_key=routing_key,
                authenticity=self.settings.authenticity,
                user_id=user_id,
            )
        except PoisonMessageError as exc:
            hooks.poisoned(self.settings, origin.rpartition("/")[0])
            self.dead_letter_message(message, Failure(Reason.POISON, exc.reason, origin=origin))
            return None
        hooks.consumed(self.settings, self.topic, event.metadata.event_type)
        return event

    def run_receivers(self, event: wire.ReceivedOpenedxEvent) -> list[tuple[str, BaseException]]:
        """Run every receiver of ``event``; the receivers that raised, with their errors."""
        prepare_for_new_work_cycle()
        try:
            responses = event.signal.send_event_with_custom_metadata(
                event.metadata, **event.event_data
            )
        except Exception as exc:  # DEBUG (or allow_send_event_failure): the first error raises
            return [("(the first receiver that raised)", exc)]
        return [
            (dotted_name(func), response)
            for func, response in responses
            if isinstance(response, BaseException)
        ]

    def retry_in(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1`` (:confval:`EVENT_BUS_RETRY_POLICY`, no jitter)."""
        return retry_delay(attrs.evolve(self.settings.retry_policy, jitter=False), attempt + 1)

    def log_retry(
        self,
        event: wire.ReceivedOpenedxEvent,
        failures: list[tuple[str, BaseException]],
        attempt: int,
        delay: float,
    ) -> None:
        """Log that the receivers of ``event`` failed and run again in ``delay`` seconds."""
        logger.warning(
            "%s: receiver(s) %s failed on attempt %d/%d (%s); all run again in %.1fs (event %s)",
            event.metadata.event_type,
            ", ".join(name for name, _ in failures),
            attempt,
            self.settings.retry_policy.max_attempts,
            _errors(failures),
            delay,
            event.metadata.id,
        )

    def give_up(
        self,
        message: Message,
        failures: list[tuple[str, BaseException]],
        attempt: int,
        origin: str,
    ) -> None:
        """Dead-letter an event whose receivers failed on its last attempt."""
        self.dead_letter_message(
            message,
            Failure(
                Reason.RECEIVER_FAILED,
                f"receiver(s) failed after {attempt} attempt(s): {_errors(failures)}",
                receiver=", ".join(name for name, _ in failures),
                attempts=attempt,
                traceback="\n".join("".join(traceback.format_exception(e)) for _, e in failures),
                origin=origin,
            ),
        )

    def publisher_of(self, message: Message, headers: dict[str, Any]) -> str | None:
        """The broker user that published the event (``user_id``, which the broker checked).

        A message this consumer put back (a retry, a return) or routed to a partition of an
        ordered topic is published by the group's own user; only then does the header that
        carries the original ``user_id`` count.
        """
        user_id = message.properties.get("user_id")
        exchange = str(message.delivery_info.get("exchange") or "")
        put_back = self.was_put_back(exchange) or (
            self.ordered is not None and exchange == self.ordered.exchange.name
        )
        if put_back and user_id == publisher_user(self.settings):
            kept = headers.get(HEADER_USER_ID)
            return header_text(kept) if kept is not None else None
        return None if user_id is None else str(user_id)

    def was_put_back(self, exchange: str) -> bool:
        """Whether a message that came by ``exchange`` was put back by this group.

        It came by :attr:`put_back` (a return, or a retry queue's message that expired), or
        by the default exchange (a retry queue declared by an earlier release).
        """
        return exchange in ("", self.put_back.name)

    def _count_return(self, message: Message, headers: dict[str, Any], origin: str) -> None:
        # A message that comes back unfinished goes to the back of the queue with a count, so
        # one whose receivers kill the consumer every time is dead-lettered, not run forever.
        returns = _number(headers.get(HEADER_REDELIVERIES), default=0) + 1
        if returns > self.settings.max_redeliveries:
            self.dead_letter_message(
                message,
                Failure(
                    Reason.REDELIVERED,
                    f"came back unfinished {returns} time(s): the consumer died while running "
                    f"its receivers (EVENT_BUS_MAX_REDELIVERIES is "
                    f"{self.settings.max_redeliveries})",
                    origin=origin,
                ),
            )
            return
        self._put_back(message, headers, origin, self.queue, {HEADER_REDELIVERIES: str(returns)})
        logger.warning("event %s came back unfinished (%d time(s))", headers.get("ce_id"), returns)

    def _put_back(
        self,
        message: Message,
        headers: dict[str, Any],
        origin: str,
        queue: Queue,
        extra: dict[str, str],
    ) -> bool:
        """Publish a copy of ``message`` to one of the group's queues, then ack the original."""
        kept = {k: v for k, v in plain_headers(headers).items() if not k.startswith("x-")}
        attempt = headers.get(HEADER_ATTEMPT_NUMBER)
        if attempt is not None and HEADER_ATTEMPT_NUMBER not in extra:
            kept[HEADER_ATTEMPT_NUMBER] = header_text(attempt)
        own = publisher_user(self.settings)
        user_id = self.publisher_of(message, headers)
        if user_id is not None:
            kept[HEADER_USER_ID] = user_id
        copy = OutgoingMessage(
            body=raw_body(message),
            headers={**kept, HEADER_ORIGIN: origin, **extra},
            properties={
                **{k: v for k, v in message.properties.items() if k in KEPT_PROPERTIES},
                "content_type": message.content_type,
                "content_encoding": "binary",
                "delivery_mode": 2,
                **({"user_id": own} if own else {}),
            },
        )
        try:
            retrying_publisher(self.settings).publish(
                copy,
                exchange=self.put_back.name,
                routing_key=queue.name,
                declare=topology.Topology(exchanges=(self.put_back,), queues=(queue,)),
                stop=self._stopping,
            )
        except PublishError:
            logger.exception("could not put event %s back; requeued", headers.get("ce_id"))
            message.requeue()
            return False
        message.ack()
        return True

    def dead_letter_message(self, message: Message, failure: Failure) -> None:
        """Dead-letter ``message`` with ``failure``, then acknowledge it."""
        user_id = self.publisher_of(message, dict(message.headers or {}))
        try:
            dead_letter(
                self.settings,
                raw_body(message),
                message.headers,
                failure,
                content_type=message.content_type,
                properties={
                    **{k: v for k, v in message.properties.items() if k != "user_id"},
                    **({"user_id": user_id} if user_id else {}),
                },
            )
        except PublishError:
            # The queue's dead-letter exchange keeps it all the same, without the reason.
            logger.exception("could not record why a message is dead-lettered")
            message.reject(requeue=False)
            return
        logger.error("dead-lettered a message of %s: %s", self.queue.name, failure.error)
        message.ack()


def _subscription(settings: BusSettings, topic: str) -> Subscription:
    """The group's subscription: every event type of ``topic``, ordered as the settings say.

    ``EVENT_BUS_CONSUMER_CONFIG[topic]`` of this process orders the group's events by key
    (``order_by_key``, ``partitions``, ``when_exhausted``); its ``event_types`` are not used.
    """
    for configured in settings.subscriptions:
        if configured.topic == topic and configured.valid and configured.order_by_key:
            return Subscription(
                topic,
                None,
                order_by_key=True,
                partitions=configured.partitions,
                when_exhausted=configured.when_exhausted,
            )
    return Subscription(topic, None)


def _errors(failures: list[tuple[str, BaseException]]) -> str:
    return "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failures)


def _number(value: object, *, default: int) -> int:
    text = header_text(value) if value is not None else ""
    return int(text) if text.isdigit() else default
