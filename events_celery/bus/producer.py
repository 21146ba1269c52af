"""The producer: publishes events to their topic exchanges with publisher confirms.

Every publish is persistent, ``mandatory`` and confirmed by the broker. A publish that is not
confirmed (connection lost, timeout, nack) is retried on a fresh connection as
``EVENT_BUS_PUBLISH_RETRY_POLICY`` says, then raises :class:`~events_celery.PublishError`:
an event is never dropped silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from django.db import connections, transaction
from django.utils.connection import ConnectionDoesNotExist
from kombu import Connection, Producer

from events_celery.bus import topology
from events_celery.bus.dispatch import OutgoingMessage, encode_event, key_getter
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import PayloadValidationError, PublishError
from events_celery.metadata import EventMetadata
from events_celery.signals import EventSignal

logger = logging.getLogger(__name__)

KeyGetter = Callable[[Mapping[str, Any]], str]


def broker_url(settings: BusSettings) -> str:
    """The broker URL from the settings (see ``EVENT_BUS_BROKER_URL``), else Celery's own."""
    if settings.broker_url:
        return settings.broker_url
    from celery import current_app

    return str(current_app.conf.broker_url or "amqp://guest:guest@localhost:5672//")


def bus_connection(settings: BusSettings) -> Connection:
    """A new (lazy) broker connection with publisher confirms on."""
    return Connection(
        broker_url(settings),
        transport_options={"confirm_publish": True},
        connect_timeout=settings.publish_timeout,
    )


class Publisher:
    """Publishes messages over one connection; one instance per process and thread."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._declared: set[tuple[str, ...]] = set()

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._connection = bus_connection(self.settings)
            self._connection.ensure_connection(max_retries=1)
            self._producer = Producer(self._connection.channel())
            self._declared = set()
        return self._producer

    def close(self) -> None:
        """Drop the connection; the next publish opens a new one.

        The socket is dropped without the AMQP close handshake: this runs after a failure, and
        a broker that stopped reading (a blocked connection, a dead peer) would never answer it.
        """
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.collect()
            except Exception:  # the connection is already broken; nothing more to release
                logger.debug("dropping a broken broker connection failed", exc_info=True)

    def publish(
        self,
        message: OutgoingMessage,
        *,
        exchange: str,
        routing_key: str,
        declare: topology.Topology,
    ) -> None:
        """Publish one message and wait for the broker's confirm.

        Args:
            message: body, headers and properties.
            exchange: exchange name.
            routing_key: routing key.
            declare: what must exist on the broker first (declared once per connection).

        Raises:
            PublishError: not confirmed within the retry policy.
        """

        def publish_once(producer: Producer) -> None:
            producer.publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=message.headers,
                mandatory=True,
                retry=False,
                timeout=self.settings.publish_timeout,
                confirm_timeout=self.settings.publish_timeout,
                **message.properties,
            )

        self.run(
            publish_once,
            declare,
            describe=lambda: f"event {message.properties.get('message_id')} to {exchange!r}",
            event_id=message.properties.get("message_id"),
        )

    def run(
        self,
        operation: Callable[[Producer], object],
        declare: topology.Topology,
        *,
        describe: Callable[[], str],
        event_id: object = None,
    ) -> None:
        """Run a confirmed publishing ``operation``, retrying it on a fresh connection.

        Raises:
            PublishError: it did not succeed within ``EVENT_BUS_PUBLISH_RETRY_POLICY``.
        """
        policy = self.settings.publish_retry_policy
        attempts = int(policy["max_retries"]) + 1
        interval = policy["interval_start"]
        for attempt in range(1, attempts + 1):
            try:
                producer = self._ensure()
                if declare.names not in self._declared:
                    assert self._connection is not None
                    topology.declare(self._connection, declare)
                    self._declared.add(declare.names)
                    self._report_parked(declare)
                operation(producer)
                return
            except Exception as exc:
                self.close()
                if attempt == attempts:
                    raise PublishError(
                        f"publishing {describe()} was not confirmed by the broker after "
                        f"{attempts} attempt(s): {type(exc).__name__}: {exc}",
                        event_id=event_id,
                    ) from exc
                logger.warning(
                    "publishing %s failed (%s: %s); retry %d/%d in %.2fs",
                    describe(),
                    type(exc).__name__,
                    exc,
                    attempt,
                    attempts - 1,
                    interval,
                )
                time.sleep(interval)
                interval = min(interval + policy["interval_step"], policy["interval_max"])

    def _report_parked(self, declared: topology.Topology) -> None:
        # Once per connection and topic: the log line that counts unrouted events.
        assert self._connection is not None
        for queue in declared.queues:
            if queue.name.endswith(".unrouted"):
                parked = topology.parked_count(self._connection, queue.name)
                if parked:
                    logger.warning(
                        "%d event(s) are parked in %s: no service subscribes to their event "
                        "type on this topic yet (the oldest are dropped past "
                        "EVENT_BUS_UNROUTED_MAX_LENGTH)",
                        parked,
                        queue.name,
                    )

    def publish_to_topic(self, topic: str, message: OutgoingMessage) -> None:
        """Publish an event message to its topic exchange, routed by its event type.

        Raises:
            PublishError: not confirmed; carries the event id and the topic.
        """
        declare = topology.topic_topology(self.settings, topic)
        try:
            self.publish(
                message,
                exchange=declare.exchanges[0].name,
                routing_key=message.properties["type"],
                declare=declare,
            )
        except PublishError as exc:
            exc.topic = topic
            raise


_local = threading.local()


def publisher(settings: BusSettings | None = None) -> Publisher:
    """The :class:`Publisher` of this process and thread (made on first use)."""
    settings = settings or bus_settings()
    current: Publisher | None = getattr(_local, "publisher", None)
    if current is None or current.settings is not settings or _local.pid != os.getpid():
        if current is not None and _local.pid == os.getpid():
            current.close()
        current = _local.publisher = Publisher(settings)
        _local.pid = os.getpid()
    return current


@lru_cache(maxsize=1024)
def _compiled_routes(
    settings: BusSettings, signal: EventSignal
) -> tuple[tuple[str, KeyGetter | None], ...]:
    # Keyed by the settings object itself: new settings (override_settings) compile anew.
    return tuple(
        (route.topic, key_getter(signal, route.event_key_field) if route.event_key_field else None)
        for route in settings.routes.get(signal.event_type, ())
    )


def publish_event(signal: EventSignal, metadata: EventMetadata, payload: Mapping[str, Any]) -> None:
    """Publish a validated event to every enabled topic it is routed to.

    With ``EVENT_BUS_PUBLISH_MODE = "on_commit"`` (the default) and a database transaction
    open, publishing waits for the commit, and a rollback publishes nothing.

    Raises:
        PayloadValidationError: the encoded payload is larger than ``EVENT_BUS_MAX_MESSAGE_SIZE``.
        PublishError: the broker did not confirm a message.
    """
    settings = bus_settings()
    routes = _compiled_routes(settings, signal)
    if not routes:
        return
    body = signal.serializer.encode(payload)
    if len(body) > settings.max_message_size:
        raise PayloadValidationError(
            signal.event_type,
            None,
            f"payload encodes to {len(body)} bytes, above EVENT_BUS_MAX_MESSAGE_SIZE "
            f"({settings.max_message_size}); send a reference to large data instead",
        )
    messages = [
        (topic, encode_event(signal, metadata, body, partition_key=get(payload) if get else None))
        for topic, get in routes
    ]

    def send() -> None:
        failures: list[PublishError] = []
        for topic, message in messages:  # every topic gets its chance, then one error
            try:
                publisher(settings).publish_to_topic(topic, message)
            except PublishError as exc:
                failures.append(exc)
        if len(failures) > 1:
            topics = ", ".join(repr(f.topic) for f in failures)
            raise PublishError(
                f"{signal.event_type}: event {metadata.id} was not published to topics "
                f"{topics}: {failures[0]}",
                event_id=metadata.id,
                topic=failures[0].topic,
            ) from failures[0]
        if failures:
            raise failures[0]

    def send_after_commit() -> None:
        try:
            send()
        except PublishError as exc:
            exc.add_note(
                "Raised after the database transaction committed. Django skips the remaining "
                "on_commit callbacks of that transaction, so events sent after this one in it "
                "were not published either."
            )
            raise

    if settings.publish_mode == "on_commit" and _in_transaction(settings.db_alias):
        transaction.on_commit(send_after_commit, using=settings.db_alias)
    else:
        send()


def _in_transaction(alias: str) -> bool:
    try:
        return bool(connections[alias].in_atomic_block)
    except ConnectionDoesNotExist:
        return False


def _reset_after_fork() -> None:
    # A forked child must not share its parent's socket.
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
