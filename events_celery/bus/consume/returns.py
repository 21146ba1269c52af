"""Counting the starts of ordered events that came back unfinished, in the database.

An unordered event that comes back unfinished (its worker died running it) is published again
at the end of the task queue with a count (:mod:`.tasks`). An event of an ordered partition
cannot be: the later events of its key would overtake it. Its queue delivers it again, at its
place, flagged ``redelivered``; a quorum queue counts deliveries, a classic queue does not. So
the consumer counts here each start of a redelivered event, in a row of
:class:`~events_celery.models.ReturnedEvent` committed before the event runs, and
dead-letters it once the count passes ``EVENT_BUS_MAX_REDELIVERIES``.

A redelivered event that is started counts once, however it came back: its worker died
(killed by the event or not), the broker restarted, or its partition was handed on while it
waited for a retry. Events that were handed on before they started are redelivered too, but
their start after the return counts once and their row goes once they finish.
"""

from __future__ import annotations

import enum
import logging

from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)


class Returned(enum.IntEnum):
    """Whether a partition's event came back (``redelivered``), and whether it was counted."""

    NO = 0
    #: Redelivered; its next start is counted.
    START = 1
    #: Redelivered and counted in this worker; its row goes once it is finished.
    COUNTED = 2


def past_limit(db_alias: str, consumer: str, event_id: str, limit: int) -> str | None:
    """Count a start of an event that came back; past ``limit``, why to dead-letter it.

    The count is committed before the event runs, so a run that kills the process counts. If
    the database cannot count, the event runs (and counts at its next return).
    """
    try:
        starts = _count_start(db_alias, consumer, event_id)
    except Exception:
        logger.exception("counting a start of event %s, which came back, failed", event_id)
        return None
    if starts <= limit:
        return None
    return (
        f"came back unfinished and was started again {starts} time(s): whatever ran it stopped "
        f"before it finished (EVENT_BUS_MAX_REDELIVERIES is {limit})"
    )


def forget(db_alias: str, consumer: str, event_id: str) -> None:
    """The event is finished or dead-lettered: drop its count (if that fails, it stays, and a
    later return of the event counts on from it)."""
    from events_celery.models import ReturnedEvent

    try:
        rows = ReturnedEvent.objects.using(db_alias)
        rows.filter(consumer=consumer, event_id=event_id).delete()
    except Exception:
        logger.exception("dropping the count of event %s, which came back, failed", event_id)


def _count_start(db_alias: str, consumer: str, event_id: str) -> int:
    # One worker holds a partition at a time, so two counts of one event hardly ever race;
    # when they do, both count.
    from events_celery.models import ReturnedEvent

    rows = ReturnedEvent.objects.using(db_alias).filter(consumer=consumer, event_id=event_id)
    now = timezone.now()
    if not rows.update(starts=F("starts") + 1, last_started_at=now):
        _, created = ReturnedEvent.objects.using(db_alias).get_or_create(
            consumer=consumer, event_id=event_id, defaults={"starts": 1, "last_started_at": now}
        )
        if created:
            return 1
        rows.update(starts=F("starts") + 1, last_started_at=now)
    return int(rows.values_list("starts", flat=True)[0])
