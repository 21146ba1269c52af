"""One queue per key in a worker's memory: at most one event of a key runs at a time.

The ordered consumer (:mod:`.ordered`) takes events of many keys from a partition queue, in
the order they were published. :class:`KeyQueues` lines them up by key: the first event of
a key starts at once, each later one when the event before it is finished (run, or
dead-lettered). Other keys run in parallel. Plain Python, no broker.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from events_celery.bus.consume.returns import Returned


def partition_of(key: str, partitions: int) -> int:
    """The partition (``0`` to ``partitions - 1``) of a key: CRC-32 of its UTF-8 bytes, modulo.

    Any client can compute it: it decides which partition queue the key's events wait in.
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


@attrs.define(eq=False)
class Entry:
    """One event waiting or running in a key's queue.

    Attributes:
        key: its partition key.
        event_id: its event id (``ce_id``).
        message: the broker message, acknowledged once the event is finished.
        item: the event as the pool runs it.
        receivers: the receivers still to succeed (``None``: all of them).
        attempts: the attempt each of those is at.
        crashes: times a pool process died running it.
        timer: the pending retry, if one is scheduled.
        returned: whether its message came back, and whether its start was counted.
    """

    key: str
    event_id: str
    message: Any
    item: dict[str, Any]
    receivers: list[str] | None = None
    attempts: dict[str, int] = attrs.Factory(dict)
    crashes: int = 0
    timer: Any = None
    returned: Returned = Returned.NO


class KeyQueues:
    """Events of one partition, by key, in arrival order.

    ``start`` is called with an event when it may run: it is the first of its key, and
    ``busy(key)`` (events of this key still running from an earlier consumer, after a
    reconnection) is false.
    """

    def __init__(self, start: Callable[[Entry], None], busy: Callable[[str], bool]) -> None:
        self._start = start
        self._busy = busy
        self._keys: dict[str, deque[Entry]] = {}
        self.paused = False

    def __len__(self) -> int:
        return sum(len(q) for q in self._keys.values())

    def __iter__(self) -> Iterator[Entry]:
        for queue in self._keys.values():
            yield from queue

    def add(self, entry: Entry) -> None:
        """Queue an event; it starts now if it is the first of its key."""
        queue = self._keys.setdefault(entry.key, deque())
        queue.append(entry)
        if len(queue) == 1:
            self.kick(entry.key)

    def kick(self, key: str) -> None:
        """Start the first event of ``key`` if it may run now."""
        queue = self._keys.get(key)
        if queue and not self.paused and not self._busy(key) and queue[0].timer is None:
            self._start(queue[0])

    def finish(self, entry: Entry) -> None:
        """``entry`` is finished: drop it, and start the next event of its key."""
        queue = self._keys.get(entry.key)
        if not queue or queue[0] is not entry:
            return  # not this partition's any more (it was handed on)
        queue.popleft()
        if not queue:
            del self._keys[entry.key]
            return
        self.kick(entry.key)

    def pending_keys(self) -> list[str]:
        """Keys with events waiting or running."""
        return list(self._keys)

    def clear(self) -> list[Entry]:
        """Forget every event (they go back to the broker); returns them."""
        entries = list(self)
        self._keys.clear()
        return entries


class Recent:
    """Ids of the events finished lately, to skip a copy that comes again (bounded)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        """Remember ``event_id``; the oldest is forgotten past ``size``."""
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class Acks:
    """The acknowledgements one channel owes, in few frames.

    Messages are acknowledged once settled (finished, dead-lettered, or skipped), when
    :meth:`due` is asked: the run of settled ones at the head of the delivery order with one
    ``multiple`` acknowledgement, the others one by one, so a message waiting for a retry never
    holds back the acknowledgement of those after it. ``multiple`` is used only where the
    transport honours it (``multiple=False``: one acknowledgement per message).
    """

    def __init__(self, *, multiple: bool = True) -> None:
        self.multiple = multiple
        self._unsettled: dict[int, Any] = {}  # delivery tag -> message, in delivery order
        self._settled: list[Any] = []

    def delivered(self, message: Any) -> None:
        """Note a message the channel delivered."""
        self._unsettled[message.delivery_tag] = message

    def settle(self, message: Any) -> None:
        """Acknowledge ``message`` with the next :meth:`due`."""
        self._settled.append(message)

    def reject(self, message: Any) -> None:
        """Reject ``message`` now, without requeueing: the queue's dead-letter exchange takes it."""
        tag = message.delivery_tag
        if self._unsettled.get(tag) is message:
            del self._unsettled[tag]
        message.reject(requeue=False)

    def due(self) -> list[tuple[Any, bool]]:
        """The acknowledgements to send now: ``(message, multiple)`` pairs, in tag order.

        A message this channel did not deliver (or has settled already) is passed over.
        """
        if not self._settled:
            return []
        settled = {tag for tag, message in self._tags() if self._unsettled.get(tag) is message}
        self._settled = []
        due: list[tuple[Any, bool]] = []
        if self.multiple:
            last = None
            for tag in list(self._unsettled):
                if tag not in settled:
                    break
                last = self._unsettled.pop(tag)
                settled.discard(tag)
            if last is not None:
                due.append((last, True))
        due += [(self._unsettled.pop(tag), False) for tag in sorted(settled)]
        return due

    def _tags(self) -> list[tuple[int, Any]]:
        return [(message.delivery_tag, message) for message in self._settled]

    def flush(self) -> int:
        """Send the acknowledgements due with the messages' own ``ack``; how many it sent."""
        due = self.due()
        for message, multiple in due:
            if multiple:
                message.ack(multiple=True)
            else:
                message.ack()
        return len(due)
