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

import logging
from typing import Any

from celery import Celery, shared_task
from celery.exceptions import Reject

from events_celery.bus.consume.handoff import (
    DELIVER_EVENTS,
    RUN_RECEIVER,
    Envelope,
    deliver_later,
    retry_later,
)
from events_celery.bus.consume.receiver import (
    dead_letter_gone,
    dead_letter_unfinished,
    decode,
    run,
)
from events_celery.bus.dead_letters.store import mark_replayed
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import PublishError
from events_celery.receivers import names_of
from events_celery.wire import HEADER_ID

__all__ = ["DELIVER_EVENTS", "RUN_RECEIVER", "deliver_events", "run_receiver"]

logger = logging.getLogger(__name__)

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


def _requeue_on_publish_error(failures: list[PublishError]) -> None:
    if failures:
        # Not acknowledged: the broker delivers the task again later, and every receiver of
        # it runs again (at least once; receivers are idempotent by metadata.id).
        raise Reject(
            f"{len(failures)} hand-off(s) to the broker failed; requeued: {failures[0]}",
            requeue=True,
        )


@shared_task(bind=True, name=DELIVER_EVENTS, **_TASK_OPTIONS)
def deliver_events(self: Any, items: list[Envelope], redeliveries: int = 0) -> int:
    """Run every connected receiver of each event once; returns how many events ran.

    Args:
        items: the events.
        redeliveries: how many times these events came back unfinished (see below).

    A batch that comes back from the broker unfinished (its worker died, or it was requeued)
    is split into one task per event: an event whose receivers crash the worker then comes
    back alone, counted in the logs, instead of taking the other events' receivers with it.
    """
    settings = bus_settings()
    if (self.request.delivery_info or {}).get("redelivered"):
        try:
            for item in items:
                if redeliveries + 1 > settings.max_redeliveries:
                    _dead_letter_redelivered(settings, item, None, redeliveries + 1)
                    continue
                deliver_later(self.app, settings, [item], redeliveries=redeliveries + 1)
        except PublishError as exc:
            _requeue_on_publish_error([exc])
        logger.warning(
            "%d event(s) came back unfinished (%d time(s) now: a worker died while running "
            "their receivers, or the task was requeued); each now runs in its own task: %s",
            len(items),
            redeliveries + 1,
            ", ".join(str(item["headers"].get(HEADER_ID)) for item in items),
        )
        return 0
    delivered = 0
    failures: list[PublishError] = []
    for item in items:
        try:
            event = decode(settings, item)
            if event is None:
                continue
            for func in event.signal.receivers_for_dispatch():
                run(self.app, settings, event, item, func, attempt=1)
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
            # Its dead letter did not fit: alone in a task, its task message can be dead-lettered
            # without taking the other events of this batch along.
            try:
                deliver_later(self.app, settings, [item], redeliveries=redeliveries)
            except PublishError as exc:
                failures.append(exc)
            continue
        delivered += 1
    _requeue_on_publish_error(failures)
    return delivered


@shared_task(bind=True, name=RUN_RECEIVER, **_TASK_OPTIONS)
def run_receiver(
    self: Any, item: Envelope, receiver: str, attempt: int, redeliveries: int = 0
) -> None:
    """Run one receiver of one event again (attempt 2 and later).

    ``redeliveries``: how many times this retry came back unfinished (its worker died running it);
    past ``EVENT_BUS_MAX_REDELIVERIES`` the event is dead-lettered for this receiver instead.
    """
    settings = bus_settings()
    if (self.request.delivery_info or {}).get("redelivered"):
        try:
            if redeliveries + 1 > settings.max_redeliveries:
                _dead_letter_redelivered(settings, item, receiver, redeliveries + 1)
            else:
                retry_later(
                    self.app, settings, item, receiver, attempt, redeliveries=redeliveries + 1
                )
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
    event = decode(settings, item)
    if event is None:
        return
    func = names_of(event.signal).find(receiver)
    if func is not None:
        if run(app, settings, event, item, func, attempt) and item.get("dead_letter"):
            mark_replayed(settings, item["dead_letter"])
        return
    dead_letter_gone(settings, event, item, receiver, attempt - 1)
    logger.error(
        "%s: receiver %s to retry is no longer connected; event %s dead-lettered",
        event.metadata.event_type,
        receiver,
        event.metadata.id,
    )


def _dead_letter_redelivered(
    settings: BusSettings, item: Envelope, receiver: str | None, redeliveries: int
) -> None:
    """Dead-letter an event that came back unfinished too often (a receiver kills workers)."""
    dead_letter_unfinished(
        settings,
        item,
        f"came back unfinished {redeliveries} time(s): a worker died while running "
        f"{'receiver ' + receiver if receiver else 'its receivers'}, or handing it on to "
        f"the broker failed (EVENT_BUS_MAX_REDELIVERIES is {settings.max_redeliveries})",
        receiver=receiver,
    )
