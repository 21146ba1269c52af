"""Claiming outbox rows for publishing: leases, key order, and deleting published ones.

Once a row's lease has run out, because its owner died or cannot reach the broker, any relay
may claim the row (:func:`claim`). Claims are conditional updates, so two relays never both own
a row; where the database has ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL, Oracle)
concurrent relays also skip each other's rows without waiting. Whoever holds rows renews their
lease (:func:`renew`), gives them back (:func:`release`), sets aside those the broker refused for
permissions (:func:`set_aside`), and deletes the confirmed ones (:func:`delete`), in batches,
which keeps the table small.

Keyed rows (:func:`~.outbox.ordering_key`) reach the broker in outbox order per key: a keyed
row is published only once every earlier row of its key has been confirmed and deleted, or
together with them, after them on the same channel. So :func:`claim` never takes a row while
an earlier one of its key is leased elsewhere, set aside, or in another claim, and the writer's
background publisher leaves a row to the relays when an earlier one of its key, not its own, is
still in the table (:func:`held_elsewhere`). A row the broker refuses holds back the later rows
of its key until it is published or deleted; other keys go on.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from django.db import connections, transaction
from django.db.models import Exists, F, Min, OuterRef, Q, Subquery
from django.db.models.functions import Greatest
from django.utils import timezone

from events_celery.bus.publish.outbox import (
    FORBIDDEN,
    MAX_REFUSALS,
    Row,
    process_owner,
    table_name,
)
from events_celery.conf import BusSettings
from events_celery.models import OutboxMessage
from events_celery.wire import HEADER_SOURCE, OutgoingMessage, message_properties

#: Largest number of ids in one ``DELETE`` or ``UPDATE`` statement.
CHUNK = 500


def claim(settings: BusSettings, *, limit: int, include_refused: bool = False) -> list[Row]:
    """Take up to ``limit`` rows whose lease has run out, oldest first, under a new lease.

    A keyed row is taken only with every earlier row of its ordering key still in the table:
    none of them may be leased elsewhere, set aside (unless ``include_refused``) or taken by a
    concurrent claim. Rows held back that way do not count against ``limit``, so a blocked key
    never holds up the others. Where the database has ``SKIP LOCKED``, concurrent claims pass
    over each other's rows; elsewhere the claim is one ``UPDATE``, which the database
    serializes.

    Returns:
        the rows now owned by this claim, in write order.
    """
    alias = settings.db_alias
    now = timezone.now()
    owner = f"{process_owner()}:{uuid.uuid4().hex[:8]}"
    if connections[alias].vendor == "postgresql":
        return _claim_returning(settings, now, owner, limit, include_refused)
    objects = OutboxMessage.objects.using(alias)
    waiting = Q(locked_until__gt=now)
    due = objects.filter(locked_until__lte=now)
    if not include_refused:
        waiting |= Q(attempts__gte=MAX_REFUSALS)
        due = due.filter(attempts__lt=MAX_REFUSALS)
    held_back = objects.filter(ordering_key=OuterRef("ordering_key"), id__lt=OuterRef("id"))
    due = due.filter(Q(ordering_key__isnull=True) | ~Exists(held_back.filter(waiting)))
    lease = {"locked_by": owner, "locked_until": now + timedelta(seconds=settings.outbox_lease)}
    if connections[alias].features.has_select_for_update_skip_locked:
        with transaction.atomic(using=alias):
            found = list(
                due.select_for_update(skip_locked=True)
                .order_by("id")
                .values_list("id", "ordering_key")[:limit]
            )
            ids = _in_key_order(settings, found)
            if not ids:
                return []
            objects.filter(id__in=ids).update(**lease)
    else:
        # One statement: the database takes its write lock before reading, so two relays
        # (SQLite allows one writer) wait for each other instead of both reading the same rows.
        claimed = objects.filter(id__in=Subquery(due.order_by("id").values("id")[:limit]))
        if not claimed.update(**lease):
            return []
    leased_at = time.monotonic()
    found_rows = objects.filter(locked_by=owner).order_by("id").values_list(*_READ)
    return [_row(values, leased_at, owner) for values in found_rows]


#: The columns a claim reads back.
_READ = (
    *("id", "event_id", "event_type", "topic", "headers", "body", "created_at"),
    *("ordering_key", "user_id"),
)


def _in_key_order(settings: BusSettings, found: list[tuple[int, str | None]]) -> list[int]:
    # Rows locked by a SKIP LOCKED claim, without those that an earlier row of their key, which
    # a concurrent claim has locked, must precede.
    mine = [pk for pk, _ in found]
    keys = {key for _, key in found if key is not None}
    if not keys:
        return mine
    first: dict[str | None, int] = dict(
        OutboxMessage.objects.using(settings.db_alias)
        .filter(ordering_key__in=keys)
        .exclude(id__in=mine)
        .values("ordering_key")
        .annotate(first=Min("id"))
        .values_list("ordering_key", "first")
    )
    return [pk for pk, key in found if key is None or key not in first or pk < first[key]]


def _claim_returning(
    settings: BusSettings, now: datetime, owner: str, limit: int, include_refused: bool
) -> list[Row]:
    # PostgreSQL: claim and read in one statement, whatever the size of the backlog, and in
    # time that grows with the claim, not with the backlog or the length of a key's run:
    # - held: each key's first waiting row (leased elsewhere, or set aside), found once per
    #   claim (these rows are few); a due row behind one is passed over, so that held-back rows
    #   never use up the LIMIT. A row of a key with none is let through by a hashed lookup.
    # - gap: each claimed key's first row that this claim did not lock (a concurrent claim
    #   locked it, or it is later); the claimed rows after it are dropped (a row SKIP LOCKED
    #   passes over is invisible to the LIMIT). One index probe per key.
    connection = connections[settings.db_alias]
    table = table_name(connection)
    refused = "" if include_refused else f" AND c.attempts < {MAX_REFUSALS:d}"
    set_aside = "" if include_refused else f" OR attempts >= {MAX_REFUSALS:d}"
    read = ", ".join(f"o.{column}" for column in _READ)
    sql = (
        f"WITH held AS MATERIALIZED (SELECT ordering_key, MIN(id) AS first FROM {table} "
        f"WHERE ordering_key IS NOT NULL AND (locked_until > %s{set_aside}) "
        "GROUP BY ordering_key), "
        f"due AS (SELECT c.id, c.ordering_key FROM {table} AS c WHERE c.locked_until <= %s"
        f"{refused} AND (c.ordering_key IS NULL "
        "OR c.ordering_key NOT IN (SELECT ordering_key FROM held) "
        "OR c.id < (SELECT first FROM held WHERE held.ordering_key = c.ordering_key)) "
        "ORDER BY c.id LIMIT %s FOR UPDATE OF c SKIP LOCKED), "
        "gap AS (SELECT k.ordering_key, ("
        f"SELECT e.id FROM {table} AS e WHERE e.ordering_key = k.ordering_key "
        "AND e.id NOT IN (SELECT id FROM due) ORDER BY e.id LIMIT 1) AS first "
        "FROM (SELECT DISTINCT ordering_key FROM due WHERE ordering_key IS NOT NULL) AS k) "
        f"UPDATE {table} AS o SET locked_by = %s, locked_until = %s "
        "FROM due LEFT JOIN gap ON gap.ordering_key = due.ordering_key "
        "WHERE o.id = due.id AND (gap.first IS NULL OR due.id < gap.first) "
        f"RETURNING {read}"
    )
    until = now + timedelta(seconds=settings.outbox_lease)
    with transaction.atomic(using=settings.db_alias), connection.cursor() as cursor:
        cursor.execute(sql, [now, now, limit, owner, until])
        found = sorted(cursor.fetchall())  # RETURNING follows no particular order
    leased_at = time.monotonic()
    return [_row(values, leased_at, owner) for values in found]


def held_elsewhere(settings: BusSettings, rows: Sequence[Row], mine: Sequence[Row]) -> list[Row]:
    """The keyed ``rows`` that must wait for an earlier row of their key, not one of ``mine``.

    The writer's background publisher asks before it publishes a batch: a row of its batch may
    go only if every earlier row of its key still in the table is in the batch too or in
    ``mine`` (published by it, not deleted yet). When another row comes first (its writer
    died, or it is leased to a relay or set aside), every row of that key in ``rows`` is
    returned, to be left to the relays, which publish the key in order.

    Raises:
        django.db.DatabaseError: the table could not be read.
    """
    last: dict[str, int] = {}
    for row in rows:
        if row.ordering_key is not None:
            last[row.ordering_key] = max(row.id, last.get(row.ordering_key, 0))
    if not last:
        return []
    known = sorted({row.id for row in (*rows, *mine) if row.ordering_key in last})
    # A plain statement (the ORM's cost of building it would count for more than the
    # database's of running it): it runs before every batch the writer publishes.
    connection = connections[settings.db_alias]
    table = table_name(connection)
    blocked: set[str] = set()
    keys = sorted(last)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One index probe per key, from its first row up: an index scan passes over the
            # entries of deleted rows at little cost (a bitmap scan visits them all again).
            cursor.execute(
                "SELECT k.key FROM unnest(%s::varchar[], %s::bigint[]) AS k(key, last) "
                f"WHERE EXISTS (SELECT 1 FROM {table} AS e WHERE e.ordering_key = k.key "
                "AND e.id < k.last AND e.id <> ALL(%s::bigint[]))",
                [keys, [last[key] for key in keys], known],
            )
            blocked.update(key for (key,) in cursor.fetchall())
        for start in range(0, len(keys) if connection.vendor != "postgresql" else 0, CHUNK):
            chunk = keys[start : start + CHUNK]
            below = max(last[key] for key in chunk)
            exclude = [pk for pk in known if pk < below]
            sql = (
                f"SELECT ordering_key, MIN(id) FROM {table} WHERE ordering_key IN "
                f"({', '.join(['%s'] * len(chunk))}) AND id < %s"
            )
            if exclude:
                sql += f" AND id NOT IN ({', '.join(['%s'] * len(exclude))})"
            cursor.execute(f"{sql} GROUP BY ordering_key", [*chunk, below, *exclude])
            blocked.update(key for key, pk in cursor.fetchall() if pk < last[key])
    return [row for row in rows if row.ordering_key in blocked]


def _row(values: tuple[Any, ...], leased_at: float, owner: str) -> Row:
    pk, event_id, event_type, topic, headers, body, created_at, key, user_id = values
    headers = json.loads(headers)
    properties = message_properties(
        str(event_id), event_type, created_at, str(headers.get(HEADER_SOURCE, ""))
    )
    if user_id:
        # The writer's broker user: a relay connected as another user is refused (406), and
        # the row is set aside, rather than publishing the event under a user it was not
        # written by.
        properties["user_id"] = user_id
    message = OutgoingMessage(bytes(body), headers, properties)
    return Row(pk, topic, message, leased_at, owner, key)


def delete(settings: BusSettings, ids: Iterable[int]) -> None:
    """Delete published rows (in statements of at most :data:`CHUNK` ids).

    On PostgreSQL the delete commits without waiting for its WAL flush
    (``synchronous_commit = off``): should the database crash before the flush, the rows come
    back and are published again, which at-least-once delivery allows; in exchange, deleting
    does not compete with the callers' commits for the disk.
    """
    pending = sorted(ids)
    connection = connections[settings.db_alias]
    table = table_name(connection)
    with transaction.atomic(using=settings.db_alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({marks})", chunk)


def renew(settings: BusSettings, rows: Sequence[Row]) -> list[Row]:
    """Extend the lease on ``rows`` of whoever holds them; returns the rows still held."""
    if not rows:
        return []
    until = timezone.now() + timedelta(seconds=settings.outbox_lease)
    objects = OutboxMessage.objects.using(settings.db_alias)
    owned: set[int] = set()
    for owner in {row.owner for row in rows}:
        ids = [row.id for row in rows if row.owner == owner]
        for start in range(0, len(ids), CHUNK):
            held = objects.filter(id__in=ids[start : start + CHUNK], locked_by=owner)
            held.update(locked_until=until)
            owned.update(held.values_list("id", flat=True))
    leased_at = time.monotonic()
    return [attrs.evolve(row, leased_at=leased_at) for row in rows if row.id in owned]


def release(
    settings: BusSettings, ids: Iterable[int], *, retry_in: float, refused: dict[int, str]
) -> None:
    """Give rows back so any relay may try them again in ``retry_in`` seconds.

    Rows in ``refused`` (id → reason) count one more refusal by the broker.
    """
    objects = OutboxMessage.objects.using(settings.db_alias)
    until = timezone.now() + timedelta(seconds=retry_in)
    plain = sorted(set(ids) - set(refused))
    for start in range(0, len(plain), CHUNK):
        objects.filter(id__in=plain[start : start + CHUNK]).update(locked_until=until)
    for pk, reason in refused.items():
        objects.filter(id=pk).update(
            locked_until=until, attempts=F("attempts") + 1, last_error=reason[:2000]
        )


def set_aside(settings: BusSettings, forbidden: dict[int, str]) -> None:
    """Set aside rows the broker refused for permissions (id → reason), at once.

    No relay claims them again (they count :data:`~.outbox.MAX_REFUSALS` refusals) until
    ``manage.py relay_events --retry-refused``, once an administrator has fixed the
    permissions. Their reason begins with :data:`~.outbox.FORBIDDEN`.
    """
    objects = OutboxMessage.objects.using(settings.db_alias)
    now = timezone.now()
    for pk, reason in forbidden.items():
        objects.filter(id=pk).update(
            locked_until=now,
            attempts=Greatest(F("attempts"), MAX_REFUSALS),
            last_error=(FORBIDDEN + reason)[:2000],
        )
