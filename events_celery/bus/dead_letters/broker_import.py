"""Move dead letters from the broker queue ``<service>.events_celery.dead_letters`` into the table.

Messages land in that queue when the database was unavailable as they were dead-lettered (they
carry ``x-events-celery-*`` headers), or when RabbitMQ dead-lettered a rejected message of one
of the service's queues (they carry ``x-death`` instead: the reason and origin are derived from
it, and a receiver task message is unpacked into the events it carried).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from amqp.exceptions import NotFound
from kombu.message import Message

from events_celery import schema_store
from events_celery.bus.broker import topology
from events_celery.bus.broker.connection import bus_connection, connect
from events_celery.bus.consume.handoff import DELIVER_EVENTS, RUN_RECEIVER, task_events
from events_celery.bus.dead_letters.store import Failure, Reason, record
from events_celery.conf import BusSettings
from events_celery.conf.routing import MAX_PARTITIONS
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_ERROR,
    HEADER_ORIGIN,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_TRACEBACK,
    HEADER_USER_ID,
    PoisonMessageError,
    decode_event,
    header_text,
    parse_time,
)

logger = logging.getLogger(__name__)


@attrs.frozen
class BrokerDeadLetter:
    """One dead letter as read from the broker queue, ready to be written as a row."""

    body: bytes
    headers: Mapping[str, Any]
    failure: Failure
    content_type: str | None
    at: datetime


def import_dead_letters(
    settings: BusSettings,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Move the messages of this service's broker dead-letter queue into the table.

    At most the messages that were in the queue when the import began (and at most ``limit``)
    are read, so the import ends even while new ones arrive. Each message is acknowledged only
    once its rows have been committed; importing a message again (the acknowledgement was lost)
    leaves its row as it is.

    Returns:
        How many messages were imported.

    Raises:
        DatabaseError: a row could not be written; that message and the rest stay in the queue.
    """
    service = settings.require_service_name()
    with bus_connection(settings, confirm_publish=False) as connection:
        connect(connection, timeout=settings.publish_timeout)
        channel = connection.channel()
        queue = topology.dead_letter_queue(service, settings.queue_type)(channel)
        try:
            declared: Any = queue.queue_declare(passive=True)
        except connection.channel_errors as exc:
            if isinstance(exc, NotFound) or "NOT_FOUND" in str(exc):
                return 0  # nothing was ever dead-lettered to the broker
            raise
        routed_by_us = partition_queue_names(settings)
        waiting = int(declared.message_count)
        total = waiting if limit is None else min(waiting, limit)
        imported = 0
        while imported < total:
            message = queue.get(no_ack=False)
            if message is None:
                break
            try:
                for found in read_message(message, routed_by_us):
                    record(
                        settings,
                        service,
                        found.body,
                        found.headers,
                        found.failure,
                        content_type=found.content_type,
                        at=found.at,
                    )
            except BaseException:
                message.requeue()
                raise
            message.ack()
            imported += 1
            if progress is not None:
                progress(imported, total)
        return imported


def partition_queue_names(settings: BusSettings) -> frozenset[str]:
    """The partition queues this service's ordered subscriptions may have (any count)."""
    service = settings.require_service_name()
    return frozenset(
        f"{topology.ordered_name(service, subscription.topic)}.{number}"
        for subscription in settings.subscriptions
        if subscription.order_by_key
        for number in range(MAX_PARTITIONS)
    )


def read_message(
    message: Message, partition_queues: Collection[str] = frozenset()
) -> list[BrokerDeadLetter]:
    """What a message of the broker dead-letter queue says, as dead letters.

    ``partition_queues``: this service's partition queues, whose messages its routers wrote.
    """
    headers: dict[str, Any] = dict(message.headers or {})
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    content_type = message.content_type
    if HEADER_REASON in headers:
        return [_ours(body, headers, content_type)]
    deaths = headers.get("x-death") or []
    death: Mapping[str, Any] = deaths[0] if deaths and isinstance(deaths[0], Mapping) else {}
    at = death.get("time")
    at = at.replace(tzinfo=at.tzinfo or UTC) if isinstance(at, datetime) else datetime.now(UTC)
    if death:
        why = (
            f"dead-lettered by RabbitMQ from queue {header_text(death.get('queue'))!r} "
            f"({header_text(death.get('reason'))}, {death.get('count', 1)} time(s)) with no reason "
            "recorded: the dead-letter store could not take it then"
        )
    else:
        why = "found in the broker's dead-letter queue with no reason recorded"
    task = header_text(headers.get("task") or "")
    if task in (DELIVER_EVENTS, RUN_RECEIVER):
        events = _task_events(task, body, death, why, at)
        if events:
            return events
    routing_keys = death.get("routing-keys") or []
    origin = (
        f"{header_text(death.get('exchange'))}/{header_text(routing_keys[0])}"
        if routing_keys
        else None
    )
    reason = Reason.REDELIVERED if death.get("reason") == "delivery_limit" else Reason.POISON
    from_partition = header_text(death.get("queue") or "") in partition_queues
    headers = _with_publisher(headers, message, from_partition)
    return [BrokerDeadLetter(body, headers, Failure(reason, why, origin=origin), content_type, at)]


def _with_publisher(
    headers: dict[str, Any], message: Message, from_partition: bool
) -> dict[str, Any]:
    """The headers of a whole message, with the broker user that published the event.

    A message dead-lettered from an ordered subscription's partition queue carries that user in
    the header its router sets (:func:`~events_celery.bus.consume.router._forwarded`); any other
    message in its ``user_id`` property, which the broker checked, while a header of that name
    is only the publisher's claim and is dropped. (The newest ``x-death`` entry, first, is the
    broker's own.)
    """
    if from_partition:
        return headers
    kept = {k: v for k, v in headers.items() if k != HEADER_USER_ID}
    user_id = (message.properties or {}).get("user_id")
    if user_id:
        kept[HEADER_USER_ID] = header_text(user_id)
    return kept


def _ours(body: bytes, headers: dict[str, Any], content_type: str | None) -> BrokerDeadLetter:
    text = header_text(headers[HEADER_REASON])
    if text in Reason.values:
        reason, error = text, header_text(headers.get(HEADER_ERROR, ""))
    else:  # written by an earlier release: the reason header held the text
        reason = legacy_reason(text)
        detail = headers.get(HEADER_ERROR)
        error = f"{text}: {header_text(detail)}" if detail is not None else text
    try:
        at = parse_time(header_text(headers.get(HEADER_DEAD_LETTERED_AT, "")))
    except ValueError:
        at = datetime.now(UTC)
    attempts = header_text(headers.get(HEADER_ATTEMPTS, ""))
    failure = Failure(
        reason,
        error,
        receiver=header_text(headers[HEADER_RECEIVER]) if HEADER_RECEIVER in headers else None,
        traceback=header_text(headers[HEADER_TRACEBACK]) if HEADER_TRACEBACK in headers else None,
        attempts=int(attempts) if attempts.isdigit() else None,
        origin=header_text(headers[HEADER_ORIGIN]) if HEADER_ORIGIN in headers else None,
    )
    kept = {
        k: v
        for k, v in headers.items()
        if not k.startswith("x-events-celery-") or k == HEADER_USER_ID
    }
    return BrokerDeadLetter(body, kept, failure, content_type, at)


def legacy_reason(text: str) -> str:
    """The reason code of a reason text written by an earlier release."""
    if text.startswith("receiver failed after"):
        return Reason.RECEIVER_FAILED
    if text.startswith("receiver gave up"):
        return Reason.GAVE_UP
    if text.startswith("came back unfinished"):
        return Reason.REDELIVERED
    if "is no longer connected" in text:
        return Reason.RECEIVER_GONE
    return Reason.POISON


def _task_events(
    task: str, body: bytes, death: Mapping[str, Any], why: str, at: datetime
) -> list[BrokerDeadLetter]:
    """The events a receiver task message carried (its task was rejected to the queue)."""
    try:
        carried = task_events(task, json.loads(body)[0])
        items, receiver, attempt = carried.items, carried.receiver, carried.attempt
        found = []
        for item in items:
            event_body = base64.b64decode(item["body"], validate=True)
            failure = Failure(
                Reason.REDELIVERED
                if death.get("reason") == "delivery_limit"
                else Reason.RECEIVER_FAILED,
                f"{why}; it was the {task} task of "
                + (f"receiver {receiver}, attempt {attempt}" if receiver else "every receiver"),
                receiver=receiver,
                attempts=attempt,
                origin=item.get("origin"),
            )
            if receiver is None and (poison := _undecodable(event_body, item["headers"])):
                # Its task was rejected because the event could not be read, nor stored.
                failure = Failure(Reason.POISON, poison, origin=item.get("origin"))
            headers = {k: v for k, v in item["headers"].items() if k != HEADER_USER_ID}
            if item.get("user_id"):
                headers[HEADER_USER_ID] = str(item["user_id"])
            found.append(BrokerDeadLetter(event_body, headers, failure, AVRO_CONTENT_TYPE, at))
        return found
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, binascii.Error):
        logger.warning("a %s task message in the dead-letter queue is malformed; kept whole", task)
        return []


def _undecodable(body: bytes, headers: Mapping[str, Any]) -> str | None:
    """Why an event a task carried cannot become an event here, or ``None`` if it can."""
    try:
        decode_event(
            headers,
            body,
            content_type=AVRO_CONTENT_TYPE,
            max_size=max(len(body), 1),
            writer_schemas=schema_store.find_schema,
        )
    except PoisonMessageError as exc:
        return exc.reason
    return None
