"""Running the receivers of one event of an ordered subscription, in a worker's pool process.

The ordered consumer (:mod:`.ordered`) hands each event to the pool once the event before it
of its key is finished. Here every receiver of the event runs once; one that fails is not
retried through the broker (a retry task would let the next event of the key overtake it):
the result says which receivers run again and when, and the consumer runs this again then,
with the event message still unacknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Reject

from events_celery.bus.consume import returns
from events_celery.bus.consume.handoff import Envelope
from events_celery.bus.consume.receiver import (
    attempt_receiver,
    dead_letter_event,
    dead_letter_gone,
    dead_letter_unfinished,
    decode,
)
from events_celery.bus.consume.returns import Returned
from events_celery.bus.dead_letters.store import Failure, Reason, key_held
from events_celery.conf import BusSettings, bus_settings
from events_celery.receivers import names_of
from events_celery.wire import HEADER_ID, HEADER_PARTITION_KEY, ReceivedEvent

logger = logging.getLogger(__name__)

#: What a run reports back (plain data: it crosses from the pool process to the consumer):
#: ``again``: run it again, after ``retry_in`` seconds, for the ``receivers`` named (``None``:
#: all) at the ``attempts`` given; ``dead_lettered``: a receiver's failure (or the whole event)
#: went to the dead-letter store; ``reject``: neither the database nor the broker's
#: dead-letter queue took it, so the message itself goes to the queue's dead-letter exchange.
Result = dict[str, Any]

DONE: Result = {"again": False, "dead_lettered": False}

#: One event to run: the event, the receivers still to succeed (``None``: all of them), the
#: attempt each of those is at (1 when left out), and whether its message came back
#: (:mod:`.returns`).
Job = tuple[Envelope, "list[str] | None", dict[str, int], Returned]


def run_in_order(jobs: list[Job], stop_on_dead_letter: bool) -> list[Result]:
    """Run the receivers of each event, one event after the other (they are of different keys).

    Args:
        jobs: the events.
        stop_on_dead_letter: the subscription stops a key after a dead letter: while an earlier
            event of this key is a pending dead letter, this one is held as a dead letter too.

    Never raises for a receiver's error: every outcome is in the results, one per event.
    """
    settings = bus_settings()
    results = []
    for item, receivers, attempts, returned in jobs:
        event_id = str(item["headers"].get(HEADER_ID) or "")
        given_up = (
            _started_too_often(settings, item, event_id) if returned == Returned.START else None
        )
        if given_up is not None:
            results.append(given_up)
            continue
        result = _run_one(settings, item, receivers, attempts, stop_on_dead_letter)
        if returned != Returned.NO and not result["again"]:
            returns.forget(settings.db_alias, settings.service_name or "", event_id)
        results.append(result)
    return results


def _started_too_often(settings: BusSettings, item: Envelope, event_id: str) -> Result | None:
    """Count a start of an event that came back; past the limit, dead-letter it (its result)."""
    consumer = settings.service_name or ""
    why = returns.past_limit(settings.db_alias, consumer, event_id, settings.max_redeliveries)
    if why is None:
        return None
    try:
        dead_letter_unfinished(settings, item, why)
    except Reject as exc:  # see _run_one
        logger.error("%s", exc)
        return {"again": False, "dead_lettered": True, "reject": True}
    returns.forget(settings.db_alias, consumer, event_id)
    return {**DONE, "dead_lettered": True}


def _run_one(
    settings: BusSettings,
    item: Envelope,
    receivers: list[str] | None,
    attempts: dict[str, int],
    stop_on_dead_letter: bool,
) -> Result:
    try:
        event = decode(settings, item)
        if event is None:  # dead-lettered as poison
            return DONE
        if stop_on_dead_letter and _key_stopped(settings, event, item):
            _hold(settings, event, item)
            return {**DONE, "dead_lettered": True}
        return _run_receivers(settings, event, item, receivers, attempts)
    except Reject as exc:
        # Its dead letter could not be stored: the consumer rejects the message, and the
        # partition queue's dead-letter exchange keeps it (as for an unordered event).
        logger.error("%s", exc)
        return {"again": False, "dead_lettered": True, "reject": True}


def _run_receivers(
    settings: BusSettings,
    event: ReceivedEvent,
    item: Envelope,
    receivers: list[str] | None,
    attempts: dict[str, int],
) -> Result:
    retry: dict[str, int] = {}
    retry_in = 0.0
    dead_lettered = False
    names = names_of(event.signal)
    funcs = event.signal.receivers_for_dispatch()
    wanted = set(receivers) if receivers is not None else None
    for func in funcs:
        name = event.signal.receiver_name(func)
        if wanted is not None and name not in wanted:
            continue
        attempt = attempts.get(name, 1)
        ran = attempt_receiver(settings, event, item, func, attempt)
        if ran.retry_in is not None:
            retry[name] = attempt + 1
            retry_in = max(retry_in, ran.retry_in)
        elif ran.dead_lettered:
            dead_lettered = True
    for name in sorted((wanted or set()) - {event.signal.receiver_name(f) for f in funcs}):
        if names.find(name) is None:
            dead_letter_gone(settings, event, item, name, attempts.get(name, 1) - 1)
    if retry:
        return {
            "again": True,
            "receivers": sorted(retry),
            "attempts": retry,
            "retry_in": retry_in,
            "dead_lettered": dead_lettered,
        }
    return {"again": False, "dead_lettered": dead_lettered}


def _key_stopped(settings: BusSettings, event: ReceivedEvent, item: Envelope) -> bool:
    """Whether an earlier event of this event's key is a pending dead letter of this topic."""
    key = str(item["headers"].get(HEADER_PARTITION_KEY))
    exchange = str(item.get("origin") or "").partition("/")[0]
    return key_held(settings, exchange, key, event.metadata.id)


def _hold(settings: BusSettings, event: ReceivedEvent, item: Envelope) -> None:
    key = item["headers"].get(HEADER_PARTITION_KEY)
    dead_letter_event(
        settings,
        event,
        item,
        Failure(
            Reason.KEY_HELD,
            f"held: an earlier event of key {key!r} is a dead letter, and this subscription "
            "stops a key after a dead letter (when_exhausted: 'stop'); replay or discard that "
            "one, then replay this",
            origin=item.get("origin"),
        ),
    )
    logger.error(
        "%s: event %s held as a dead letter: key %r is stopped by an earlier dead letter",
        event.metadata.event_type,
        event.metadata.id,
        key,
    )


def give_up(item: Envelope, crashes: int, limit: int) -> None:
    """Dead-letter an event whose runs killed a pool process more than ``limit`` times."""
    settings = bus_settings()
    returns.forget(
        settings.db_alias, settings.service_name or "", str(item["headers"].get(HEADER_ID))
    )
    dead_letter_unfinished(
        settings,
        item,
        f"came back unfinished {crashes} time(s): a pool process died running its receivers "
        f"(EVENT_BUS_MAX_REDELIVERIES is {limit})",
    )
