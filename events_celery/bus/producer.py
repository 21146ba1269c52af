"""The producer: turns a sent event into messages for its topics, and hands them on.

``EVENT_BUS_PUBLISH_MODE`` decides how:

* ``"outbox"`` (default): the messages are written to the outbox table in the caller's
  transaction (:mod:`events_celery.bus.outbox`) and published after the commit by this
  process's background publisher (:mod:`events_celery.bus.relay`). ``send_event`` never
  waits for the broker here.
* ``"direct"``: a confirmed publish at send time (after the commit inside a transaction),
  within ``EVENT_BUS_PUBLISH_TIMEOUT`` in all; failures raise :class:`~events_celery.PublishError`.

:class:`Publisher` also serves the bus's own confirmed publishes in workers: receiver tasks and
dead letters.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from django.db import connections, transaction
from django.utils.connection import ConnectionDoesNotExist
from kombu import Connection, Producer

from events_celery.bus import outbox, topology, tracing
from events_celery.bus.confirms import BrokerBlockedError, ConfirmingPublisher, Outgoing
from events_celery.bus.connection import Deadline, broker_url, bus_connection, connect, drop
from events_celery.bus.relay import background_publisher, backoff
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import PayloadValidationError, PublishError
from events_celery.metadata import EventMetadata
from events_celery.signals import EventSignal
from events_celery.wire import OutgoingMessage, encode_event, key_getter

__all__ = [
    "Publisher",
    "batch_events",
    "broker_url",
    "bus_connection",
    "check_size",
    "publish_event",
    "publish_messages",
    "publisher",
]

logger = logging.getLogger(__name__)

KeyGetter = Callable[[Mapping[str, Any]], str]


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
            connect(self._connection, timeout=self.settings.publish_timeout)
            self._producer = Producer(self._connection.channel())
            self._declared = set()
        return self._producer

    def close(self) -> None:
        """Drop the connection (without the close handshake); the next publish opens a new one."""
        connection, self._connection, self._producer = self._connection, None, None
        drop(connection)

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
        attempts = policy.max_retries + 1
        interval = policy.interval_start
        for attempt in range(1, attempts + 1):
            try:
                producer = self._ensure()
                if declare.names not in self._declared:
                    assert self._connection is not None
                    topology.declare(self._connection, declare)
                    self._declared.add(declare.names)
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
                interval = min(interval + policy.interval_step, policy.interval_max)


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
    """Hand a validated event to every enabled topic it is routed to.

    Raises:
        PayloadValidationError: the encoded payload is larger than ``EVENT_BUS_MAX_MESSAGE_SIZE``.
        django.db.DatabaseError: ``"outbox"`` mode could not write the outbox rows.
        PublishError: ``"direct"`` mode only: the broker did not confirm every message.
    """
    settings = bus_settings()
    routes = _compiled_routes(settings, signal)
    if not routes:
        return
    body = signal.serializer.encode(payload)
    check_size(settings, signal.event_type, body)
    trace_context = tracing.context()
    messages = [
        (
            topic,
            encode_event(
                signal,
                metadata,
                body,
                partition_key=get(payload) if get else None,
                trace_context=trace_context,
            ),
        )
        for topic, get in routes
    ]
    publish_messages(settings, metadata, messages)


def check_size(settings: BusSettings, event_type: str, body: bytes) -> None:
    """Refuse a body larger than ``EVENT_BUS_MAX_MESSAGE_SIZE``.

    Raises:
        PayloadValidationError: naming the size and the limit.
    """
    if len(body) > settings.max_message_size:
        raise PayloadValidationError(
            event_type,
            None,
            f"payload encodes to {len(body)} bytes, above EVENT_BUS_MAX_MESSAGE_SIZE "
            f"({settings.max_message_size}); send a reference to large data instead",
        )


def publish_messages(
    settings: BusSettings, metadata: EventMetadata, messages: Sequence[tuple[str, OutgoingMessage]]
) -> None:
    """Publish one event's ``(topic, message)`` pairs the way ``EVENT_BUS_PUBLISH_MODE`` says.

    ``"outbox"``: written to the outbox in the open transaction (published after its commit) or
    at once outside one; ``"direct"``: a confirmed publish, after the commit inside a
    transaction. :func:`publish_event` calls it for an :class:`EventSignal`; an adapter for
    events defined elsewhere (:mod:`events_celery.contrib.openedx`) calls it with its messages.

    Raises:
        django.db.DatabaseError: ``"outbox"`` mode could not write the outbox rows.
        PublishError: ``"direct"`` mode only: the broker did not confirm every message.
    """
    messages = list(messages)
    in_transaction = _in_transaction(settings.db_alias)
    if settings.publish_mode == "outbox":
        batch: _Batch | None = getattr(_local, "batch", None)
        if batch is not None and batch.alias == settings.db_alias and in_transaction:
            batch.hold(settings, metadata, messages)
            return
        rows = outbox.write(settings, [(metadata, messages)])
        if in_transaction:
            transaction.on_commit(
                lambda: background_publisher().submit(rows), using=settings.db_alias
            )
        else:
            background_publisher().submit(rows)
    elif in_transaction:
        transaction.on_commit(
            lambda: _publish_after_commit(settings, messages), using=settings.db_alias
        )
    else:
        publish_direct(settings, messages)


class _Held:
    """An event sent inside :func:`batch_events`, waiting for the block's end to be written."""

    def __init__(self, metadata: EventMetadata, messages: outbox.Messages) -> None:
        self.metadata = metadata
        self.messages = messages
        self.rows: list[outbox.Row] = []

    def submit(self) -> None:
        """Run after the commit: hand the rows to the background publisher."""
        if self.rows:
            background_publisher().submit(self.rows)


class _Batch:
    """The events of one :func:`batch_events` block, written together when it ends."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.held: list[_Held] = []

    def hold(self, settings: BusSettings, metadata: EventMetadata, messages: Any) -> None:
        held = _Held(metadata, messages)
        # The after-commit callback doubles as a marker: Django drops it when a savepoint it
        # was registered in rolls back, and then the event must not be written either.
        transaction.on_commit(held.submit, using=self.alias)
        self.held.append(held)

    def write(self, settings: BusSettings) -> None:
        connection = connections[self.alias]
        if connection.needs_rollback:  # set_rollback(True): the block rolls back, quietly
            return
        alive = {
            id(getattr(callback, "__self__", None)) for _, callback, *_ in connection.run_on_commit
        }
        kept = [held for held in self.held if id(held) in alive]
        if not kept:
            return
        rows = iter(outbox.write(settings, [(h.metadata, h.messages) for h in kept]))
        for held in kept:
            held.rows = [next(rows) for _ in held.messages]


@contextmanager
def batch_events(using: str | None = None) -> Iterator[None]:
    """Send many events in one transaction with one outbox ``INSERT`` instead of one each.

    The block runs in ``transaction.atomic()`` (a savepoint inside an outer transaction). The
    events sent in it are validated and their local receivers run at once as usual; their
    outbox rows are written together when the block ends, inside that transaction, and
    published after the commit. An exception in the block, or a savepoint rolled back inside
    it, writes nothing for the events it covers. Outside ``"outbox"`` mode it is a plain
    ``atomic()`` block. Blocks nest: an inner one joins the outer one.

    Example::

        with batch_events():
            for order in orders:
                ORDER_PLACED.send_event(order=order)

    Args:
        using: the database; ``EVENT_BUS_DB_ALIAS`` by default.
    """
    alias = using or bus_settings().db_alias
    outer: _Batch | None = getattr(_local, "batch", None)
    if outer is not None:
        with transaction.atomic(using=alias):
            yield
        return
    batch = _local.batch = _Batch(alias)
    try:
        with transaction.atomic(using=alias):
            try:
                yield
            finally:
                _local.batch = None
            batch.write(bus_settings())
    finally:
        _local.batch = None


def _publish_after_commit(
    settings: BusSettings, messages: list[tuple[str, OutgoingMessage]]
) -> None:
    try:
        publish_direct(settings, messages)
    except PublishError as exc:
        exc.add_note(
            "Raised after the database transaction committed. Django skips the remaining "
            "on_commit callbacks of that transaction, so events sent after this one in it "
            "were not published either. The 'outbox' publish mode has neither limit."
        )
        raise


def publish_direct(settings: BusSettings, messages: Sequence[tuple[str, OutgoingMessage]]) -> None:
    """Publish ``(topic, message)`` pairs and wait for every confirm, within one time bound.

    Everything, connecting and retries included, happens within ``EVENT_BUS_PUBLISH_TIMEOUT``:
    kombu's own connection retries are off, the socket times out with the deadline, and a
    broker that blocks publishers (``connection.blocked``) fails the publish at once. Only
    messages the broker never took are tried again: one that it may hold is not sent twice.

    Raises:
        PublishError: naming every event id not confirmed, and whether the broker may still
            deliver it.
    """
    deadline = Deadline(settings.publish_timeout)
    pending = {
        index: Outgoing(
            key=index,
            exchange=topology.exchange_name(settings.topic_prefix, topic),
            routing_key=message.properties["type"],
            message=message,
            declare=topology.topic_topology(settings, topic),
        )
        for index, (topic, message) in enumerate(messages)
    }
    may_be_delivered: set[int] = set()
    reason = "no time left"
    attempts = settings.publish_retry_policy.max_retries + 1
    for attempt in range(1, attempts + 1):
        outcome = _direct_publisher(settings).publish(
            pending.values(), timeout=deadline.remaining()
        )
        for index in outcome.confirmed:
            pending.pop(index, None)
        if not pending:
            return
        may_be_delivered.update(outcome.unknown)
        may_be_delivered.difference_update(outcome.refused)
        if outcome.unknown or isinstance(outcome.error, BrokerBlockedError):
            # The broker may have taken them (it holds what a blocked connection sent): sending
            # them again could deliver them twice, so the caller hears it at once.
            reason = f"{type(outcome.error).__name__}: {outcome.error}"
            break
        reason = (
            f"{type(outcome.error).__name__}: {outcome.error}"
            if outcome.error is not None
            else "; ".join(sorted(set(outcome.refused.values())))
        )
        pause = backoff(attempt - 1, settings) if attempt > 1 else 0.0
        if attempt == attempts or deadline.remaining() <= pause:
            break
        logger.warning("direct publish failed (%s); retry %d/%d", reason, attempt, attempts - 1)
        time.sleep(pause)
    failed = [messages[index] for index in sorted(pending)]
    event_ids = tuple(dict.fromkeys(m.properties["message_id"] for _, m in failed))
    topics = sorted({topic for topic, _ in failed})
    maybe = bool(may_be_delivered & set(pending))
    raise PublishError(
        f"event(s) {', '.join(event_ids)} to topic(s) {', '.join(map(repr, topics))} were not "
        f"confirmed by the broker within EVENT_BUS_PUBLISH_TIMEOUT "
        f"({settings.publish_timeout:g}s, {attempt} attempt(s)): {reason}. "
        + (
            "The broker may still deliver them (it took them but never confirmed)."
            if maybe
            else "The broker did not take them; they will not be delivered."
        ),
        event_ids=event_ids,
        topic=topics[0],
        may_be_delivered=maybe,
    )


def _direct_publisher(settings: BusSettings) -> ConfirmingPublisher:
    current: ConfirmingPublisher | None = getattr(_local, "direct", None)
    if (
        current is None
        or _local.direct_settings is not settings
        or _local.direct_pid != os.getpid()
    ):
        if current is not None and _local.direct_pid == os.getpid():
            current.close()
        current = _local.direct = ConfirmingPublisher(
            bus_connection(settings, confirm_publish=False), window=settings.publish_window
        )
        _local.direct_settings = settings
        _local.direct_pid = os.getpid()
    return current


def _in_transaction(alias: str) -> bool:
    try:
        return bool(connections[alias].in_atomic_block)
    except ConnectionDoesNotExist:
        return False


def _reset_after_fork() -> None:
    # A forked child must not share its parent's socket.
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
