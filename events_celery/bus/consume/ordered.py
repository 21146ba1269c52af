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

Receivers run in the worker's pool (prefork or solo).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import attrs
from celery import bootsteps
from kombu import Consumer, Queue
from kombu.message import Message

from events_celery.bus import hooks
from events_celery.bus.broker import topology
from events_celery.bus.broker.confirms import ConfirmingPublisher, Outcome, Outgoing
from events_celery.bus.broker.connection import bus_connection, is_amqp, raw_body
from events_celery.bus.broker.frames import ack_frame
from events_celery.bus.consume.handoff import Envelope, deliver_later, envelope
from events_celery.bus.consume.in_order import Result, give_up, run_in_order
from events_celery.bus.consume.keys import Acks, Entry, KeyQueues, Recent, partition_of
from events_celery.bus.consume.step import dead_letter_poison, origin, poison_reason
from events_celery.conf import BusSettings, Subscription, bus_settings
from events_celery.exceptions import ConfigurationError, PublishError
from events_celery.wire import (
    HEADER_ID,
    HEADER_PARTITION_KEY,
    HEADER_TYPE,
    HEADER_USER_ID,
    OutgoingMessage,
    plain_headers,
)

logger = logging.getLogger(__name__)

#: Seconds between two counts of the workers (and hand-overs of partitions past a share).
REBALANCE_EVERY = 2.0

#: Unacknowledged messages a worker takes from each partition it holds: the events its pool
#: chooses from. A key that waits (a retry) keeps its events in this window.
PARTITION_PREFETCH = 64

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
        topology.declare_consumer(c.connection, settings, self.app.conf.task_queue_max_priority)
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
        under load; the pool holds at most two jobs per process, so a warm shutdown has few to
        finish.
        """
        key = (topic.subscription.topic, entry.key)
        self.running[key] += 1
        partition.running += 1
        self.ready_to_run.append(Run(topic, partition, entry))
        self._feed()

    def _feed(self) -> None:
        while (
            self.ready
            and self.ready_to_run
            and (
                self.in_pool < self.slots
                # A second job per process only once a full one waits: under load the events
                # that wait meanwhile make the next jobs larger, and each job's cost is shared.
                or (self.in_pool < 2 * self.slots and len(self.ready_to_run) >= MAX_BATCH)
            )
        ):
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
        job = self.pool.apply_async(
            run_in_order,
            args=(
                [(r.entry.item, r.entry.receivers, r.entry.attempts) for r in batch],
                batch[0].topic.subscription.when_exhausted == "stop",
            ),
            callback=settle,
            error_callback=lambda *_: settle(None),
        )
        if job_id in self.jobs:  # not run already (the solo pool runs it inline)
            self.jobs[job_id] = (job, batch)

    def _forget(self, run: Run) -> None:
        key = (run.topic.subscription.topic, run.entry.key)
        self.running[key] -= 1
        if not self.running[key]:
            del self.running[key]
        run.partition.running -= 1

    def _forget_flushed(self) -> None:
        """Forget the jobs a lost connection took out of the pool before they started.

        On a lost connection Celery flushes the prefork pool: jobs no process took yet are
        dropped (their messages come back from the broker) and never call back. Left counted,
        their keys would wait for them for ever. billiard keeps a job in its pool's cache
        until its result comes back, so a job gone from the cache without a result was dropped.
        """
        for job_id, (job, batch) in list(self.jobs.items()):
            cache = getattr(job, "_cache", None)
            if cache is not None and getattr(job, "_job", None) not in cache:
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
        """Dead-letter an event whose runs kept killing pool processes (in the pool too)."""
        finished = False

        def settle(*_: Any) -> None:
            nonlocal finished
            if not finished:
                finished = True
                partition.settle(entry.message)

        self.pool.apply_async(
            give_up,
            args=(entry.item, entry.crashes, settings.max_redeliveries),
            callback=settle,
            error_callback=settle,
        )


@attrs.frozen
class Run:
    """An event whose turn it is, with where it came from."""

    topic: OrderedTopic
    partition: Partition
    entry: Entry


class OrderedTopic:
    """One ordered subscription in one worker: its router and its partitions."""

    def __init__(
        self, step: OrderedConsumerStep, settings: BusSettings, subscription: Subscription
    ):
        self.step = step
        self.settings = settings
        self.subscription = subscription
        service = settings.require_service_name()
        self.exchange = topology.exchange_name(settings.topic_prefix, subscription.topic)
        queues = topology.partition_queues(service, subscription, settings.queue_type)
        self.partitions = [Partition(self, n, queue) for n, queue in enumerate(queues)]
        self.router = Router(
            self,
            topology.intake_queue(
                service, settings.topic_prefix, subscription, settings.queue_type
            ),
            topology.Topology((topology.partition_exchange(service, subscription.topic),), queues),
        )
        self.presence = topology.presence_queue(service, subscription.topic)
        self._presence_channel: Any = None

    def open(self) -> None:
        """Register on the intake, every partition and the presence queue."""
        self._presence_channel = self.step.connection.channel()
        self.presence.bind(self._presence_channel).declare()
        Consumer(
            self._presence_channel, queues=[self.presence], no_ack=True, auto_declare=False
        ).consume()
        self.router.open()
        for partition in self.partitions:
            partition.open()
        logger.info(
            "events_celery: ordered by key: %s (%d partitions, %s)",
            self.router.queue.name,
            len(self.partitions),
            self.subscription.when_exhausted,
        )

    def pause(self) -> None:
        self.router.pause()
        for partition in self.partitions:
            partition.keys.paused = True
            partition.cancel_timers()

    def close(self) -> None:
        for channel in (self._presence_channel, self.router.channel):
            _close(channel)
        for partition in self.partitions:
            partition.flush_acks()
            _close(partition.channel)

    def kick(self, key: str) -> None:
        """A run of ``key`` finished: its next event may start, whichever partition holds it."""
        self.partitions[partition_of(key, len(self.partitions))].keys.kick(key)

    def workers(self) -> int:
        """How many workers consume this subscription (its presence queue's consumers)."""
        _, _, consumers = self._presence_channel.queue_declare(self.presence.name, passive=True)
        return max(int(consumers), 1)

    def rebalance(self) -> None:
        """Hand on the partitions past this worker's share, those with the least work first."""
        share = math.ceil(len(self.partitions) / self.workers())
        held = [p for p in self.partitions if p.active and not p.releasing]
        for partition in sorted(held, key=lambda p: (len(p.keys), -p.number))[: len(held) - share]:
            partition.release()


class Router:
    """Routes the intake queue's events to the partitions of their keys (when this worker is
    the intake's active consumer)."""

    def __init__(self, topic: OrderedTopic, queue: Queue, partitions: topology.Topology) -> None:
        self.topic = topic
        self.queue = queue
        self.declare = partitions
        self.channel: Any = None
        self.publisher = ConfirmingPublisher(
            bus_connection(topic.settings, confirm_publish=False),
            window=topic.settings.publish_window,
        )
        self._batch: list[tuple[Message, Outgoing]] = []
        self._flush_entry: Any = None
        self._failures = 0  # routing failures in a row (see _reopen)
        self.multiple_acks = True
        self.paused = False

    def open(self) -> None:
        self.paused = False
        self.multiple_acks = is_amqp(self.topic.step.connection)
        self.channel = self.topic.step.connection.channel()
        self.channel.basic_qos(0, self.topic.settings.consumer_batch_size * 2, False)
        Consumer(
            self.channel, queues=[self.queue], on_message=self.on_message, auto_declare=False
        ).consume()

    def pause(self) -> None:
        self.paused = True
        self._cancel_flush()
        self._batch = []  # unacknowledged: back to the intake, in order, with the channel

    def on_message(self, message: Message) -> None:
        """Check an event and queue it for the partition of its key."""
        if self.paused:
            return
        topic, settings = self.topic, self.topic.settings
        body = raw_body(message)
        routing_key = message.delivery_info.get("routing_key")
        reason = poison_reason(settings, message, body)
        if reason is not None:
            dead_letter_poison(settings, message, reason)
            return
        hooks.consumed(settings, topic.subscription.topic, str(routing_key))
        headers = plain_headers(message.headers)
        key = headers.get(HEADER_PARTITION_KEY)
        if key is None:
            user_id = message.properties.get("user_id")
            self._unordered(
                message, envelope(headers, body, origin=origin(message), user_id=user_id)
            )
            return
        number = partition_of(str(key), len(topic.partitions))
        partition = topic.partitions[number]
        outgoing = Outgoing(
            len(self._batch),
            partition.queue.exchange.name,
            partition.queue.routing_key,
            OutgoingMessage(body, *_forwarded(headers, message)),
            self.declare,
        )
        self._batch.append((message, outgoing))
        if len(self._batch) >= settings.consumer_batch_size:
            self.flush()
        elif self._flush_entry is None:
            self._flush_entry = topic.step.timer.call_after(
                settings.consumer_flush_interval, self.flush
            )

    def flush(self) -> None:
        """Publish the batch to the partitions; acknowledge what the broker confirmed in order."""
        self._cancel_flush()
        batch, self._batch = self._batch, []
        if not batch or self.paused:
            return
        outcome = self.publisher.publish(
            [outgoing for _, outgoing in batch], timeout=self.topic.settings.publish_timeout
        )
        if acknowledge_routed(batch, outcome, self.queue.name, multiple=self.multiple_acks):
            self._failures = 0
            return
        self._reopen()

    def _unordered(self, message: Message, item: Envelope) -> None:
        # An event without a key keeps no order (as a Kafka record without a key): the
        # unordered receiver tasks run it.
        try:
            deliver_later(self.topic.step.app, self.topic.settings, [item])
        except PublishError:
            logger.exception("handing an event without a key to the receiver tasks failed")
            self._reopen()
            return
        message.ack()

    def _reopen(self) -> None:
        """Give the intake's events back (in order) and register again after a backoff."""
        _close(self.channel)
        self.channel = None
        self._failures += 1
        pause = min(2.0 ** (self._failures - 1) * 0.5, 30.0)
        logger.warning("routing %s again in %.1fs", self.queue.name, pause)
        self.topic.step.timer.call_after(pause, self._open_unless_paused)

    def _open_unless_paused(self) -> None:
        if not self.paused and self.channel is None:
            self.open()

    def _cancel_flush(self) -> None:
        if self._flush_entry is not None:
            self._flush_entry.cancel()
            self._flush_entry = None


class Partition:
    """One partition queue in one worker: its key queues, while this worker holds it."""

    def __init__(self, topic: OrderedTopic, number: int, queue: Queue) -> None:
        self.topic = topic
        self.number = number
        self.queue = queue
        self.channel: Any = None
        self.running = 0
        #: It delivered an event since this worker registered: this worker is its active one.
        self.active = False
        self.releasing = False
        self.keys = KeyQueues(self._start, self._busy)
        self.acks = Acks()

    def open(self) -> None:
        """Register on the partition queue (last in line when others are registered)."""
        self.active = self.releasing = False
        self.keys = KeyQueues(self._start, self._busy)
        self.keys.paused = not self.topic.step.ready
        self.channel = self.topic.step.connection.channel()
        self.acks = Acks(multiple=is_amqp(self.topic.step.connection))
        self.channel.basic_qos(0, PARTITION_PREFETCH, False)
        Consumer(
            self.channel, queues=[self.queue], on_message=self.on_message, auto_declare=False
        ).consume()

    def on_message(self, message: Message) -> None:
        """Line an event up behind the earlier events of its key."""
        if self.releasing or (self.keys.paused and self.topic.step.ready):
            return  # stopping: it stays unacknowledged, and goes back to the queue
        self.active = True
        self.acks.delivered(message)
        headers = plain_headers(message.headers)
        event_id = str(headers.get(HEADER_ID))
        if event_id in self.topic.step.recent:
            # A copy of an event this worker finished (the router published it twice).
            self.settle(message)
            return
        user_id = headers.pop(HEADER_USER_ID, None)  # set by the router (see _forwarded)
        item = envelope(
            headers,
            raw_body(message),
            origin=f"{self.topic.exchange}/{headers.get(HEADER_TYPE)}",
            user_id=user_id,
        )
        self.keys.add(Entry(str(headers.get(HEADER_PARTITION_KEY)), event_id, message, item))

    def settle(self, message: Message) -> None:
        """Acknowledge ``message`` now."""
        self.acks.settle(message)
        self.flush_acks()

    def flush_acks(self) -> None:
        """Send the acknowledgements of the events finished so far."""
        self.topic.step.write(self.ack_frames())

    def ack_frames(self) -> bytes:
        """The frames of the acknowledgements due (sent here already on a virtual transport)."""
        try:
            if not self.acks.multiple:
                self.acks.flush()
                return b""
            if not self._channel_current():
                # Its channel is gone (a lost connection): the broker delivers them again, and
                # a frame for its number would reach another channel of the new connection.
                self.acks.due()
                return b""
            return b"".join(
                ack_frame(self.channel.channel_id, message.delivery_tag, multiple=multiple)
                for message, multiple in self.acks.due()
            )
        except Exception as exc:  # the channel is gone: the broker delivers them again
            logger.warning("could not acknowledge finished events (%s); they may run again", exc)
            return b""

    def _channel_current(self) -> bool:
        channel = self.channel
        connection = self.topic.step.connection
        return bool(
            channel is not None
            and channel.is_open
            and connection is not None
            and channel.connection is connection.connection
        )

    def _busy(self, key: str) -> bool:
        return self.releasing or (self.topic.subscription.topic, key) in self.topic.step.running

    def _start(self, entry: Entry) -> None:
        if entry.event_id in self.topic.step.recent and not entry.attempts:
            # A copy of an event this worker finished while this one waited behind it (the
            # router published it twice): running it now would put it after later events.
            self.settle(entry.message)
            self.keys.finish(entry)
            return
        self.topic.step.submit(self.topic, self, entry)

    def done(self, entry: Entry, result: Result) -> None:
        """An event's run came back: finished, or to run again after a backoff."""
        if result.get("again") and not self.keys.paused:
            entry.receivers = result["receivers"]
            entry.attempts = result["attempts"]
            entry.timer = self.topic.step.timer.call_after(
                float(result["retry_in"]), lambda: self._retry(entry)
            )
        elif result.get("reject"):
            self.acks.reject(entry.message)
            self.keys.finish(entry)
        elif not result.get("again"):
            self.acks.settle(entry.message)  # sent once the whole job is settled
            self.topic.step.recent.add(entry.event_id)
            self.keys.finish(entry)
        self._maybe_hand_on()

    def crashed(self, entry: Entry) -> None:
        """A pool process died running ``entry``: run it again, or dead-letter it past the limit."""
        entry.crashes += 1
        logger.error(
            "a pool process died running event %s (key %r), %d time(s)",
            entry.event_id,
            entry.key,
            entry.crashes,
        )
        if entry.crashes > self.topic.settings.max_redeliveries:
            self.keys.finish(entry)
            self.topic.step.dead_letter_crashed(self, entry, self.topic.settings)
        self._maybe_hand_on()

    def _retry(self, entry: Entry) -> None:
        entry.timer = None
        self.keys.kick(entry.key)

    def cancel_timers(self) -> None:
        for entry in self.keys:
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None

    def release(self) -> None:
        """Hand this partition on once its running events are finished."""
        logger.info("events_celery: handing %s on to another worker", self.queue.name)
        self.releasing = True
        self._maybe_hand_on()

    def _maybe_hand_on(self) -> None:
        if not self.releasing or self.running:
            return
        self.cancel_timers()
        self.keys.clear()
        self.flush_acks()  # the events finished last: acknowledged before the channel goes
        # Closing the channel (not basic.cancel) returns its unacknowledged messages to the
        # queue in their order before the next consumer gets any; then register again.
        _close(self.channel)
        self.open()


def acknowledge_routed(
    batch: Sequence[tuple[Message, Outgoing]], outcome: Outcome, queue: str, *, multiple: bool
) -> bool:
    """Acknowledge the intake messages of ``batch`` the broker confirmed, from its start on.

    Acknowledging past an unconfirmed event would let later events of its key overtake it:
    the caller gives the rest back to the intake (in order, by closing the channel). Returns
    whether the whole batch was confirmed. ``multiple``: one frame for the run, where the
    transport honours it.
    """
    confirmed = set(outcome.confirmed)
    done = 0
    while done < len(batch) and batch[done][1].key in confirmed:
        done += 1
    if done and multiple:
        batch[done - 1][0].ack(multiple=True)
    elif done:
        for message, _ in batch[:done]:
            message.ack()
    if done == len(batch):
        return True
    logger.warning(
        "routing %d event(s) of %s to their partitions was not confirmed (%s); they go back "
        "to the intake queue",
        len(batch) - done,
        queue,
        outcome.error or outcome.refused or "no answer",
    )
    return False


def _forwarded(headers: dict[str, Any], message: Message) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headers and properties of an event the router republishes to a partition.

    The broker checks ``user_id`` against the publishing user, here the router's: the user the
    event came from (checked by the router) travels in a header instead.
    """
    properties = dict(message.properties)
    properties.pop("application_headers", None)
    user_id = properties.pop("user_id", None)
    headers = {k: v for k, v in headers.items() if k != HEADER_USER_ID}
    if user_id is not None:
        headers[HEADER_USER_ID] = str(user_id)
    return headers, properties


def _close(channel: Any) -> None:
    if channel is None:
        return
    try:
        channel.close()
    except Exception as exc:
        logger.debug("closing a channel failed: %s", exc)
