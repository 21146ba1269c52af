"""Celery tasks that run receivers of events received from the bus.

A worker's consumer hands events to :func:`deliver_events` in batches, on the service-private
task queue. Each receiver of each event runs once; a receiver that raises gets its own retry
task (:func:`run_receiver`), so receivers that succeeded never run again because another one
failed. After the last attempt the event, the receiver, the error and the traceback go to the
dead-letter store.

Both tasks acknowledge late and are requeued when their worker process dies, so an event is
owned by the broker until each of its receivers has succeeded or been handed to a retry task
confirmed by the broker.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import traceback as tb
from typing import Any

import attrs
from celery import Celery, shared_task
from celery.exceptions import Reject
from kombu import Producer

from events_celery import schema_store
from events_celery.bus import hooks
from events_celery.bus.broker import topology
from events_celery.bus.broker.retrying import publisher
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter, mark_replayed
from events_celery.conf import BusSettings, RetryPolicy, bus_settings
from events_celery.exceptions import PublishError
from events_celery.receivers import attempt as attempt_number
from events_celery.receivers import options_for
from events_celery.signals import Receiver
from events_celery.wire import (
    AVRO_CONTENT_TYPE,
    HEADER_ID,
    PoisonMessageError,
    ReceivedEvent,
    decode_event,
    event_properties,
)

logger = logging.getLogger(__name__)

DELIVER_EVENTS = "events_celery.deliver_events"
RUN_RECEIVER = "events_celery.run_receiver"

#: One event as a task argument: its message headers and base64 Avro body (JSON-safe).
Envelope = dict[str, Any]

_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    # A task that raises (only when a hand-off to the broker failed) is not acknowledged away;
    # set explicitly, so CELERY_TASK_ACKS_ON_FAILURE / _ON_TIMEOUT cannot turn it into an ack.
    "acks_on_failure_or_timeout": False,
    "acks_on_failure": False,
    "acks_on_timeout": False,
    "serializer": "json",
    "ignore_result": True,
}


def envelope(
    headers: dict[str, Any],
    body: bytes,
    *,
    origin: str | None = None,
    dead_letter_id: int | None = None,
) -> Envelope:
    """Pack a message into a task argument.

    Args:
        headers: the message headers.
        body: the message body.
        origin: ``<exchange>/<routing key>`` the event came by.
        dead_letter_id: the dead letter this is a replay of; its row is marked replayed once
            the receiver (or, for a whole event, every receiver) has run.
    """
    item: Envelope = {
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
        "origin": origin,
    }
    if dead_letter_id is not None:
        item["dead_letter"] = dead_letter_id
    return item


def retry_delay(policy: RetryPolicy, attempt: int, *, quorum: bool = False) -> float:
    """Seconds to wait before ``attempt`` (2, 3, ...): exponential backoff with jitter.

    On quorum queues Celery delays tasks on the broker in whole seconds and refuses less than
    one, so the wait is rounded up to the next whole second there (at least 1 s).
    """
    delay = float(min(policy.backoff * 2 ** (attempt - 2), policy.backoff_max))
    if policy.jitter:
        delay *= random.uniform(0.5, 1.0)
    return float(max(math.ceil(delay), 1)) if quorum else delay


def send_task(
    app: Celery,
    settings: BusSettings,
    name: str,
    args: list[Any],
    *,
    countdown: float | None = None,
) -> None:
    """Publish a task to this service's task queue and wait for the broker's confirm.

    Raises:
        PublishError: not confirmed within the publish retry policy.
    """
    queue = topology.task_queue(
        settings.require_service_name(), settings.queue_type, app.conf.task_queue_max_priority
    )

    def publish(producer: Producer) -> None:
        app.send_task(
            name,
            args=args,
            # A Queue object, not its name: the name alone would be routed through an exchange
            # Celery creates on the fly. (celery-types only admits the name.)
            queue=queue,  # type: ignore[arg-type]
            exchange=queue.exchange.name,
            routing_key=queue.routing_key,
            producer=producer,
            countdown=countdown,
            retry=False,
            serializer="json",
            declare=[],
            # Confirmed and unroutable would still be lost: mandatory turns a missing queue
            # into an error (then a retry on a fresh connection, which declares it again).
            mandatory=True,
            delivery_mode=2,
        )

    publisher(settings).run(
        publish, topology.Topology((), (queue,)), describe=lambda: f"task {name} to {queue.name!r}"
    )


def _decode(settings: BusSettings, item: Envelope) -> ReceivedEvent | None:
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
        _park(
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
        )
        logger.error("dead-lettered an undecodable event: %s", exc.reason)
        return None


def _run(
    app: Celery,
    settings: BusSettings,
    event: ReceivedEvent,
    item: Envelope,
    func: Receiver,
    attempt: int,
) -> bool:
    """Run one receiver; returns whether it succeeded (else it got a retry or a dead letter)."""
    name = event.signal.receiver_name(func)
    options = options_for(func)
    try:
        with (
            attempt_number(attempt),
            hooks.receiver_run(settings, event, name, item, attempt),
        ):
            event.signal.emit_from_bus(event.metadata, event.payload, receiver=func)
        return True
    except Exception as exc:
        policy = options.retry or settings.retry_policy
        give_up = isinstance(exc, options.give_up_on)
        if attempt < policy.max_attempts and not give_up:
            delay = retry_delay(policy, attempt + 1, quorum=settings.queue_type == "quorum")
            send_task(app, settings, RUN_RECEIVER, [item, name, attempt + 1], countdown=delay)
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
            return False
        why = (
            f"receiver gave up at once on {type(exc).__name__} (give_up_on), attempt {attempt}"
            if give_up
            else f"receiver failed after {attempt} attempt(s)"
        )
        _dead_letter_event(
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
        return False


def _dead_letter_event(
    settings: BusSettings, event: ReceivedEvent, item: Envelope, failure: Failure
) -> None:
    """Park an event in the dead-letter store; never loops.

    The store tries the database, then the broker's dead-letter queue (see
    :func:`~events_celery.bus.dead_letters.store.dead_letter`). If neither takes it, the task
    message itself is rejected without requeueing, so the broker's dead-letter exchange parks
    it (with ``x-death``) instead of running the receivers again and again.

    Raises:
        Reject: the dead letter could not be stored either way.
    """
    _park(
        settings,
        base64.b64decode(item["body"]),
        item["headers"],
        str(event.metadata.id),
        attrs.evolve(failure, replay_of=item.get("dead_letter")),
        properties=event_properties(event.metadata),
    )


def _park(
    settings: BusSettings,
    body: bytes,
    headers: dict[str, Any],
    event_id: str,
    failure: Failure,
    *,
    properties: dict[str, Any] | None = None,
) -> None:
    # See _dead_letter_event: if the store fails, the task message itself is dead-lettered.
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


def _requeue_on_publish_error(failures: list[PublishError]) -> None:
    if failures:
        # Not acknowledged: the broker delivers the task again later, and every receiver of
        # it runs again (at least once; receivers are idempotent by metadata.id).
        raise Reject(
            f"{len(failures)} hand-off(s) to the broker failed; requeued: {failures[0]}",
            requeue=True,
        )


@shared_task(bind=True, name=DELIVER_EVENTS, **_TASK_OPTIONS)
def deliver_events(self: Any, items: list[Envelope], returns: int = 0) -> int:
    """Run every connected receiver of each event once; returns how many events ran.

    Args:
        items: the events.
        returns: how many times these events came back unfinished (see below).

    A batch that comes back from the broker unfinished (its worker died, or it was requeued)
    is split into one task per event: an event whose receivers crash the worker then comes
    back alone, counted in the logs, instead of taking the other events' receivers with it.
    """
    settings = bus_settings()
    if (self.request.delivery_info or {}).get("redelivered"):
        try:
            for item in items:
                if returns + 1 > settings.max_redeliveries:
                    _dead_letter_returned(settings, item, None, returns + 1)
                    continue
                send_task(self.app, settings, DELIVER_EVENTS, [[item], returns + 1])
        except PublishError as exc:
            _requeue_on_publish_error([exc])
        logger.warning(
            "%d event(s) came back unfinished (%d time(s) now: a worker died while running "
            "their receivers, or the task was requeued); each now runs in its own task: %s",
            len(items),
            returns + 1,
            ", ".join(str(item["headers"].get(HEADER_ID)) for item in items),
        )
        return 0
    delivered = 0
    failures: list[PublishError] = []
    for item in items:
        try:
            event = _decode(settings, item)
            if event is None:
                continue
            for func in event.signal.receivers_for_dispatch():
                _run(self.app, settings, event, item, func, attempt=1)
            if item.get("dead_letter") is not None:
                # A replayed whole event: it became an event and each receiver ran once
                # (those that failed have retries or dead letters of their own now).
                mark_replayed(settings, item["dead_letter"])
        except PublishError as exc:
            failures.append(exc)
            continue
        except Reject:
            if len(items) == 1:
                raise
            # Its dead letter did not fit: alone in a task, its task message can be parked
            # without taking the other events of this batch along.
            try:
                send_task(self.app, settings, DELIVER_EVENTS, [[item], returns])
            except PublishError as exc:
                failures.append(exc)
            continue
        delivered += 1
    _requeue_on_publish_error(failures)
    return delivered


@shared_task(bind=True, name=RUN_RECEIVER, **_TASK_OPTIONS)
def run_receiver(self: Any, item: Envelope, receiver: str, attempt: int, returns: int = 0) -> None:
    """Run one receiver of one event again (attempt 2 and later).

    ``returns``: how many times this retry came back unfinished (its worker died running it);
    past ``EVENT_BUS_MAX_REDELIVERIES`` the event is dead-lettered for this receiver instead.
    """
    settings = bus_settings()
    if (self.request.delivery_info or {}).get("redelivered"):
        try:
            if returns + 1 > settings.max_redeliveries:
                _dead_letter_returned(settings, item, receiver, returns + 1)
            else:
                send_task(self.app, settings, RUN_RECEIVER, [item, receiver, attempt, returns + 1])
        except PublishError as exc:
            _requeue_on_publish_error([exc])
        return
    try:
        _retry_receiver(self.app, settings, item, receiver, attempt)
    except PublishError as exc:
        _requeue_on_publish_error([exc])


def _retry_receiver(
    app: Celery, settings: BusSettings, item: Envelope, receiver: str, attempt: int
) -> None:
    event = _decode(settings, item)
    if event is None:
        return
    for func in event.signal.receivers_for_dispatch():
        if event.signal.receiver_name(func) == receiver:
            if _run(app, settings, event, item, func, attempt) and item.get("dead_letter"):
                mark_replayed(settings, item["dead_letter"])
            return
    _dead_letter_event(
        settings,
        event,
        item,
        Failure(
            Reason.RECEIVER_GONE,
            f"receiver {receiver} is no longer connected to {event.metadata.event_type}",
            receiver=receiver,
            attempts=attempt - 1,
            origin=item.get("origin"),
        ),
    )
    logger.error(
        "%s: receiver %s to retry is no longer connected; event %s dead-lettered",
        event.metadata.event_type,
        receiver,
        event.metadata.id,
    )


def _dead_letter_returned(
    settings: BusSettings, item: Envelope, receiver: str | None, returns: int
) -> None:
    """Dead-letter an event that came back unfinished too often (a receiver kills workers)."""
    event = _decode(settings, item)
    if event is None:
        return
    _dead_letter_event(
        settings,
        event,
        item,
        Failure(
            Reason.REDELIVERED,
            f"came back unfinished {returns} time(s): a worker died while running "
            f"{'receiver ' + receiver if receiver else 'its receivers'}, or handing it on to "
            f"the broker failed (EVENT_BUS_MAX_REDELIVERIES is {settings.max_redeliveries})",
            receiver=receiver,
            origin=item.get("origin"),
        ),
    )
    logger.error(
        "%s: event %s came back unfinished %d time(s); dead-lettered",
        event.metadata.event_type,
        event.metadata.id,
        returns,
    )
