"""Running one receiver of one event from the bus, and what follows when it fails.

A receiver runs inside the bus's hook points (:mod:`events_celery.bus.hooks`: tracing spans,
metrics). One that raises gets a retry task (:func:`~.handoff.retry_later`) after its backoff,
or, after its last attempt or on an exception it gives up on, the event is dead-lettered for
it. An event that cannot be decoded is dead-lettered as poison.
"""

from __future__ import annotations

import base64
import logging
import traceback as tb
from typing import Any

import attrs
from celery import Celery
from celery.exceptions import Reject

from events_celery import schema_store
from events_celery.bus import hooks
from events_celery.bus.broker.backoff import retry_delay
from events_celery.bus.consume.handoff import Envelope, retry_later
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter
from events_celery.conf import BusSettings
from events_celery.exceptions import MetadataError, PublishError
from events_celery.receivers import Receiver, options_for
from events_celery.receivers import attempt as attempt_number
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    HEADER_ID,
    PoisonMessageError,
    ReceivedEvent,
    decode_event,
    event_properties,
    metadata_from_headers,
)

logger = logging.getLogger(__name__)


def decode(settings: BusSettings, item: Envelope) -> ReceivedEvent | None:
    """Decode the event a task carries (once per delivery); ``None``: it was dead-lettered.

    Raises:
        Reject: the event could not be dead-lettered either (see :func:`dead_letter_message`).
    """
    body = base64.b64decode(item["body"])
    # A task names the exchange and routing key its event came by: the consumer checked them,
    # and checking again here keeps a task message made up by someone else from running
    # receivers this service does not subscribe to.
    origin = str(item.get("origin") or "")
    try:
        return decode_event(
            item["headers"],
            body,
            content_type=AVRO_CONTENT_TYPE,
            max_size=settings.max_message_size,
            writer_schemas=schema_store.find_schema,
            routing_key=origin.rpartition("/")[2] if "/" in origin else None,
            subscribed=settings.subscribes_to,
        )
    except PoisonMessageError as exc:
        hooks.poisoned(settings, origin.rpartition("/")[0])
        dead_letter_message(
            settings,
            body,
            item["headers"],
            str(item["headers"].get(HEADER_ID)),
            Failure(
                Reason.POISON,
                exc.reason,
                origin=item.get("origin"),
                replay_of=item.get("dead_letter"),
            ),
            properties=_properties(item),
        )
        logger.error("dead-lettered an undecodable event: %s", exc.reason)
        return None


def _properties(item: Envelope) -> dict[str, Any] | None:
    """The AMQP properties of the event whose envelope the consumer checked, if they read."""
    try:
        return with_user_id(event_properties(metadata_from_headers(item["headers"])), item)
    except MetadataError:
        return None


def with_user_id(properties: dict[str, Any], item: Envelope) -> dict[str, Any]:
    """``properties`` with the ``user_id`` the event arrived with (a dead letter keeps it)."""
    if item.get("user_id"):
        return {**properties, "user_id": item["user_id"]}
    return properties


@attrs.frozen
class Ran:
    """What one run of a receiver came to.

    Attributes:
        ok: it succeeded.
        retry_in: it failed and runs again (attempt ``attempt + 1``) after this many seconds;
            ``None``: no retry (it succeeded, or it was dead-lettered).
    """

    ok: bool
    retry_in: float | None = None

    @property
    def dead_lettered(self) -> bool:
        """It failed for the last time: the event is dead-lettered for this receiver."""
        return not self.ok and self.retry_in is None


def run(
    app: Celery,
    settings: BusSettings,
    event: ReceivedEvent,
    item: Envelope,
    func: Receiver,
    attempt: int,
) -> bool:
    """Run one receiver; returns whether it succeeded (else: a retry task, or a dead letter)."""
    ran = attempt_receiver(settings, event, item, func, attempt)
    if ran.retry_in is not None:
        retry_later(
            app,
            settings,
            item,
            event.signal.receiver_name(func),
            attempt + 1,
            countdown=ran.retry_in,
        )
    return ran.ok


def attempt_receiver(
    settings: BusSettings,
    event: ReceivedEvent,
    item: Envelope,
    func: Receiver,
    attempt: int,
) -> Ran:
    """Run one receiver once; a failure past its last attempt is dead-lettered here.

    The caller schedules the retry a failure asks for (:attr:`Ran.retry_in`).

    Raises:
        Reject: its dead letter could not be stored (see :func:`dead_letter_message`).
    """
    name = event.signal.receiver_name(func)
    options = options_for(func)
    try:
        with (
            attempt_number(attempt),
            hooks.receiver_run(settings, event, name, item, attempt),
        ):
            event.signal.emit_from_bus(event.metadata, event.payload, receiver=func)
        return Ran(True)
    except Exception as exc:
        policy = options.retry or settings.retry_policy
        give_up = isinstance(exc, options.give_up_on)
        if attempt < policy.max_attempts and not give_up:
            delay = retry_delay(policy, attempt + 1, quorum=settings.queue_type == "quorum")
            hooks.receiver_failed(settings, event, name, hooks.RETRY)
            logger.warning(
                "%s: receiver %s failed on attempt %d/%d (%s: %s); retry in %.1fs (event %s)",
                event.metadata.event_type,
                name,
                attempt,
                policy.max_attempts,
                type(exc).__name__,
                exc,
                delay,
                event.metadata.id,
            )
            return Ran(False, delay)
        why = (
            f"receiver gave up at once on {type(exc).__name__} (give_up_on), attempt {attempt}"
            if give_up
            else f"receiver failed after {attempt} attempt(s)"
        )
        dead_letter_event(
            settings,
            event,
            item,
            Failure(
                Reason.GAVE_UP if give_up else Reason.RECEIVER_FAILED,
                f"{why}: {type(exc).__name__}: {exc}",
                receiver=name,
                attempts=attempt,
                traceback="".join(tb.format_exception(exc)),
                origin=item.get("origin"),
            ),
        )
        hooks.receiver_failed(settings, event, name, hooks.DEAD_LETTERED)
        logger.error(
            "%s: receiver %s failed its last attempt (%d); event %s dead-lettered",
            event.metadata.event_type,
            name,
            attempt,
            event.metadata.id,
            exc_info=exc,
        )
        return Ran(False)


def dead_letter_unfinished(
    settings: BusSettings, item: Envelope, why: str, *, receiver: str | None = None
) -> None:
    """Dead-letter an event whose runs kept killing their worker (``why`` says how often).

    Raises:
        Reject: see :func:`dead_letter_event`.
    """
    event = decode(settings, item)
    if event is None:
        return
    dead_letter_event(
        settings,
        event,
        item,
        Failure(Reason.REDELIVERED, why, receiver=receiver, origin=item.get("origin")),
    )
    logger.error(
        "%s: event %s dead-lettered: %s", event.metadata.event_type, event.metadata.id, why
    )


def dead_letter_gone(
    settings: BusSettings, event: ReceivedEvent, item: Envelope, receiver: str, attempts: int
) -> None:
    """Dead-letter an event for a receiver (by name) no longer connected to its signal.

    Raises:
        Reject: see :func:`dead_letter_event`.
    """
    dead_letter_event(
        settings,
        event,
        item,
        Failure(
            Reason.RECEIVER_GONE,
            f"receiver {receiver} is no longer connected to {event.metadata.event_type}",
            receiver=receiver,
            attempts=attempts,
            origin=item.get("origin"),
        ),
    )


def dead_letter_event(
    settings: BusSettings, event: ReceivedEvent, item: Envelope, failure: Failure
) -> None:
    """Dead-letter an event in the dead-letter store; never loops.

    The store tries the database, then the broker's dead-letter queue (see
    :func:`~events_celery.bus.dead_letters.store.dead_letter`). If neither takes it, the task
    message itself is rejected without requeueing, so the broker's dead-letter exchange keeps
    it (with ``x-death``) instead of running the receivers again and again.

    Raises:
        Reject: the dead letter could not be stored either way.
    """
    dead_letter_message(
        settings,
        base64.b64decode(item["body"]),
        item["headers"],
        str(event.metadata.id),
        attrs.evolve(failure, replay_of=item.get("dead_letter")),
        properties=with_user_id(event_properties(event.metadata), item),
    )


def dead_letter_message(
    settings: BusSettings,
    body: bytes,
    headers: dict[str, Any],
    event_id: str,
    failure: Failure,
    *,
    properties: dict[str, Any] | None = None,
) -> None:
    """Dead-letter an event's message; if the store fails, the task message itself is.

    Raises:
        Reject: neither the database nor the broker's dead-letter queue took it.
    """
    try:
        dead_letter(
            settings, body, headers, failure, content_type=AVRO_CONTENT_TYPE, properties=properties
        )
    except PublishError as exc:
        logger.error(
            "dead-lettering event %s failed again (%s); the task message goes to the queue's "
            "dead-letter exchange as it is",
            event_id,
            exc,
        )
        raise Reject(f"could not dead-letter event {event_id}: {exc}", requeue=False) from exc
