"""One partition queue of an ordered subscription in one worker.

Every worker registers on every partition queue ``<service>.<topic>.ordered.<n>``; the broker
makes one of them its active consumer (see :mod:`.ordered`). That worker lines the events up
by key (:class:`~.keys.KeyQueues`), runs them in its pool, retries them in place, and hands
the partition on by closing its channel.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Queue
from kombu.message import Message

from events_celery.bus.broker.connection import is_amqp, raw_body
from events_celery.bus.broker.frames import ack_frame
from events_celery.bus.consume.handoff import envelope
from events_celery.bus.consume.in_order import Result
from events_celery.bus.consume.keys import Acks, Entry, KeyQueues
from events_celery.bus.consume.returns import Returned
from events_celery.wire import (
    HEADER_ID,
    HEADER_PARTITION_KEY,
    HEADER_TYPE,
    HEADER_USER_ID,
    plain_headers,
)

if TYPE_CHECKING:
    from events_celery.bus.consume.ordered_topic import OrderedTopic

logger = logging.getLogger(__name__)

#: Unacknowledged messages a worker takes from each partition it holds: the events its pool
#: chooses from. A key that waits (a retry) keeps its events in this window.
PARTITION_PREFETCH = 64


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
        entry = Entry(str(headers.get(HEADER_PARTITION_KEY)), event_id, message, item)
        if message.delivery_info.get("redelivered"):
            entry.returned = Returned.START  # counted when it starts (see .returns)
        self.keys.add(entry)

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

    def retrying(self) -> bool:
        """Whether one of its events waits for its next attempt."""
        return any(entry.timer is not None for entry in self.keys)

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
        close_channel(self.channel)
        self.open()


def close_channel(channel: Any) -> None:
    """Close ``channel`` if it is there; a failure (the connection is gone) is only logged."""
    if channel is None:
        return
    try:
        channel.close()
    except Exception as exc:
        logger.debug("closing a channel failed: %s", exc)
