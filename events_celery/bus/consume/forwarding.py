"""The router's publisher: events to their partitions, with confirms read by the event loop.

An ordered subscription's router (:mod:`.router`) republishes each event of the intake queue
to the partition of its key and acknowledges it on the intake once the broker confirmed the
copy. Waiting for those confirms inside the worker's event loop would stop everything else
the loop does meanwhile: no pool result is read, no event handed to an idle pool process. So
the router publishes here, on a connection of its own (publishing is kept off the consuming
connection, which the broker would block along with it during a resource alarm), whose
socket is one more reader of the worker's event loop: :class:`Forwarder` writes the frames
and returns at once, and the loop reads the confirms as they come.

What a copy became is one of :data:`WAITING`, :data:`CONFIRMED` or a refusal (a ``basic.nack``
or a mandatory return); the router acknowledges the confirmed run at the head of what it sent,
in order, and gives the rest back to the intake on a refusal, a lost connection, a broker that
blocks publishers or a confirm that does not come within ``EVENT_BUS_PUBLISH_TIMEOUT``.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from kombu import Connection

from events_celery.bus.broker import declaring
from events_celery.bus.broker.confirms import Outgoing
from events_celery.bus.broker.connection import bus_connection, connect, drop
from events_celery.bus.broker.frames import publish_frames
from events_celery.conf import BusSettings

logger = logging.getLogger(__name__)

#: Not answered yet.
WAITING = "waiting"
#: Confirmed by the broker (``basic.ack``), not returned.
CONFIRMED = "confirmed"

#: Frames read in one turn of the event loop before it serves its other readers.
READ_PER_TURN = 256


class Forwarder:
    """Publishes with confirms over its own connection, whose answers ``hub`` reads.

    ``on_answer`` is called after the event loop read answers; ``on_failure`` (with why) once
    when the connection fails, the broker blocks publishers, or an answer is overdue. After a
    failure the forwarder is closed; :meth:`open` starts it again.
    """

    def __init__(
        self,
        settings: BusSettings,
        hub: Any,
        timer: Any,
        on_answer: Callable[[], None],
        on_failure: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.timer = timer
        self.on_answer = on_answer
        self.on_failure = on_failure
        self.connection: Connection | None = None
        self._amqp: Any = None
        self._channel: Any = None
        self._fd: int | None = None
        self._declarations = declaring.Declarations()
        #: Delivery tag -> what became of it, and when it was sent (``time.monotonic()``).
        self.sent: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self._returned: set[str] = set()
        self._by_tag: dict[int, str] = {}
        self._next_tag = 1
        self._watch: Any = None

    @property
    def is_open(self) -> bool:
        return self._channel is not None

    def open(self) -> None:
        """Connect (within ``EVENT_BUS_PUBLISH_TIMEOUT``) and put the socket in the event loop.

        Raises:
            Exception: the broker could not be reached; nothing is left open.
        """
        self.close()
        self.connection = bus_connection(self.settings, confirm_publish=False)
        try:
            self._amqp = connect(self.connection, timeout=self.settings.publish_timeout)
            self._amqp.on_blocked = self._on_blocked
            channel: Any = self.connection.channel()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            channel.confirm_select()
        except Exception:
            self.close()
            raise
        self._channel = channel
        self._next_tag = 1
        self._fd = self._amqp.sock.fileno()
        self.hub.add_reader(self._fd, self._readable)
        check = max(self.settings.publish_timeout / 4, 0.05)
        self._watch = self.timer.call_repeatedly(check, self._check_overdue)

    def close(self) -> None:
        """Leave the event loop and drop the connection; unanswered copies stay unanswered."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._fd is not None:
            try:
                self.hub.remove_reader(self._fd)
            except Exception:  # the loop has gone with the worker's connection
                logger.debug("removing the router's socket from the event loop failed")
            self._fd = None
        drop(self.connection)
        self.connection = self._amqp = self._channel = None
        self._declarations.forget()
        self.sent.clear()
        self._by_tag.clear()
        self._returned.clear()

    def send(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish ``items`` in order without waiting; their delivery tags.

        Raises:
            Exception: the connection failed while writing (the caller gives them back).
        """
        channel, connection = self._channel, self.connection
        assert connection is not None, "open() first"
        frames, tags, now = [], [], time.monotonic()
        for item in items:
            self._declarations.ensure(connection, item.declare)
            frames.append(
                publish_frames(
                    channel.channel_id,
                    channel.connection.frame_max,
                    item.exchange,
                    item.routing_key,
                    {**item.message.properties, "application_headers": item.message.headers},
                    item.message.body,
                )
            )
            tag = self._next_tag
            self._next_tag += 1
            self.sent[tag] = (WAITING, now)
            self._by_tag[tag] = _return_key(item.message.properties, item.exchange)
            tags.append(tag)
        channel.connection.transport.write(b"".join(frames))
        return tags

    def state(self, tag: int) -> str:
        """What became of the copy sent with ``tag``: WAITING, CONFIRMED or why it was refused."""
        return self.sent[tag][0]

    def forget(self, tags: Sequence[int]) -> None:
        """The router is done with these."""
        for tag in tags:
            self.sent.pop(tag, None)
            self._by_tag.pop(tag, None)

    def _readable(self) -> None:
        amqp = self._amqp
        if amqp is None:
            return
        try:
            for _ in range(READ_PER_TURN):
                amqp.drain_events(timeout=0)
            # More may wait in the transport's buffer, which the loop's poll does not see.
            self.hub.call_soon(self._readable)
        except TimeoutError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                self._fail(f"the router's connection failed: {exc!r}")
                return
        except Exception as exc:
            self._fail(f"the router's connection failed: {exc!r}")
            return
        self.on_answer()

    def _check_overdue(self) -> None:
        oldest = next(iter(self.sent.values()), None)
        if oldest is None:
            return
        if oldest[0] == WAITING and time.monotonic() - oldest[1] > self.settings.publish_timeout:
            self._fail(f"the broker did not confirm a copy in {self.settings.publish_timeout}s")

    def _fail(self, why: str) -> None:
        self.close()
        self.on_failure(why)

    def _settle(self, delivery_tag: int, multiple: bool, refused: str | None) -> None:
        tags = [t for t in self.sent if t <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            entry = self.sent.get(tag)
            if entry is None or entry[0] != WAITING:
                continue
            outcome = refused or CONFIRMED
            if refused is None and self._by_tag.get(tag) in self._returned:
                self._returned.discard(self._by_tag[tag])
                outcome = "unroutable: the broker returned it (mandatory)"
            self.sent[tag] = (outcome, entry[1])

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, "the broker refused it (basic.nack)")

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        # A return comes before the ack of the same message: remember it until then.
        self._returned.add(_return_key(getattr(message, "properties", {}), exchange))

    def _on_blocked(self, reason: str) -> None:
        # Copies the broker holds would wait for as long as its alarm lasts: give them back.
        self.timer.call_after(
            0.0, lambda: self._fail(f"the broker is blocking publishers ({reason})")
        )


def _return_key(properties: Any, exchange: str) -> str:
    return f"{(properties or {}).get('message_id')}\0{exchange}"
