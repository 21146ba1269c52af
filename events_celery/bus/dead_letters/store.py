"""The dead-letter store: the ``events_celery_dead_letter`` table of each service.

A message lands there when it can never become an event (bad Avro, unknown type or schema,
missing headers, wrong content type, too large), when a receiver failed its last attempt, gave
up, is no longer connected, or when an event kept killing its worker. A row keeps the original
body and headers, the reason and the error, so that it can be replayed once the cause is fixed
(:mod:`events_celery.bus.dead_letters.replay`).

When the database cannot take the row (it is down, or ``migrate`` has not created the table),
the dead letter goes to the broker queue ``<service>.events_celery.dead_letters`` instead, with
headers saying why (:func:`events_celery.wire.dead_letter_message`); ``manage.py
event_dead_letters import`` moves it into the table later. Queues of the service also
dead-letter there (RabbitMQ ``x-death``) when a message is rejected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F

from events_celery.bus.broker import topology
from events_celery.bus.broker.retrying import retrying_publisher
from events_celery.conf import BusSettings
from events_celery.exceptions import PublishError
from events_celery.models import DeadLetter
from events_celery.wire import (
    HEADER_ID,
    HEADER_PARTITION_KEY,
    HEADER_TYPE,
    HEADER_USER_ID,
    MAX_ERROR,
    MAX_TRACEBACK,
    WIRE_HEADERS,
    dead_letter_message,
)

logger = logging.getLogger(__name__)

#: Longest header value kept in a row (its start is kept).
MAX_HEADER_VALUE = 4_000
#: Most characters of header names and values kept in a row; later headers are left out.
MAX_HEADERS = 64_000

#: How many times a write to the table is tried (a stale connection gets a fresh one).
DATABASE_TRIES = 2

Reason = DeadLetter.Reason
Where = Literal["database", "broker"]


@attrs.frozen
class Failure:
    """Why a message is dead-lettered, bounded to what a row keeps.

    Attributes:
        reason: a :class:`~events_celery.models.DeadLetter.Reason` value.
        error: what went wrong, in one text (its start is kept).
        receiver: the receiver's name; ``None`` for the whole event.
        traceback: the receiver's traceback (its end is kept).
        attempts: runs of the receiver.
        origin: ``<exchange>/<routing key>`` the message came by.
        replay_of: the dead letter this message is a replay of: its row is updated.
    """

    reason: str = attrs.field(validator=attrs.validators.in_(Reason.values))
    error: str
    receiver: str | None = None
    traceback: str | None = None
    attempts: int | None = None
    origin: str | None = None
    replay_of: int | None = None


def text_headers(headers: Mapping[str, Any] | None) -> tuple[dict[str, str], bool]:
    """The headers as text, bounded: ``(headers, truncated)``.

    Bytes are decoded, other values that are not text are written as JSON. The wire-format
    headers come first, so they are the last to be left out. A value longer than
    :data:`MAX_HEADER_VALUE` keeps its start; once :data:`MAX_HEADERS` characters are used,
    the remaining headers are left out. ``truncated`` says whether either happened.
    """
    items = sorted((headers or {}).items(), key=lambda kv: str(kv[0]) not in WIRE_HEADERS)
    kept: dict[str, str] = {}
    used, truncated = 0, False
    for key, value in items:
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
        if len(text) > MAX_HEADER_VALUE:
            text, truncated = text[:MAX_HEADER_VALUE], True
        name = str(key)[:MAX_HEADER_VALUE]
        if used + len(name) + len(text) > MAX_HEADERS:
            truncated = True
            continue
        used += len(name) + len(text)
        kept[name] = text
    return kept, truncated


def dead_letter(
    settings: BusSettings,
    body: bytes,
    headers: Mapping[str, Any] | None,
    failure: Failure,
    *,
    content_type: str | None,
    properties: Mapping[str, Any] | None = None,
) -> Where:
    """Dead-letter a message in this service's dead-letter store; returns where it went.

    The ``user_id`` of ``properties`` (the broker user that published the event) is kept, as
    the header :data:`~events_celery.wire.HEADER_USER_ID`.

    The row is written and committed before this returns. When the database cannot take it
    (after :data:`DATABASE_TRIES` tries; any error counts, so that nothing is lost to a bug),
    the dead letter is published to the broker queue ``<service>.events_celery.dead_letters``
    (confirmed), and if the broker refuses it (too large for a frame, say), once more with
    only the wire-format headers and no traceback.

    Raises:
        PublishError: neither the database nor the broker took it; the caller must not ack
            the original as it is (reject it to the queue's dead-letter exchange instead).
    """
    service = settings.require_service_name()
    now = datetime.now(UTC)
    # The row keeps the user_id the message came with (never a header claiming one), so that
    # a replay is checked against EVENT_BUS_TRUSTED_PUBLISHERS as the event was at first.
    headers = {k: v for k, v in (headers or {}).items() if k != HEADER_USER_ID}
    if (properties or {}).get("user_id"):
        headers[HEADER_USER_ID] = str((properties or {})["user_id"])
    for attempt in range(1, DATABASE_TRIES + 1):
        try:
            record(settings, service, body, headers, failure, content_type=content_type, at=now)
            return "database"
        except Exception as exc:
            # Whatever keeps the row from being written (a database error, or a bug), the
            # dead letter must still be kept: the broker queue below takes it.
            logger.warning(
                "dead-letter store: writing the row failed (try %d/%d): %s: %s",
                attempt,
                DATABASE_TRIES,
                type(exc).__name__,
                exc,
            )
            if isinstance(exc, DatabaseError):
                _drop_connection(settings.db_alias)
    logger.error(
        "dead-letter store: the database is unavailable; the dead letter goes to the broker "
        "queue %s (manage.py event_dead_letters import moves it into the table)",
        topology.dead_letter_queue(service).name,
    )
    try:
        _publish(settings, service, body, headers, failure, content_type, properties, now)
    except PublishError as exc:
        logger.warning("dead-lettering to the broker failed (%s); trying without extras", exc)
        wire = {k: v for k, v in (headers or {}).items() if k in WIRE_HEADERS}
        bare = attrs.evolve(failure, traceback=None)
        _publish(settings, service, body, wire, bare, content_type, properties, now)
    return "broker"


def record(
    settings: BusSettings,
    service: str,
    body: bytes,
    headers: Mapping[str, Any] | None,
    failure: Failure,
    *,
    content_type: str | None,
    at: datetime,
) -> DeadLetter:
    """Write (or update) the row of a dead letter and commit it.

    Dead-lettering the same event and receiver again, or a replay of a dead letter, updates
    its row: ``failures`` + 1, the new reason, error, traceback and time, and status back to
    pending. A whole event (no receiver: a poison message, say) updates a row only when it is
    the same message again, with the same event id, body and headers (its task ran twice: a
    batch came back from the broker, say); two messages that claim one event id get a row
    each. A row whose ``last_failed_at`` is already ``at`` is left as it is (an import of a
    message that was imported before).

    Raises:
        DatabaseError: the row could not be written.
    """
    alias = settings.db_alias
    if not connections[alias].in_atomic_block:
        # The consumer thread has no request cycle to close a stale connection.
        connections[alias].close_if_unusable_or_obsolete()
    texts, headers_truncated = text_headers(headers)
    traceback = failure.traceback or ""
    fields: dict[str, Any] = {
        "reason": failure.reason,
        "error": failure.error[:MAX_ERROR],
        "traceback": traceback[-MAX_TRACEBACK:],
        "traceback_truncated": len(traceback) > MAX_TRACEBACK,
        "attempts": failure.attempts or 0,
        "last_failed_at": at,
        "status": DeadLetter.Status.PENDING,
        "status_changed_at": at,
    }
    if failure.origin:
        fields["origin"] = failure.origin[:500]
    event_id = _event_id(texts.get(HEADER_ID))
    receiver = (failure.receiver or "")[:500]
    rows = DeadLetter.objects.using(alias)
    with transaction.atomic(using=alias):
        if failure.replay_of is not None:
            row = _update(rows.filter(pk=failure.replay_of, service=service), fields, at)
            if row is not None:
                return row
        same = rows.filter(service=service, event_id=event_id, receiver=receiver)
        kept_body = body[: settings.max_message_size]
        if event_id is not None:
            row = _update(
                same if receiver else same.filter(body=kept_body, headers=texts), fields, at
            )
            if row is not None:
                return row
        body_truncated = len(body) > settings.max_message_size
        row = DeadLetter(
            service=service,
            event_id=event_id,
            event_type=texts.get(HEADER_TYPE, "")[:255],
            receiver=receiver,
            headers=texts,
            headers_truncated=headers_truncated,
            body=kept_body,
            body_truncated=body_truncated,
            content_type=(content_type or "")[:255],
            first_failed_at=at,
            failures=1,
            **fields,
        )
        try:
            with transaction.atomic(using=alias):
                row.save(using=alias, force_insert=True)
        except IntegrityError:
            # Another process dead-lettered the same event and receiver at the same moment.
            updated = _update(same, fields, at)
            if updated is None:
                raise
            return updated
        return row


def _update(same: Any, fields: dict[str, Any], at: datetime) -> DeadLetter | None:
    row: DeadLetter | None = same.select_for_update().first()
    if row is None:
        return None
    if row.last_failed_at == at:
        return row
    same.update(failures=F("failures") + 1, **fields)
    row.refresh_from_db()
    return row


def _event_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _drop_connection(alias: str) -> None:
    # A connection that failed may be broken: the next try opens a fresh one.
    with contextlib.suppress(DatabaseError):
        connections[alias].close()


def _publish(
    settings: BusSettings,
    service: str,
    body: bytes,
    headers: Mapping[str, Any] | None,
    failure: Failure,
    content_type: str | None,
    properties: Mapping[str, Any] | None,
    at: datetime,
) -> None:
    message = dead_letter_message(
        body,
        headers,
        reason=failure.reason,
        content_type=content_type,
        time=at,
        origin=failure.origin,
        receiver=failure.receiver,
        error=failure.error,
        traceback=failure.traceback,
        attempts=failure.attempts,
        properties=properties,
    )
    store = topology.dead_letter_queue(service, settings.queue_type)
    retrying_publisher(settings).publish(
        message,
        exchange=topology.dead_letter_exchange(service).name,
        routing_key="",
        declare=topology.Topology(exchanges=(), queues=(store,)),
    )


def mark_replayed(settings: BusSettings, dead_letter_id: int) -> None:
    """Mark a dead letter replayed once its replay ran (only a row that is replaying).

    A database error is logged, not raised: the receiver has run, and the row, left
    replaying, can be told apart by its age (``replay --force``).
    """
    alias = settings.db_alias
    try:
        if not connections[alias].in_atomic_block:
            connections[alias].close_if_unusable_or_obsolete()
        DeadLetter.objects.using(alias).filter(
            pk=dead_letter_id, status=DeadLetter.Status.REPLAYING
        ).update(status=DeadLetter.Status.REPLAYED, status_changed_at=datetime.now(UTC))
    except DatabaseError as exc:
        logger.warning(
            "dead letter %s was replayed, but marking it so failed (%s: %s); it stays replaying",
            dead_letter_id,
            type(exc).__name__,
            exc,
        )


def key_held(settings: BusSettings, exchange: str, key: str, event_id: uuid.UUID | str) -> bool:
    """Whether an event of ``key`` other than ``event_id`` that came by ``exchange`` is a
    pending dead letter of this service (a key stopped by ``when_exhausted: "stop"``)."""
    return (
        DeadLetter.objects.using(settings.db_alias)
        .filter(
            origin__startswith=f"{exchange}/",
            service=settings.service_name,
            status=DeadLetter.Status.PENDING,
            **{f"headers__{HEADER_PARTITION_KEY}": key},
        )
        .exclude(event_id=event_id)
        .exists()
    )
