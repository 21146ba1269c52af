"""The background publisher: each process publishes the outbox rows it wrote, at once.

``send_event`` in ``"outbox"`` mode hands the rows it wrote to :func:`background_publisher`
after the commit (``on_commit``). Its thread publishes them right away over one connection,
with a window of outstanding confirms (:class:`~events_celery.bus.publish.rows.RowPublisher`),
and deletes the confirmed rows in batches. While the broker is unreachable or blocks
publishers, it keeps the rows (renewing their lease) and retries with backoff; rows it cannot
keep, or still holds when the process dies, are published by a sweeper once their lease runs out
(:mod:`events_celery.bus.publish.relay`).

Rows of one ordering key (a topic's ``event_key_field``) leave this process in write order, on
one channel. Before a batch, it looks for earlier rows of the batch's keys that are not its
own (their writer died, a relay holds them, or the broker refused them): a key that has one is
left to the relays at once (its rows' leases end now), which publish it in order once the
earlier rows are gone. After a failure, a later row of the failed row's key is never confirmed
ahead of it: it is published again after it, or left to the relays behind a refused one.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

from django.db import DatabaseError, connections

from events_celery.bus.broker.backoff import MIN_PAUSE, publish_pause
from events_celery.bus.broker.confirms import Outcome
from events_celery.bus.broker.resources import PerProcess
from events_celery.bus.publish import claims
from events_celery.bus.publish.outbox import Row
from events_celery.bus.publish.rows import RowPublisher
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import BrokerTLSError

logger = logging.getLogger(__name__)

#: Rows a background publisher keeps in memory; past it, new rows wait for a sweeper.
MAX_HELD_ROWS = 50_000

#: Seconds published rows may wait to be deleted together (fewer, larger deletes). A crash in
#: that time publishes them again later: at least once.
DELETE_DELAY = 0.05


class BackgroundPublisher:
    """The publishing thread of one process; ``on_commit`` hands it the rows just written."""

    def __init__(self) -> None:
        self._rows: deque[Row] = deque()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False  # the thread holds a batch
        self._row_publisher: RowPublisher | None = None
        self._stopping = threading.Event()
        self._confirmed: list[Row] = []  # published, not yet deleted
        self._confirmed_since = 0.0
        self._delete_not_before = 0.0  # after a failed delete, a pause

    def submit(self, rows: Sequence[Row]) -> None:
        """Queue committed rows for publishing and wake the thread (never blocks on I/O)."""
        with self._condition:
            room = MAX_HELD_ROWS - len(self._rows)
            if room < len(rows):
                logger.warning(
                    "%d outbox row(s) wait for a sweeper: this process already holds %d that "
                    "the broker has not taken",
                    len(rows) - max(room, 0),
                    len(self._rows),
                )
                rows = rows[: max(room, 0)]
            self._rows.extend(rows)
            self._condition.notify_all()  # flush() may be waiting on it too
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="events_celery-publisher", daemon=True
                )
                self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until this process holds no row any more; whether that happened in time.

        Rows leave it published and deleted, or given up on: set aside after the broker
        refused them, beyond ``MAX_HELD_ROWS``, or taken by a sweeper after their lease.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._rows or self._busy or self._confirmed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread after its current batch; rows it still holds wait for a sweeper."""
        with self._condition:
            self._stopping.set()
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._row_publisher is not None:
            self._row_publisher.close()

    def _take(self, limit: int, timeout: float | None) -> list[Row]:
        # Rows to publish; [] when the thread stops, or after ``timeout`` without rows.
        with self._condition:
            self._busy = False  # the previous batch is done with
            if not self._rows and not self._stopping.is_set():
                self._condition.notify_all()
                self._condition.wait(timeout)
            if self._stopping.is_set() or not self._rows:
                return []
            self._busy = True
            count = min(limit, len(self._rows))
            return [self._rows.popleft() for _ in range(count)]

    def _give_back(self, rows: Sequence[Row]) -> None:
        with self._condition:
            self._rows.extendleft(reversed(rows))

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            settings = bus_settings()
            due = self._deletes_due_in()
            batch = self._take(settings.outbox_batch_size, due)
            due = self._deletes_due_in()
            if due == 0 or (
                due is not None
                and len(self._confirmed) >= settings.outbox_batch_size
                and time.monotonic() >= self._delete_not_before
            ):
                self._delete_confirmed(settings)
            if not batch:
                continue
            try:
                # The thread keeps its database connection (it is closed after an error): one
                # connection per batch would cost more than the batch.
                batch = self._keep_leased(settings, batch)
                batch = self._leave_held_keys(settings, batch)
                publisher = self._publisher_for(settings)
                outcome = publisher.publish(batch)
                publisher.set_aside(outcome)
            except Exception as exc:
                # Renewing the leases failed (the database is away), or a bug: the rows stay in
                # the table under this process's lease, and are tried again after a pause.
                logger.exception("the outbox publisher failed (%s); retrying", type(exc).__name__)
                connections[settings.db_alias].close()
                self._give_back(batch)
                failures += 1
                self._stopping.wait(_pause(settings, failures))
                continue
            if outcome.confirmed and not self._confirmed:
                self._confirmed_since = time.monotonic()
            by_id = {row.id: row for row in batch}
            self._confirmed += [by_id[key] for key in outcome.confirmed]
            if outcome.refused:
                self._release_refused(settings, outcome)
            if outcome.blocked:
                self._leave_to_relays(settings, outcome.blocked)
            again = sorted([*outcome.unknown, *outcome.unsent])
            if outcome.error is None:
                failures = 0
                self._give_back([by_id[k] for k in again])
                continue
            self._give_back([by_id[k] for k in again])
            failures += 1
            delay = _pause(settings, failures)
            logger.log(
                logging.ERROR if isinstance(outcome.error, BrokerTLSError) else logging.WARNING,
                "publishing %d outbox row(s) failed (%s: %s); retry %d in %.2fs",
                len(outcome.unknown) + len(outcome.unsent),
                type(outcome.error).__name__,
                outcome.error,
                failures,
                delay,
            )
            self._stopping.wait(delay)
        if self._confirmed:
            self._delete_confirmed(bus_settings())
        connections.close_all()
        with self._condition:
            self._busy = False
            self._condition.notify_all()

    def _deletes_due_in(self) -> float | None:
        # Seconds until the confirmed rows must be deleted; None when there are none.
        if not self._confirmed:
            return None
        when = max(self._confirmed_since + DELETE_DELAY, self._delete_not_before)
        return max(when - time.monotonic(), 0.0)

    def _delete_confirmed(self, settings: BusSettings) -> None:
        try:
            claims.delete(settings, [row.id for row in self._confirmed])
        except DatabaseError:
            # Kept for a later try, after a pause; if this process dies first, the rows are
            # published again once their lease runs out (at least once).
            logger.exception("could not delete %d published outbox row(s)", len(self._confirmed))
            connections[settings.db_alias].close()
            self._delete_not_before = time.monotonic() + _pause(settings, 1)
            return
        with self._condition:
            self._confirmed = []
            self._condition.notify_all()

    def _publisher_for(self, settings: BusSettings) -> RowPublisher:
        current = self._row_publisher
        if current is None or current.settings is not settings:
            if current is not None:
                current.close()
            current = self._row_publisher = RowPublisher(
                settings, holding=lambda: list(self._confirmed), stop=self._stopping
            )
        return current

    @staticmethod
    def _keep_leased(settings: BusSettings, rows: list[Row]) -> list[Row]:
        # A row whose lease might run out before this publish and its delete are done (it was
        # held a while: the broker was away) gets a new lease first, so that no sweeper takes
        # it meanwhile; a row another relay took already is left to that relay.
        publish = settings.publish_timeout + 0.002 * len(rows) + DELETE_DELAY
        stale_before = time.monotonic() - max(settings.outbox_lease - 2 * publish, 0.0)
        stale = [row for row in rows if row.leased_at <= stale_before]
        if not stale:
            return rows
        renewed = {row.id: row for row in claims.renew(settings, stale)}
        return [
            renewed.get(row.id, row)
            for row in rows
            if row.leased_at > stale_before or row.id in renewed
        ]

    def _leave_held_keys(self, settings: BusSettings, rows: list[Row]) -> list[Row]:
        # Rows of a key with an earlier row that is not this process's: left to the relays.
        # Raises DatabaseError like _keep_leased (the batch is then tried again).
        held = claims.held_elsewhere(settings, rows, self._confirmed)
        if not held:
            return rows
        self._leave_to_relays(settings, [row.id for row in held])
        left = {row.id for row in held}
        logger.info(
            "%d outbox row(s) left to the relays: an earlier row of their key is not this "
            "process's",
            len(left),
        )
        return [row for row in rows if row.id not in left]

    @staticmethod
    def _leave_to_relays(settings: BusSettings, ids: Sequence[int]) -> None:
        # Their lease ends now: a relay claims them, in order, once the rows before them are gone.
        # Should this fail, the lease runs out by itself.
        try:
            claims.release(settings, ids, retry_in=0.0, refused={})
        except DatabaseError:
            logger.exception("could not leave outbox rows %s to the relays", sorted(ids))

    @staticmethod
    def _release_refused(settings: BusSettings, outcome: Outcome) -> None:
        refused = outcome.refused
        try:
            claims.release(settings, refused, retry_in=settings.outbox_lease, refused=refused)
        except DatabaseError:
            logger.exception("could not record that the broker refused outbox rows %s", refused)


_publisher: PerProcess[BackgroundPublisher] = PerProcess(lambda: BackgroundPublisher())


def background_publisher() -> BackgroundPublisher:
    """The :class:`BackgroundPublisher` of this process (made on first use, anew after a fork)."""
    return _publisher.get()


def stop_background_publisher(timeout: float = 5.0) -> None:
    """Stop this process's background publisher (a new one starts on the next commit).

    Rows it had not published stay in the outbox table for a sweeper. Tests use it so that
    no thread outlives the test that started it.
    """
    current = _publisher.take()
    if current is not None:
        current.stop(timeout)


def _flush_at_exit() -> None:
    # A short-lived process (a management command) gets a moment to publish what it sent;
    # what is left waits in the table for a sweeper.
    current = _publisher.peek()
    if current is not None:
        current.flush(bus_settings().publish_timeout)


atexit.register(_flush_at_exit)


def _pause(settings: BusSettings, failures: int) -> float:
    return publish_pause(settings.publish_retry_policy, failures, at_least=MIN_PAUSE)
