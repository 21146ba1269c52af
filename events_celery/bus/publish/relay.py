"""Relays move the outbox rows their writer could not publish to the broker.

* :func:`relay_pass`: claims rows whose lease ran out (their writer died, or gave them back),
  publishes them (:class:`~events_celery.bus.publish.rows.RowPublisher`) and deletes the
  confirmed ones. A claim takes the rows of one ordering key only from the oldest one still in
  the table, and together, so that they go out in outbox order on one channel, whichever of
  the concurrent relays claims them. The :class:`Sweeper` thread of every Celery worker of a
  publishing service runs it, and so does ``manage.py relay_events``.

Delivery is at least once: a relay that dies between the broker's confirm and the delete
leaves rows that another relay publishes again, under the same event id.
"""

from __future__ import annotations

import logging
import threading
import time

import attrs
from django.db import connections

from events_celery.bus.broker.backoff import MIN_PAUSE, publish_pause
from events_celery.bus.publish import claims, outbox
from events_celery.bus.publish.rows import RowPublisher
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import BrokerTLSError

logger = logging.getLogger(__name__)


@attrs.frozen
class RelayPass:
    """What one :func:`relay_pass` did: rows published, and what stopped it, if anything."""

    published: int
    error: BaseException | None = None


def relay_pass(
    settings: BusSettings,
    *,
    include_refused: bool = False,
    stop: threading.Event | None = None,
) -> RelayPass:
    """Publish every row whose lease has run out, batch by batch.

    Stops at the first batch the broker did not take (the rows go back to the table, to be
    tried again after a pause), and, once ``stop`` is set, before the next batch or while
    waiting for the broker (within :data:`~events_celery.bus.broker.confirms.STOP_POLL`).
    """
    relay = RowPublisher(settings, stop=stop)
    published = 0
    try:
        while stop is None or not stop.is_set():
            rows = claims.claim(
                settings, limit=settings.outbox_batch_size, include_refused=include_refused
            )
            if not rows:
                return RelayPass(published)
            outcome = relay.publish(rows)
            relay.set_aside(outcome)
            if outcome.confirmed:
                # Deleting fails with DatabaseError: they will be published again (at least
                # once).
                claims.delete(settings, outcome.confirmed)
            published += len(outcome.confirmed)
            # Rows blocked behind a refused row of their key go back too: no claim takes them
            # before that row, which waits a lease (or is set aside).
            retry = sorted([*outcome.unknown, *outcome.unsent, *outcome.blocked])
            if retry:
                claims.release(
                    settings,
                    retry,
                    retry_in=publish_pause(settings.publish_retry_policy, 1, at_least=MIN_PAUSE),
                    refused={},
                )
            if outcome.refused:
                # Refused rows wait a lease before any relay tries them again, as the
                # background publisher's do; this pass goes on with other rows only.
                claims.release(
                    settings,
                    list(outcome.refused),
                    retry_in=settings.outbox_lease,
                    refused=outcome.refused,
                )
            if outcome.error is not None:
                logger.log(
                    logging.ERROR if isinstance(outcome.error, BrokerTLSError) else logging.WARNING,
                    "relaying outbox rows stopped: %s: %s (%d row(s) wait)",
                    type(outcome.error).__name__,
                    outcome.error,
                    len(retry),
                )
                return RelayPass(published, outcome.error)
            if len(rows) < settings.outbox_batch_size:
                return RelayPass(published)
        return RelayPass(published)
    finally:
        relay.close()


def warn_overdue(settings: BusSettings) -> None:
    """Log a WARNING naming the events that have waited past ``EVENT_BUS_OUTBOX_WARN_AFTER``."""
    ids, total = outbox.overdue(settings)
    if ids:
        more = f" and {total - len(ids)} more" if total > len(ids) else ""
        logger.warning(
            "%d outbox event(s) have waited more than %ss to be published: %s%s. Is the "
            "broker reachable? (manage.py show_event_bus shows the backlog)",
            total,
            f"{settings.outbox_warn_after:g}",
            ", ".join(ids),
            more,
        )


class Sweeper:
    """A thread that runs :func:`relay_pass` every ``EVENT_BUS_OUTBOX_SWEEP_INTERVAL``."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events_celery-sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping in the background."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop: the current pass ends before its next batch, or while it waits for the broker."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        last_warning = 0.0
        while not self._stop.is_set():
            settings = bus_settings()
            try:
                relay_pass(settings, stop=self._stop)
                if time.monotonic() - last_warning >= settings.outbox_warn_after:
                    last_warning = time.monotonic()
                    warn_overdue(settings)
            except Exception as exc:  # logged with its traceback; the rows wait in the table
                logger.exception(
                    "the outbox sweeper failed (%s); it tries again", type(exc).__name__
                )
                connections[settings.db_alias].close()
            self._stop.wait(settings.outbox_sweep_interval)
        connections.close_all()
