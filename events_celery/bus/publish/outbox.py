"""The transactional outbox table: its rows, writing them, and reading the backlog.

``send_event`` writes one row per topic in the caller's database transaction, so the event
and the data it describes commit or roll back together. Each row carries a lease: the
process that wrote it owns it first and publishes it right after the commit (see
:mod:`events_celery.bus.publish.background`). Once a lease has run out, because its owner died
or cannot reach the broker, any relay may claim the row (:mod:`.claims`, which also keeps the
leases and deletes published rows).

Rows of a topic with an ``event_key_field`` carry an ordering key (:func:`ordering_key`: the
topic and the ``ce_partitionkey`` header), and reach the broker in outbox order per key (see
:mod:`.claims`). Rows without a key are published in no particular order, at no extra cost.

:func:`backlog` and :func:`overdue` read what waits to be published, and
:func:`describe_forbidden` and :func:`describe_blocked` say what holds it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from django.db import connections
from django.db.models import Count, Min, Subquery
from django.utils import timezone

from events_celery.bus.broker.resources import PerProcess
from events_celery.conf import BusSettings
from events_celery.metadata import EventMetadata
from events_celery.models import OutboxMessage
from events_celery.wire import HEADER_PARTITION_KEY, OutgoingMessage

#: Rows a relay leaves alone once the broker has refused them this many times (see
#: :func:`~.claims.claim`); ``manage.py relay_events --retry-refused`` offers them again.
MAX_REFUSALS = 10

#: How the reason of a row set aside at once begins: the broker refused it for permissions
#: (see :func:`~.claims.set_aside`), which no retry changes until an administrator does.
FORBIDDEN = "refused for permissions: "


@attrs.frozen
class Row:
    """An outbox row in memory: what to publish, and where.

    Attributes:
        id: primary key, in write order.
        topic: the topic it goes to.
        message: body, headers and properties.
        leased_at: ``time.monotonic()`` when its current lease began.
        owner: who holds the lease (``locked_by``): the writing process, or a relay's claim.
        ordering_key: see :func:`ordering_key`; ``None`` for a row published in no order.
    """

    id: int
    topic: str
    message: OutgoingMessage
    leased_at: float
    owner: str
    ordering_key: str | None = None

    @property
    def event_id(self) -> str:
        """The event id (the message id)."""
        return str(self.message.properties["message_id"])

    @property
    def event_type(self) -> str:
        """The event type (the routing key)."""
        return str(self.message.properties["type"])


@attrs.frozen
class Backlog:
    """How many rows wait, and since when.

    Attributes:
        count: rows not published yet, set aside ones included.
        oldest: the time of the oldest.
        refused: rows set aside after :data:`MAX_REFUSALS` refusals (nack, unroutable).
        forbidden: rows set aside because the broker refused them for permissions.
        forbidden_reasons: the reasons of those, each with its number of rows, the most
            frequent first (at most five).
        blocked_keys: ordering keys with a row set aside (refused or forbidden): none of their
            later rows is published until it is.
        blocked_rows: the rows of those keys that wait behind them.
    """

    count: int
    oldest: datetime | None
    refused: int
    forbidden: int = 0
    forbidden_reasons: tuple[tuple[str, int], ...] = ()
    blocked_keys: int = 0
    blocked_rows: int = 0

    def oldest_age(self, now: datetime | None = None) -> float | None:
        """Seconds the oldest row has waited, or ``None`` when none waits."""
        if self.oldest is None:
            return None
        return max(((now or timezone.now()) - self.oldest).total_seconds(), 0.0)


_owner: PerProcess[str] = PerProcess(
    lambda: f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
)


def process_owner() -> str:
    """The lease owner name of this process: host, pid and a random part."""
    return _owner.get()


def ordering_key(topic: str, message: OutgoingMessage) -> str | None:
    """The ordering key of a message to ``topic``: a digest of the topic and its partition key.

    ``None`` when the message has no ``ce_partitionkey`` header (its topic names no
    ``event_key_field``): such rows keep no order. The digest has a fixed length whatever the
    key's, so that it can be indexed on every database.
    """
    key = message.headers.get(HEADER_PARTITION_KEY)
    if key is None:
        return None
    text = f"{topic}\0{key}".encode()
    return hashlib.sha1(text, usedforsecurity=False).hexdigest()


#: One event's messages, by topic.
Messages = Sequence[tuple[str, OutgoingMessage]]

#: Rows in one ``INSERT`` at most (SQLite allows 32,766 parameters, PostgreSQL 65,535).
INSERT_ROWS = 500


def write(settings: BusSettings, events: Sequence[tuple[EventMetadata, Messages]]) -> list[Row]:
    """Write one row per event and topic on ``EVENT_BUS_DB_ALIAS``, leased to this process.

    All the rows go in one ``INSERT`` (up to :data:`INSERT_ROWS`; one per row where the
    database returns no ids from a multi-row insert, as MySQL), inside the caller's
    transaction when one is open, else in its own autocommit write.

    Returns:
        the rows, in the order of ``events`` and their topics.

    Raises:
        django.db.DatabaseError: the rows could not be written (nothing is published then).
    """
    connection = connections[settings.db_alias]
    until = timezone.now() + timedelta(seconds=settings.outbox_lease)
    owner = process_owner()
    prepared = _prepare(connection)
    locked_until = prepared.time(until)
    values: list[tuple[Any, ...]] = []
    written: list[tuple[str, OutgoingMessage, str | None]] = []
    for metadata, messages in events:
        event_id = prepared.uuid(metadata.id)
        created_at = prepared.time(metadata.time)
        for topic, message in messages:
            headers = json.dumps(message.headers, separators=(",", ":"))
            key = ordering_key(topic, message)
            values.append(
                (
                    *(event_id, metadata.event_type, topic, headers, message.body),
                    *(created_at, locked_until, owner, 0, ""),
                    str(message.properties.get("user_id") or ""),
                    key,
                )
            )
            written.append((topic, message, key))
    # Plain SQL, no ORM: this runs inside the caller's transaction, on the request path.
    with connection.cursor() as cursor:
        ids = prepared.insert(cursor, values)
    leased_at = time.monotonic()
    return [
        Row(pk, topic, message, leased_at, owner, key)
        for pk, (topic, message, key) in zip(ids, written, strict=True)
    ]


_COLUMNS = (
    "event_id",
    "event_type",
    "topic",
    "headers",
    "body",
    "created_at",
    "locked_until",
    "locked_by",
    "attempts",
    "last_error",
    "user_id",
    "ordering_key",
)


@attrs.frozen
class _Prepared:
    """The outbox insert for one database connection's vendor."""

    table: str
    columns: str
    returning: bool
    uuid_field: Any
    time_field: Any
    connection: Any

    def insert(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """Insert ``rows`` (values in :data:`_COLUMNS` order); their ids, in order."""
        if not self.returning:
            ids = []
            for row in rows:
                cursor.execute(self._values(1), row)
                ids.append(cursor.lastrowid)
            return ids
        ids = []
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            cursor.execute(
                self._values(len(chunk)) + " RETURNING id", [v for r in chunk for v in r]
            )
            ids += [row[0] for row in cursor.fetchall()]
        return ids

    def _values(self, rows: int) -> str:
        values = ", ".join(["(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"] * rows)
        return f"INSERT INTO {self.table} ({self.columns}) VALUES {values}"

    def uuid(self, value: uuid.UUID) -> Any:
        return self.uuid_field.get_db_prep_save(value, self.connection)

    def time(self, value: datetime) -> Any:
        return self.time_field.get_db_prep_save(value, self.connection)


def _prepare(connection: Any) -> _Prepared:
    cached: _Prepared | None = getattr(connection, "_events_celery_outbox", None)
    if cached is None:
        meta = OutboxMessage._meta
        quote = connection.ops.quote_name
        cached = _Prepared(
            table=quote(meta.db_table),
            columns=", ".join(quote(meta.get_field(name).column) for name in _COLUMNS),  # type: ignore[union-attr]
            returning=bool(connection.features.can_return_columns_from_insert),
            uuid_field=meta.get_field("event_id"),
            time_field=meta.get_field("created_at"),
            connection=connection,
        )
        connection._events_celery_outbox = cached
    return cached


def table_name(connection: Any) -> str:
    """The outbox table's name, quoted for ``connection``'s database."""
    return _prepare(connection).table


def describe_forbidden(waiting: Backlog) -> str:
    """The rows set aside for permissions, with their reasons, in one sentence ("" for none)."""
    if not waiting.forbidden:
        return ""
    reasons = "; ".join(f"{reason} ({rows} row(s))" for reason, rows in waiting.forbidden_reasons)
    return (
        f"{waiting.forbidden} row(s) set aside: the broker refused them for permissions: "
        f"{reasons}. Once the permissions are fixed, manage.py relay_events --retry-refused "
        "publishes them"
    )


def describe_blocked(waiting: Backlog) -> str:
    """The keys held up by rows set aside, and what to do, in one sentence ("" for none)."""
    if not waiting.blocked_keys:
        return ""
    return (
        f"{waiting.blocked_keys} partition key(s) blocked: a row of each is set aside, and "
        f"{waiting.blocked_rows} later row(s) of those keys wait behind it, in order. Once the "
        "cause is fixed, manage.py relay_events --retry-refused publishes them in order; or "
        "delete the set-aside rows (attempts >= "
        f"{MAX_REFUSALS}) from {OutboxMessage._meta.db_table} to let their keys go on without them"
    )


def backlog(settings: BusSettings) -> Backlog:
    """How many rows wait to be published, the time of the oldest, and how many were refused.

    The one reading of the backlog: ``show_event_bus``, ``event_bus_health`` and the
    Prometheus gauges (:mod:`events_celery.contrib.prometheus`) all use it.
    """
    objects = OutboxMessage.objects.using(settings.db_alias)
    found = objects.aggregate(count=Count("id"), oldest=Min("created_at"))
    set_aside = objects.filter(attempts__gte=MAX_REFUSALS)
    forbidden = (
        set_aside.filter(last_error__startswith=FORBIDDEN)
        .values("last_error")
        .annotate(rows=Count("id"))
        .order_by("-rows", "last_error")
    )
    reasons = [(row["last_error"][len(FORBIDDEN) :], row["rows"]) for row in forbidden]
    total = sum(rows for _, rows in reasons)
    keys = set_aside.filter(ordering_key__isnull=False).values("ordering_key").distinct()
    blocked_keys = keys.count()
    blocked_rows = (
        objects.filter(ordering_key__in=Subquery(keys), attempts__lt=MAX_REFUSALS).count()
        if blocked_keys
        else 0
    )
    return Backlog(
        count=found["count"],
        oldest=found["oldest"],
        refused=set_aside.count() - total,
        forbidden=total,
        forbidden_reasons=tuple(reasons[:5]),
        blocked_keys=blocked_keys,
        blocked_rows=blocked_rows,
    )


def overdue(settings: BusSettings, *, limit: int = 20) -> tuple[list[str], int]:
    """Event ids waiting longer than ``EVENT_BUS_OUTBOX_WARN_AFTER``, oldest first.

    Returns:
        up to ``limit`` event ids, and how many rows are overdue in all.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.outbox_warn_after)
    late = OutboxMessage.objects.using(settings.db_alias).filter(created_at__lt=cutoff)
    ids = [str(i) for i in late.order_by("id").values_list("event_id", flat=True)[:limit]]
    total = len(ids) if len(ids) < limit else late.count()
    return ids, total
