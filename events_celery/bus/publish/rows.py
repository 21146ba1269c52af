"""Publishing outbox rows: what the background publisher and the relay both do with them.

:class:`RowPublisher` publishes rows over one connection with a window of outstanding
confirms, and keeps their leases while a broker that blocks publishers holds them. Deleting
the confirmed rows is its caller's: the relay (:mod:`.relay`) deletes them at once, the
writer's background publisher (:mod:`.background`) in batches a little later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from django.db import DatabaseError, connections

from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outcome, Outgoing
from events_celery.bus.broker.connection import bus_connection
from events_celery.bus.publish import claims
from events_celery.bus.publish.outbox import Row
from events_celery.conf import BusSettings

logger = logging.getLogger(__name__)

#: Seconds a publisher of rows waits for a broker that blocks publishers before it gives up on
#: the batch (renewing its rows' leases meanwhile).
BLOCKED_PATIENCE = 600.0


class RowPublisher:
    """Publishes outbox rows over one connection, with a window of outstanding confirms."""

    def __init__(
        self,
        settings: BusSettings,
        *,
        holding: Callable[[], list[Row]] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Publish over a new connection (opened on first use).

        Args:
            settings: the settings.
            holding: the rows its owner holds besides those it is publishing (published,
                not deleted yet); their leases are renewed with the others while it waits.
            stop: set by its owner to end a wait for the broker at once (SIGTERM, a worker
                shutting down); the batch then fails, and its rows wait for another try.
        """
        self.settings = settings
        self._holding = holding
        self._publishing: Sequence[Row] = ()
        # A broker that blocks publishers holds what it was sent and confirms it once it lets
        # go: sending the rows again on a new connection would deliver them twice. So it
        # waits (up to BLOCKED_PATIENCE), renewing its rows' leases meanwhile, so that no
        # sweeper takes them.
        self.publisher = ConfirmingPublisher(
            bus_connection(settings, confirm_publish=False),
            window=settings.publish_window,
            blocked_patience=BLOCKED_PATIENCE,
            on_wait=self._renew,
            wait_interval=settings.outbox_lease / 4,
            stop=stop,
        )

    def _renew(self) -> None:
        rows = [*self._publishing, *(self._holding() if self._holding else ())]
        try:
            claims.renew(self.settings, rows)
        except DatabaseError:
            logger.exception("could not renew the lease of %d outbox row(s)", len(rows))

    def close(self) -> None:
        """Drop the broker connection."""
        self.publisher.close()

    def publish(self, rows: Sequence[Row]) -> Outcome:
        """Publish ``rows`` in order and say what became of each; deleting is the caller's.

        The relay deletes the confirmed rows at once; the background publisher a little later,
        in batches. Rows of one ordering key go out in the order given, and none is confirmed
        ahead of an earlier one of its key that was not (see
        :func:`~events_celery.bus.broker.confirms.keep_key_order`): ``outcome.blocked`` are rows
        that wait for an earlier one the broker refused.
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
                    ordering_key=row.ordering_key,
                )
                for row in rows
            ),
            timeout=settings.publish_timeout + 0.002 * len(rows),
        )
        self._publishing = ()
        if outcome.refused:
            for pk, reason in outcome.refused.items():
                logger.error("the broker refused outbox row %s: %s", pk, reason)
        if outcome.forbidden:
            by_id = {row.id: row for row in rows}
            for pk, reason in outcome.forbidden.items():
                logger.error(
                    "the broker refused event %s (%s, outbox row %s) for permissions; the row "
                    "is set aside until manage.py relay_events --retry-refused: %s",
                    by_id[pk].event_id,
                    by_id[pk].event_type,
                    pk,
                    reason,
                )
        return outcome

    def set_aside(self, outcome: Outcome) -> None:
        """Set aside the rows of ``outcome`` the broker refused for permissions."""
        if not outcome.forbidden:
            return
        try:
            claims.set_aside(self.settings, outcome.forbidden)
        except DatabaseError:
            # They keep their lease, and are tried (and set aside) again once it runs out.
            connections[self.settings.db_alias].close()
            logger.exception(
                "could not set aside outbox rows %s, which the broker refused for permissions",
                sorted(outcome.forbidden),
            )
