"""Replay, discard and read dead letters: what ``manage.py event_dead_letters`` and the admin do.

Replaying a dead letter of a receiver runs only that receiver again, with fresh attempts: a
``run_receiver`` task, attempt 1, on the service's task queue. Replaying a dead letter of a
whole event (``receiver`` blank: a poison message, for instance) decodes it again with the
schemas the service knows now, and hands it to ``deliver_events``, which runs every receiver of
this service once. A replay that fails again is dead-lettered again: the same row, back to
pending, ``failures`` + 1. Once the replay ran, the task marks the row replayed.

A replay is checked for authenticity again (``EVENT_BUS_TRUSTED_PUBLISHERS`` with the
``user_id`` the event arrived with, kept in its row, and ``EVENT_BUS_REQUIRE_SIGNATURES`` with
its signature header); one that fails stays pending with the reason.

A row is claimed before its replay starts, with a conditional update from pending to replaying,
so two replays of one dead letter never run its receiver twice at the same time: the second is
skipped, and says so.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import attrs
from celery import Celery
from django.db.models import F, Q, QuerySet

from events_celery import schema_store
from events_celery.bus.consume.handoff import deliver_later, envelope, retry_later
from events_celery.bus.dead_letters.store import Reason
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import MetadataError, PublishError
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import (
    DEAD_LETTER_PREFIX,
    HEADER_USER_ID,
    MAX_ERROR,
    PoisonMessageError,
    decode_event,
    read_metadata,
)

logger = logging.getLogger(__name__)

Status = DeadLetter.Status

#: How long a row stays replaying before ``force`` may claim it again: longer than a receiver's
#: attempts take in most services (``replay --force`` takes another duration).
STALE_REPLAY = timedelta(minutes=15)

#: Headers a replay does not send again: why and how it was dead-lettered.
_NOT_REPLAYED = (DEAD_LETTER_PREFIX, "x-death", "x-first-death-", "x-last-death-")


@attrs.frozen
class ReplayResult:
    """What :func:`replay_dead_letters` did.

    Attributes:
        started: ids of the dead letters whose replay started (their rows are replaying).
        skipped: id → why its replay did not start (already replaying, replayed or discarded,
            another service's, an event type this service does not subscribe to, still not
            decodable, or the broker did not take the task).
    """

    started: tuple[int, ...] = ()
    skipped: Mapping[int, str] = attrs.field(factory=dict)


@attrs.frozen
class DecodedDeadLetter:
    """A dead letter read with the schemas this service knows now.

    Attributes:
        metadata: the event's metadata as text (id, type, source, time, ...), or ``None``
            when the headers do not make valid metadata.
        payload: the payload as plain values (records as dicts, UUIDs, decimals and times as
            text), or ``None`` when it cannot be decoded.
        error: why it cannot be decoded, or ``None``.
    """

    metadata: dict[str, Any] | None
    payload: dict[str, Any] | None
    error: str | None


def replay_dead_letters(
    dead_letters: QuerySet[DeadLetter] | Iterable[DeadLetter],
    *,
    force_stale_after: timedelta | None = None,
    app: Celery | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Start the replay of dead letters of this service.

    Args:
        dead_letters: the rows (a QuerySet or any iterable of :class:`DeadLetter`).
        force_stale_after: also claim rows that have been replaying for longer than this (a
            replay whose worker died); ``None``: only pending rows are replayed.
        app: the Celery app that sends the tasks (default: Celery's current app).
        progress: called with ``(done, total)`` after each row.

    Returns:
        Which replays started and which were skipped, and why.
    """
    settings = bus_settings()
    service = settings.require_service_name()
    if app is None:
        from celery import current_app

        app = current_app
    ids = _ids(dead_letters)
    started: list[int] = []
    skipped: dict[int, str] = {}
    rows = DeadLetter.objects.using(settings.db_alias)
    for done, pk in enumerate(ids, 1):
        try:
            why = _replay_one(settings, service, app, rows, pk, force_stale_after)
        except _BrokerUnavailableError as exc:
            # One refused task is enough: the others would each wait out the same retries.
            skipped[pk] = f"the broker did not take the replay task: {exc}"
            for rest in ids[done:]:
                skipped[rest] = f"not tried: the broker did not take an earlier replay ({exc})"
            if progress is not None:
                progress(len(ids), len(ids))
            break
        if why is None:
            started.append(pk)
        else:
            skipped[pk] = why
        if progress is not None:
            progress(done, len(ids))
    return ReplayResult(started=tuple(started), skipped=skipped)


class _BrokerUnavailableError(Exception):
    """A replay task was not confirmed by the broker (the row is pending again)."""


def discard_dead_letters(dead_letters: QuerySet[DeadLetter] | Iterable[DeadLetter]) -> int:
    """Mark pending dead letters discarded; returns how many were.

    The rows stay (for the record); rows that are replaying, replayed or already discarded are
    left as they are. Delete discarded rows with the admin or
    ``DeadLetter.objects.filter(status="discarded").delete()``.
    """
    settings = bus_settings()
    ids = _ids(dead_letters)
    now = datetime.now(UTC)
    discarded = 0
    rows = DeadLetter.objects.using(settings.db_alias)
    for start in range(0, len(ids), 500):  # SQLite bounds the parameters of one query
        discarded += rows.filter(pk__in=ids[start : start + 500], status=Status.PENDING).update(
            status=Status.DISCARDED, status_changed_at=now
        )
    return discarded


def decode_dead_letter(dead_letter: DeadLetter) -> DecodedDeadLetter:
    """Decode a dead letter's body with the schemas this service knows now, readably."""
    headers = replay_headers(dead_letter)
    try:
        metadata = _readable(attrs.asdict(EventMetadata.from_headers(headers), recurse=False))
    except MetadataError:
        metadata = None
    if dead_letter.body_truncated:
        return DecodedDeadLetter(
            metadata, None, "the body was too large to keep whole; only its start is stored"
        )
    try:
        event = decode_event(
            headers,
            bytes(dead_letter.body),
            content_type=dead_letter.content_type or None,
            max_size=max(len(dead_letter.body), 1),
            writer_schemas=schema_store.find_schema,
        )
    except PoisonMessageError as exc:
        return DecodedDeadLetter(metadata, None, exc.reason)
    return DecodedDeadLetter(metadata, _readable(event.payload), None)


def replay_headers(dead_letter: DeadLetter) -> dict[str, str]:
    """The headers a replay sends: the message's own, without why it was dead-lettered."""
    return {
        key: value
        for key, value in (dead_letter.headers or {}).items()
        if not key.startswith(_NOT_REPLAYED)
    }


def _ids(dead_letters: QuerySet[DeadLetter] | Iterable[DeadLetter]) -> list[int]:
    if isinstance(dead_letters, QuerySet):
        return list(dead_letters.values_list("pk", flat=True))
    return [row.pk for row in dead_letters]


def _replay_one(
    settings: BusSettings,
    service: str,
    app: Celery,
    rows: QuerySet[DeadLetter],
    pk: int,
    force_stale_after: timedelta | None,
) -> str | None:
    """Claim and replay one row; returns why it was skipped, or ``None`` once it started."""
    row = rows.filter(pk=pk).first()
    if row is None:
        return "no longer exists"
    if row.service != service:
        return (
            f"belongs to service {row.service!r}: replay it with that service's settings "
            "(EVENT_BUS_SERVICE_NAME); the dead letters of an Open edX consume_events group "
            "cannot be replayed"
        )
    exchange, _, routing_key = row.origin.rpartition("/")
    topic = exchange.removeprefix(settings.topic_prefix) if exchange else None
    if row.event_type and not settings.subscribes_to(row.event_type, topic):
        return (
            f"{row.event_type!r} is not an event type this service subscribes to"
            + (f" on topic {topic!r}" if topic else "")
            + " (EVENT_BUS_CONSUMER_CONFIG)"
        )
    now = datetime.now(UTC)
    claimable = Q(status=Status.PENDING)
    if force_stale_after is not None:
        claimable |= Q(status=Status.REPLAYING, status_changed_at__lt=now - force_stale_after)
    claimed = rows.filter(claimable, pk=pk).update(
        status=Status.REPLAYING, status_changed_at=now, replays=F("replays") + 1
    )
    if not claimed:
        return _not_claimed(rows, pk, force_stale_after)
    headers = replay_headers(row)
    body = bytes(row.body)
    # The broker user the event arrived from, as its row keeps it: a replay is published by
    # this service, so the authenticity of the event is checked again with what it had then
    # (and its signature, which travels in the headers).
    user_id = (row.headers or {}).get(HEADER_USER_ID) or None
    item = envelope(headers, body, origin=row.origin or None, dead_letter_id=pk, user_id=user_id)
    try:
        if row.receiver:
            if settings.authenticity is not None:
                read_metadata(
                    headers,
                    body,
                    content_type=row.content_type or None,
                    max_size=settings.max_message_size,
                    authenticity=settings.authenticity,
                    user_id=user_id,
                )
            retry_later(app, settings, item, row.receiver, 1)
        else:
            if row.body_truncated:
                raise PoisonMessageError("the body was too large to keep whole; it cannot replay")
            # Decoded here too (an operator's command, not the hot path): a body that still
            # cannot be read stays pending with its error instead of being handed to a task.
            decode_event(
                headers,
                body,
                content_type=row.content_type or None,
                max_size=settings.max_message_size,
                writer_schemas=schema_store.find_schema,
                routing_key=routing_key or None,
                subscribed=lambda event_type: settings.subscribes_to(event_type, topic),
                authenticity=settings.authenticity,
                user_id=user_id,
            )
            deliver_later(app, settings, [item])
    except PoisonMessageError as exc:
        # Still not an event: dead-lettered again, with the new error.
        rows.filter(pk=pk).update(
            status=Status.PENDING,
            status_changed_at=now,
            error=exc.reason[:MAX_ERROR],
            reason=Reason.POISON,
            last_failed_at=now,
            failures=F("failures") + 1,
        )
        return f"still cannot become an event: {exc.reason}"
    except PublishError as exc:
        rows.filter(pk=pk, status=Status.REPLAYING).update(
            status=Status.PENDING, status_changed_at=now, replays=F("replays") - 1
        )
        raise _BrokerUnavailableError(str(exc)) from exc
    logger.info(
        "dead letter %s: replay started (%s of event %s)",
        pk,
        f"receiver {row.receiver}" if row.receiver else "every receiver",
        row.event_id,
    )
    return None


def _not_claimed(rows: QuerySet[DeadLetter], pk: int, force_stale_after: timedelta | None) -> str:
    row = rows.filter(pk=pk).first()
    if row is None:
        return "no longer exists"
    if row.status == Status.REPLAYING:
        since = row.status_changed_at.isoformat() if row.status_changed_at else "an unknown time"
        if force_stale_after is None:
            return (
                f"already replaying (since {since}); a replay whose worker died can be forced "
                f"once it is older than a stated time (replay --force)"
            )
        return f"already replaying (since {since}), for less than {force_stale_after}"
    return f"already {row.status}"


def _readable(value: Any) -> Any:
    """Plain values for display: records as dicts, UUIDs, decimals, times and bytes as text."""
    if attrs.has(type(value)):
        return {f.name: _readable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _readable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_readable(v) for v in value]
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


__all__ = [
    "STALE_REPLAY",
    "DecodedDeadLetter",
    "ReplayResult",
    "decode_dead_letter",
    "discard_dead_letters",
    "replay_dead_letters",
    "replay_headers",
]
