"""The ordered consumer: events of one key run in the order they were published.

A subscription with ``order_by_key`` (``EVENT_BUS_CONSUMER_CONFIG``) is consumed here, by a
worker bootstep that :func:`events_celery.bus.worker.install` adds beside the unordered one,
so ``celery -A proj worker`` is still all it takes. Its path (``docs/decisions/0010-...``):

1. **Intake.** The queue ``<service>.<topic>.ordered`` holds the topic's events in the order
   they reached the broker. It has a single active consumer: one worker of the service routes
   it, the others stand by. The router checks each message (a poison one is dead-lettered),
   and republishes it to the partition of its key (:func:`~.keys.partition_of`) on one
   channel with publisher confirms, then acknowledges it. An event without a key has no order
   to keep: it goes to the unordered receiver tasks.
2. **Partitions.** Each partition queue has a single active consumer too. Every worker
   registers on every partition, so each is a standby for the others; a worker that holds more
   than its share (partitions ÷ workers, counted through a presence queue) hands partitions on:
   it lets their running events finish, then closes their channel (never ``basic.cancel``,
   which lets the next consumer start before the earlier messages are back) and registers
   again, last in line. Closing a channel, or a worker dying, returns its unacknowledged
   messages in their order to the next consumer.
3. **Keys.** Inside the worker, :class:`~.keys.KeyQueues` starts an event in the pool when
   the event before it of its key is finished. A failing receiver is retried in the worker
   after its backoff, with the message unacknowledged, so the key waits and other keys go on.
   After its last attempt the event is dead-lettered and acknowledged, and the key goes on
   (``when_exhausted: "continue"``) or holds its later events as dead letters
   (``"stop"``).

Receivers run in the worker's pool (prefork or solo). This module holds the bootstep; a
subscription is :mod:`.ordered_topic`, its router :mod:`.router`, a partition
:mod:`.partition`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from typing import Any

import attrs
from celery import bootsteps

from events_celery.bus.broker import declaring
from events_celery.bus.consume.in_order import Result, give_up, run_in_order
from events_celery.bus.consume.keys import Entry, Recent
from events_celery.bus.consume.ordered_topic import OrderedTopic
from events_celery.bus.consume.partition import Partition
from events_celery.bus.consume.returns import Returned
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds between two counts of the workers (and hand-overs of partitions past a share).
REBALANCE_EVERY = 2.0

#: Most events one pool job runs one after the other (of different keys).
MAX_BATCH = 16

#: Seconds a stopping worker waits for its running ordered events to finish.
FINISH_WITHIN = 30.0

#: Pools whose results come back on the worker's event loop, where acknowledgements are sent.
ORDERED_POOLS = ("prefork", "solo")


class OrderedConsumerStep(bootsteps.StartStopStep):
    """Consumes this service's ordered subscriptions (see the module's docstring)."""

    name = "events_celery.OrderedConsumerStep"
    requires = ("celery.worker.consumer:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.app = parent.app
        self.topics: list[OrderedTopic] = []
        #: Events running in the pool, by (topic, key), whoever started them: after a
        #: reconnection, a key waits until its run from before is finished.
        self.running: Counter[tuple[str, str]] = Counter()
        self.recent = Recent()
        #: The pool takes work (see :meth:`start`).
        self.ready = False
        #: Events whose turn it is, waiting for a pool process (see :meth:`submit`).
        self.ready_to_run: deque[Run] = deque()
        #: The pool's jobs not finished yet, and their events.
        self.jobs: dict[int, tuple[Any, list[Run]]] = {}
        self._job_ids = itertools.count()
        self.in_pool = 0
        self.slots = 1
        self._rebalance: Any = None
        self.connection: Any = None
        self.timer: Any = None
        self.pool: Any = None

    def start(self, c: Any) -> None:
        """Open the intake, partition and presence consumers of every ordered subscription."""
        settings = bus_settings()
        subscriptions = [s for s in settings.subscriptions if s.order_by_key]
        if not subscriptions:
            return
        pool = type(c.pool).__module__.rpartition(".")[2]
        if pool not in ORDERED_POOLS:
            raise ConfigurationError(
                f"EVENT_BUS_CONSUMER_CONFIG orders {subscriptions[0].topic!r} by key, which needs "
                f"the prefork or solo pool; this worker runs the {pool!r} pool: start it with "
                "--pool prefork (the default) or --pool solo"
            )
        self.connection, self.timer, self.pool = c.connection, c.timer, c.pool
        self.slots = max(int(getattr(c.pool, "num_processes", 1) or 1), 1)
        self.ready = False
        for old in self.topics:  # from before a reconnection: their channels are gone
            old.router.publisher.close()
        self._forget_flushed()
        declaring.declare_consumer(c.connection, settings, self.app.conf.task_queue_max_priority)
        self.topics = [OrderedTopic(self, settings, s) for s in subscriptions]
        for topic in self.topics:
            topic.open()
        self._rebalance = c.timer.call_repeatedly(REBALANCE_EVERY, self.rebalance)
        # The pool takes work once the worker's event loop runs (the timer's first tick);
        # events that arrive before wait in their key queues.
        c.timer.call_after(0.0, self._go)

    def _go(self) -> None:
        self.ready = True
        self._feed()
        for topic in self.topics:
            for partition in topic.partitions:
                partition.keys.paused = False
                for key in partition.keys.pending_keys():
                    partition.keys.kick(key)

    def stop(self, c: Any) -> None:
        """Start nothing more; running events finish and are acknowledged while the pool stops.

        The channels stay open until :meth:`shutdown` (a warm shutdown stops the pool in
        between, and its results are acknowledged on them); after a lost connection they are
        gone anyway, and their messages back on the broker.
        """
        self.ready = False
        self._finish_running(c)
        if self._rebalance is not None:
            self._rebalance.cancel()
            self._rebalance = None
        # Events waiting for a pool process never start: their messages go back.
        while self.ready_to_run:
            self._forget(self.ready_to_run.popleft())
        for topic in self.topics:
            topic.pause()

    def write(self, frames: bytes) -> None:
        """Send frames (acknowledgements) on the worker's connection, in one system call."""
        if not frames:
            return
        try:
            self.connection.connection.transport.write(frames)
        except Exception as exc:  # the connection is gone: the broker delivers them again
            logger.warning("could not acknowledge finished events (%s); they may run again", exc)

    def _finish_running(self, c: Any) -> None:
        """Let the events running in the pool finish, and acknowledge them, before stopping.

        The worker's event loop has stopped when its consumer does; the pool's results (and
        the acknowledgements they lead to) are read by running it here a little longer, for
        at most ``FINISH_WITHIN`` seconds. What is not finished by then goes back to the broker
        and runs again.
        """
        hub = getattr(c, "hub", None)
        if hub is None or not self.in_pool or c.connection is None:
            return
        started = time.monotonic()
        deadline = time.monotonic() + FINISH_WITHIN
        try:
            # Celery flushes the pool as it closes the consumer: the jobs no process took yet
            # are dropped without a result (their events go back with the channel).
            self._forget_flushed()
            while self.in_pool and time.monotonic() < deadline:
                hub.run_once()
                self._forget_flushed()
        except Exception as exc:  # the connection is gone: the broker has them back anyway
            logger.warning("stopped waiting for %d running event(s): %s", self.in_pool, exc)
            return
        logger.info(
            "events_celery: ordered events finished and acknowledged in %.1fs (%d not)",
            time.monotonic() - started,
            self.in_pool,
        )

    def shutdown(self, c: Any) -> None:
        """Close every channel: what was not finished goes back to the broker, in order."""
        for topic in self.topics:
            topic.close()
        self.topics = []

    def rebalance(self) -> None:
        """Hand on partitions past this worker's share (called every few seconds)."""
        for topic in self.topics:
            try:
                topic.rebalance()
            except Exception:  # the broker went away: the consumer reconnects
                logger.exception("counting the workers of %s failed", topic.subscription.topic)

    def submit(self, topic: OrderedTopic, partition: Partition, entry: Entry) -> None:
        """Queue ``entry`` for the pool; its result comes back to :meth:`Partition.done`.

        Events whose turn it is wait here in the order they became ready. Each pool job runs
        a few of them (of different keys) one after the other, so the cost of a job is shared
        under load; the pool holds at most one job per process, so a warm shutdown has few to
        finish.
        """
        key = (topic.subscription.topic, entry.key)
        self.running[key] += 1
        partition.running += 1
        self.ready_to_run.append(Run(topic, partition, entry))
        self._feed()

    def _feed(self) -> None:
        # One job per pool process: Celery hands a job to an idle process only, which takes it
        # at once. A job queued behind a busy process would be dropped from the pool's books
        # when Celery flushes the pool at shutdown, yet still run, with no result to
        # acknowledge its events by: they would run again.
        while self.ready and self.ready_to_run and self.in_pool < self.slots:
            # Share what waits between the processes; an event that crashed a process runs
            # alone, so that only its own runs count its crashes.
            size = min(MAX_BATCH, max(1, len(self.ready_to_run) // self.slots))
            batch = [self.ready_to_run.popleft()]
            while len(batch) < size and self.ready_to_run and not batch[0].entry.crashes:
                if self.ready_to_run[0].entry.crashes:
                    break
                batch.append(self.ready_to_run.popleft())
            self._dispatch(batch)

    def _dispatch(self, batch: list[Run]) -> None:
        job_id = next(self._job_ids)

        def settle(results: list[Result] | None) -> None:
            if self.jobs.pop(job_id, None) is None:
                return  # forgotten (see _forget_flushed), or settled already
            self.in_pool -= 1
            for n, run in enumerate(batch):
                self._forget(run)
                if results is None:
                    run.partition.crashed(run.entry)
                else:
                    run.partition.done(run.entry, results[n])
            # The acknowledgements of the whole job, in one write.
            self.write(
                b"".join(
                    partition.ack_frames()
                    for partition in {id(run.partition): run.partition for run in batch}.values()
                )
            )
            for run in batch:
                self.kick(run.topic.subscription.topic, run.entry.key)
            self._feed()

        self.in_pool += 1
        self.jobs[job_id] = (None, batch)
        returned = [r.entry for r in batch if r.entry.returned == Returned.START]
        job = self.pool.apply_async(
            run_in_order,
            args=(
                [
                    (r.entry.item, r.entry.receivers, r.entry.attempts, r.entry.returned)
                    for r in batch
                ],
                batch[0].topic.subscription.when_exhausted == "stop",
            ),
            callback=settle,
            error_callback=lambda *_: settle(None),
        )
        for entry in returned:  # the job counts their start: their next runs here do not
            entry.returned = Returned.COUNTED
        if job_id in self.jobs:  # not run already (the solo pool runs it inline)
            self.jobs[job_id] = (job, batch)

    def _forget(self, run: Run) -> None:
        key = (run.topic.subscription.topic, run.entry.key)
        self.running[key] -= 1
        if not self.running[key]:
            del self.running[key]
        run.partition.running -= 1

    def _forget_flushed(self) -> None:
        """Follow the jobs Celery flushed out of the pool (at shutdown, or on a lost connection).

        Celery's flush drops from billiard's cache of jobs every job no process has
        acknowledged yet, and that job then never calls back. One that never reached a process
        does not run: it is forgotten here, and its messages go back. One already written to a
        process runs all the same: it is put back in the cache, so that its result comes back
        here and its events are acknowledged (or, after a lost connection, its keys wait for
        it), instead of running twice.
        """
        for job_id, (job, batch) in list(self.jobs.items()):
            cache = getattr(job, "_cache", None)
            if cache is None or getattr(job, "_job", None) in cache:
                continue
            process = getattr(job, "_write_to", None)
            if process is not None and process._is_alive():
                cache[job._job] = job
                continue
            del self.jobs[job_id]
            self.in_pool -= 1
            for run in batch:
                self._forget(run)

    def kick(self, topic: str, key: str) -> None:
        """A run of ``key`` finished: its next event may start, in this worker's current topic."""
        for current in self.topics:
            if current.subscription.topic == topic:
                current.kick(key)

    def dead_letter_crashed(
        self, partition: Partition, entry: Entry, settings: BusSettings
    ) -> None:
        """Dead-letter an event whose runs kept killing pool processes (in the pool too).

        If neither the dead-letter store nor the broker's dead-letter queue takes it, its
        message is rejected to the partition queue's dead-letter exchange.
        """
        finished = False

        def finish(dead_lettered: bool) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            if dead_lettered:
                partition.settle(entry.message)
            else:
                partition.acks.reject(entry.message)

        self.pool.apply_async(
            give_up,
            args=(entry.item, entry.crashes, settings.max_redeliveries),
            callback=lambda *_: finish(True),
            error_callback=lambda *_: finish(False),
        )


@attrs.frozen
class Run:
    """An event whose turn it is, with where it came from."""

    topic: OrderedTopic
    partition: Partition
    entry: Entry
