"""Relays move outbox rows to the broker: :class:`Relay`, and the sweepers' relay passes.

* :class:`Relay`: publishes rows over one connection with a window of outstanding confirms,
  and deletes the confirmed ones. The writer's background publisher
  (:mod:`events_celery.bus.publish.background`) and every relay pass use one.
* :func:`relay_pass`: claims rows whose lease ran out (their writer died, or gave them back)
  and publishes them. The :class:`Sweeper` thread of every Celery worker of a publishing
  service runs it, and so does ``manage.py relay_events``.

Delivery is at least once: a relay that dies between the broker's confirm and the delete
leaves rows that another relay publishes again, under the same event id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import attrs
from django.db import DatabaseError, connections

from events_celery.bus.broker import topology
from events_celery.bus.broker.backoff import MIN_PAUSE, publish_pause
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outcome, Outgoing
from events_celery.bus.broker.connection import bus_connection
from events_celery.bus.publish import outbox
from events_celery.bus.publish.outbox import Row
from events_celery.conf import BusSettings, bus_settings

logger = logging.getLogger(__name__)

#: Shortest pause of a relay between two failed tries, whatever the retry policy says.

#: Seconds a relay waits for a broker that blocks publishers before it gives up on the batch
#: (renewing its rows' leases meanwhile).
BLOCKED_PATIENCE = 600.0


class Relay:
    """Publishes rows over one connection, then deletes the confirmed ones."""

    def __init__(
        self, settings: BusSettings, *, holding: Callable[[], list[Row]] | None = None
    ) -> None:
        """Publish over a new connection (opened on first use).

        Args:
            settings: the settings.
            holding: the rows this relay holds besides those it is publishing (published,
                not deleted yet); their leases are renewed with the others while it waits.
        """
        self.settings = settings
        self._holding = holding
        self._publishing: Sequence[Row] = ()
        # A broker that blocks publishers holds what it was sent and confirms it once it lets
        # go: sending the rows again on a new connection would deliver them twice. So the
        # relay waits (up to BLOCKED_PATIENCE), renewing its rows' leases meanwhile, so that no
        # sweeper takes them.
        self.publisher = ConfirmingPublisher(
            bus_connection(settings, confirm_publish=False),
            window=settings.publish_window,
            blocked_patience=BLOCKED_PATIENCE,
            on_wait=self._renew,
            wait_interval=settings.outbox_lease / 4,
        )

    def _renew(self) -> None:
        rows = [*self._publishing, *(self._holding() if self._holding else ())]
        try:
            outbox.renew(self.settings, rows)
        except DatabaseError:
            logger.exception("could not renew the lease of %d outbox row(s)", len(rows))

    def close(self) -> None:
        """Drop the broker connection."""
        self.publisher.close()

    def publish(self, rows: Sequence[Row], *, delete: bool = True) -> Outcome:
        """Publish ``rows`` in order, delete those the broker confirmed, and say what happened.

        Args:
            rows: the rows, in the order to publish them.
            delete: delete the confirmed rows now (the background publisher deletes later).

        Raises:
            django.db.DatabaseError: the confirmed rows could not be deleted (they will be
                published again: at least once).
        """
        settings = self.settings
        prefix = settings.topic_prefix
        self._publishing = rows
        outcome = self.publisher.publish(
            (
                Outgoing(
                    key=row.id,
                    exchange=topology.exchange_name(prefix, row.topic),
                    routing_key=row.event_type,
                    message=row.message,
                    declare=topology.topic_topology(settings, row.topic),
                )
                for row in rows
            ),
            timeout=settings.publish_timeout + 0.002 * len(rows),
        )
        self._publishing = ()
        if outcome.confirmed and delete:
            outbox.delete(settings, outcome.confirmed)
        if outcome.refused:
            for pk, reason in outcome.refused.items():
                logger.error("the broker refused outbox row %s: %s", pk, reason)
        return outcome


@attrs.frozen
class RelayPass:
    """What one :func:`relay_pass` did: rows published, and what stopped it, if anything."""

    published: int
    error: BaseException | None = None


def relay_pass(settings: BusSettings, *, include_refused: bool = False) -> RelayPass:
    """Publish every row whose lease has run out, batch by batch.

    Stops at the first batch the broker did not take (the rows go back to the table, to be
    tried again after a pause).
    """
    relay = Relay(settings)
    published = 0
    try:
        while True:
            rows = outbox.claim(
                settings, limit=settings.outbox_batch_size, include_refused=include_refused
            )
            if not rows:
                return RelayPass(published)
            outcome = relay.publish(rows)
            published += len(outcome.confirmed)
            retry = [*outcome.unknown, *outcome.unsent]
            if retry:
                outbox.release(
                    settings,
                    retry,
                    retry_in=publish_pause(settings.publish_retry_policy, 1, at_least=MIN_PAUSE),
                    refused={},
                )
            if outcome.refused:
                # Refused rows wait a lease before any relay tries them again, as the
                # background publisher's do; this pass goes on with other rows only.
                outbox.release(
                    settings,
                    list(outcome.refused),
                    retry_in=settings.outbox_lease,
                    refused=outcome.refused,
                )
            if outcome.error is not None:
                logger.warning(
                    "relaying outbox rows stopped: %s: %s (%d row(s) wait)",
                    type(outcome.error).__name__,
                    outcome.error,
                    len(retry),
                )
                return RelayPass(published, outcome.error)
            if len(rows) < settings.outbox_batch_size:
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
        """Stop after the current pass."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        last_warning = 0.0
        while not self._stop.is_set():
            settings = bus_settings()
            try:
                relay_pass(settings)
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
