"""The producer: turns a sent event into messages for its topics, and hands them on.

``EVENT_BUS_PUBLISH_MODE`` decides how:

* ``"outbox"`` (default): the messages are written to the outbox table in the caller's
  transaction (:mod:`events_celery.bus.publish.outbox`) and published after the commit by this
  process's background publisher (:mod:`events_celery.bus.publish.background`). ``send_event`` never
  waits for the broker here.
* ``"direct"``: a confirmed publish at send time (after the commit inside a transaction),
  within ``EVENT_BUS_PUBLISH_TIMEOUT`` in all; failures raise :class:`~events_celery.PublishError`
  (:mod:`events_celery.bus.publish.direct`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction
from django.utils.connection import ConnectionDoesNotExist

from events_celery.authenticity import sign
from events_celery.bus import hooks
from events_celery.bus.broker.connection import publisher_user
from events_celery.bus.publish import outbox
from events_celery.bus.publish.background import background_publisher
from events_celery.bus.publish.direct import publish_after_commit, publish_direct
from events_celery.bus.publish.routes import compiled_routes
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import PayloadValidationError
from events_celery.metadata import EventMetadata
from events_celery.signals import EventSignal
from events_celery.wire import HEADER_SIGNATURE, OutgoingMessage, encode_event

__all__ = ["authenticate", "batch_events", "check_size", "publish_event", "publish_messages"]

_local = threading.local()


def publish_event(signal: EventSignal, metadata: EventMetadata, payload: Mapping[str, Any]) -> None:
    """Hand a validated event to every enabled topic it is routed to.

    Raises:
        PayloadValidationError: the encoded payload is larger than ``EVENT_BUS_MAX_MESSAGE_SIZE``.
        django.db.DatabaseError: ``"outbox"`` mode could not write the outbox rows.
        PublishError: ``"direct"`` mode only: the broker did not confirm every message.
    """
    settings = bus_settings()
    routes = compiled_routes(settings, signal)
    if not routes:
        return
    body = signal.serializer.encode(payload)
    check_size(settings, signal.event_type, body)
    trace_context = hooks.message_headers()
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
    messages = authenticate(settings, messages)
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
            lambda: publish_after_commit(settings, messages), using=settings.db_alias
        )
    else:
        publish_direct(settings, messages)


def authenticate(
    settings: BusSettings, messages: Sequence[tuple[str, OutgoingMessage]]
) -> list[tuple[str, OutgoingMessage]]:
    """Add what proves who publishes: ``user_id`` and, with signing keys, the signature.

    ``user_id`` is the user of the broker URL (:func:`.publisher_user`): the broker refuses
    the message (``406``) when the connection that publishes it is another user's, so an
    outbox row written here and relayed by a process connected as another user is set aside
    as refused for permissions instead of being published under that user. Each message is
    signed by every key of ``EVENT_BUS_SIGNING_KEYS`` (two during a rotation).
    """
    user = publisher_user(settings)
    keys = settings.signing_keys
    if user is None and not keys:
        return list(messages)
    done = []
    for topic, message in messages:
        headers, properties = message.headers, message.properties
        if keys:
            headers = {**headers, HEADER_SIGNATURE: sign(headers, message.body, keys)}
        if user is not None:
            properties = {**properties, "user_id": user}
        done.append((topic, OutgoingMessage(message.body, headers, properties)))
    return done


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


def _in_transaction(alias: str) -> bool:
    try:
        return bool(connections[alias].in_atomic_block)
    except ConnectionDoesNotExist:
        return False


def _reset_after_fork() -> None:
    # A forked child has no batch_events block open.
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
