"""Publishing many messages over one channel with a window of outstanding publisher confirms.

One broker round trip per message caps a publisher at about 1.5k messages a second on
loopback. Here up to ``window`` messages are in flight at once: the broker confirms them as
it takes them (often many with one ``multiple`` ack), so the round trips are shared.

Every message is published ``mandatory``: a message the broker cannot route (its exchange
has no alternate exchange, or that one routes nowhere either) comes back and counts as
refused, never as confirmed. A virtual transport (kombu's ``memory://``) has no confirms; a
publish that returns is taken as done there.

A publish the broker refuses for permissions (see :mod:`.refusals`) closes the channel: that
message is set aside as ``forbidden``, and the batch goes on with the others on a new channel.

Messages may carry an ordering key: those of one key reach each queue in batch order, as
publishes on one channel do. A message that is not confirmed holds back the later ones of its
key: after a refusal they are ``blocked`` (not published, or published and to be published again
after it), after a lost connection they are published again after it (``unknown``), never
reported confirmed ahead of it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from kombu import Connection, Producer

from events_celery.bus import hooks
from events_celery.bus.broker import declaring, refusals, topology
from events_celery.bus.broker.connection import Deadline, connect, drop, is_amqp
from events_celery.bus.broker.frames import publish_frames
from events_celery.wire import OutgoingMessage


@attrs.frozen
class Outgoing:
    """A message to publish, with the number its caller knows it by (an outbox row id)."""

    key: int
    exchange: str
    routing_key: str
    message: OutgoingMessage
    declare: topology.Topology
    ordering_key: str | None = None


@attrs.define
class Outcome:
    """What became of a batch: confirmed keys, refused keys (with why), and the rest.

    Attributes:
        confirmed: the broker confirmed these; they will be delivered.
        refused: the broker refused these (nack, or returned unroutable): key → reason.
        forbidden: the broker refused these for permissions (403, or 406 for a ``user_id``):
            key → its reply code and text, and what to do. They fail the same way until an
            administrator changes the permissions.
        unknown: no answer came (connection lost, timed out); the broker may still deliver
            them.
        unsent: never handed to the broker.
        blocked: messages after a refused (or forbidden) one of the same ordering key: not
            published, or published but to be published again after it; they wait for it.
        error: what stopped the batch, if something did.
    """

    confirmed: list[int] = attrs.field(factory=list)
    refused: dict[int, str] = attrs.field(factory=dict)
    forbidden: dict[int, str] = attrs.field(factory=dict)
    unknown: list[int] = attrs.field(factory=list)
    unsent: list[int] = attrs.field(factory=list)
    blocked: list[int] = attrs.field(factory=list)
    error: BaseException | None = None


#: Messages whose frames are sent together in one write.
WRITE_BATCH = 64


def keep_key_order(items: Iterable[Outgoing], outcome: Outcome) -> None:
    """Hold back, in ``outcome``, what came after an unconfirmed message of its ordering key.

    A confirmed message after a refused (or forbidden) one of its key moves to ``blocked``;
    after one with no answer or never sent, to ``unknown``: either way it is published again
    after the earlier one, so the last message of a key the broker delivers is its latest.
    Messages already ``blocked`` make the later ones of their key ``blocked`` as well.
    """
    refused = outcome.refused.keys() | outcome.forbidden.keys() | set(outcome.blocked)
    retried = set(outcome.unknown) | set(outcome.unsent)
    if not refused and not retried:
        return
    confirmed = set(outcome.confirmed)
    held: dict[str, bool] = {}  # ordering key -> blocked (True) or to publish again (False)
    blocked: list[int] = []
    again: list[int] = []
    for item in items:
        key, ordering_key = item.key, item.ordering_key
        if ordering_key is None:
            continue
        state = held.get(ordering_key)
        if key in refused:
            held[ordering_key] = True
        elif state is True and (key in confirmed or key in retried):
            blocked.append(key)
        elif state is False and key in confirmed:
            again.append(key)
        elif key in retried and state is None:
            held[ordering_key] = False
    if not blocked and not again:
        return
    moved = {*blocked, *again}
    outcome.confirmed = [key for key in outcome.confirmed if key not in moved]
    outcome.unknown = [key for key in outcome.unknown if key not in moved] + again
    outcome.unsent = [key for key in outcome.unsent if key not in moved]
    outcome.blocked += [key for key in blocked if key not in outcome.blocked]


class BrokerBlockedError(ConnectionError):
    """The broker is blocking publishers (a memory or disk alarm)."""


class PublishStoppedError(Exception):
    """Its owner asked the publisher to stop while it waited for the broker."""


#: Longest a publisher given a stop event waits for the broker before it looks at the event.
STOP_POLL = 0.2


class ConfirmingPublisher:
    """Publishes batches over one connection, keeping ``window`` confirms outstanding.

    Not thread-safe: each thread that publishes has its own.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        window: int,
        blocked_patience: float = 0.0,
        on_wait: Callable[[], object] | None = None,
        wait_interval: float = 5.0,
        resend_unknown: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        """Publish over ``connection`` (opened on first use).

        Args:
            connection: a kombu connection without ``confirm_publish`` (confirms are managed
                here).
            window: how many publishes may await their confirm at once.
            blocked_patience: how long to wait, from the moment the broker blocks publishers
                (a resource alarm), for it to let them go. The messages it holds are confirmed
                once it does, so waiting avoids publishing them twice; ``0`` fails the batch as
                soon as the broker blocks (a caller that must not wait). Once the broker lets
                go, the batch gets its whole timeout again.
            on_wait: called every ``wait_interval`` seconds while waiting for the broker (a
                relay renews the lease of the rows it is publishing).
            wait_interval: see ``on_wait``.
            resend_unknown: after a publish refused for permissions, publish again, on the new
                channel, the messages before it that the broker took but had not confirmed yet
                (the closed channel never confirms them): at least once, as the outbox
                promises. Else they are reported ``unknown``.
            stop: once set, a wait for the broker (its confirms, or a broker that blocks
                publishers) ends within ``STOP_POLL`` seconds: the batch fails with
                :class:`PublishStoppedError`, and what the broker had not confirmed is
                ``unknown`` (at least once: publishing it again may deliver it twice).
        """
        self.connection = connection
        self.window = max(window, 1)
        self.blocked_patience = blocked_patience
        self.on_wait = on_wait
        self.wait_interval = wait_interval
        self.resend_unknown = resend_unknown
        self.stop = stop
        self._blocked_at = 0.0
        self._unblocked = False
        self._channel: Any = None
        self._producer: Producer | None = None
        self._declarations = declaring.Declarations()
        self.blocked: str | None = None
        self._outstanding: OrderedDict[int, tuple[int, str]] = OrderedDict()
        self._returned: set[str] = set()
        self._confirmed: list[int] = []
        self._refused: dict[int, str] = {}
        self._next_tag = 1
        self._sent = 0  # messages of the current round handed to the connection
        self._written: list[bytes] = []  # frames not yet sent (see _publish_amqp)
        self._written_tags: list[int] = []  # their delivery tags
        self._parked_checked: dict[str, float] = {}  # parking queue -> when last counted

    def close(self) -> None:
        """Drop the connection; the next batch opens a new one."""
        drop(self.connection)
        self._channel = self._producer = None
        self._declarations.forget()

    def publish(self, batch: Iterable[Outgoing], *, timeout: float) -> Outcome:
        """Publish ``batch`` in order and wait for the broker's answers, within ``timeout``.

        Never raises for broker trouble: what happened to each message is in the outcome.
        A message refused for permissions is ``forbidden``, and the others go on over a new
        channel. After an outcome with an ``error`` the connection is dropped; the next call
        opens a new one.
        """
        items = list(batch)
        deadline = Deadline(timeout)
        outcome = Outcome()
        todo = items
        self._sent = 0
        try:
            self._open(deadline)
            if self._producer is not None:  # a virtual transport: no confirms to wait for
                for item in items:
                    self._declare(item.declare)
                    self._publish_virtual(item)
                    self._sent += 1
                    outcome.confirmed.append(item.key)
                return outcome
            # Each refusal sets one message aside, so there are at most len(items) + 1 rounds.
            for _ in range(len(items) + 1):
                try:
                    self._publish_all(todo, deadline)
                    break
                except Exception as exc:
                    refusal = refusals.publish_refusal(exc)
                    if refusal is None:
                        raise
                    todo = self._set_aside(refusal, todo, outcome, exc)
                    self._new_channel(deadline)
            else:  # pragma: no cover - each round has one message fewer
                raise RuntimeError(f"{len(todo)} message(s) left after every round")
            self._watch_parked({id(item.declare): item.declare for item in items}.values())
        except Exception as exc:
            outcome.error = exc
            never_sent = set(self._written_tags)  # frames still in the buffer
            outcome.unknown += [
                k for tag, (k, _) in self._outstanding.items() if tag not in never_sent
            ]
            outcome.unsent = [k for tag, (k, _) in self._outstanding.items() if tag in never_sent]
            outcome.unsent += [item.key for item in todo[self._sent :]]
            self.close()
        finally:
            outcome.confirmed.extend(self._confirmed)
            outcome.refused.update(self._refused)
            self._reset_batch()
            keep_key_order(items, outcome)
            confirmed = set(outcome.confirmed)
            hooks.published(
                [
                    hooks.Published(item.exchange, item.routing_key, item.key in confirmed)
                    for item in items
                ]
            )
        return outcome

    def _publish_all(self, items: list[Outgoing], deadline: Deadline) -> None:
        # Publish ``items`` in order and wait for every confirm; counts them in ``_sent``.
        self._sent = 0
        for item in items:
            self._declare(item.declare)
            if len(self._outstanding) >= self.window:
                # Let half the window drain before sending on: one read then takes many
                # (often ``multiple``) acks, instead of one read per message.
                while len(self._outstanding) > self.window // 2:
                    self._wait(deadline)
            self._publish_amqp(item, deadline)
            self._sent += 1
        self._send_written()
        while self._outstanding:
            self._wait(deadline)

    def _set_aside(
        self,
        refusal: refusals.Refusal,
        todo: list[Outgoing],
        outcome: Outcome,
        exc: Exception,
    ) -> list[Outgoing]:
        """Record the message ``refusal`` is about; what is left to publish.

        The broker handles a channel's publishes in order and discards everything after the
        one it refused: the refused message is the first unconfirmed one it concerns. Those
        before it were taken (never to be confirmed on the closed channel), those after it
        were not.

        Raises:
            Exception: ``exc`` again, when no message awaiting its confirm is the refused one.
        """
        never_sent = set(self._written_tags)
        waiting = [key for tag, (key, _) in self._outstanding.items() if tag not in never_sent]
        by_key = {item.key: item for item in todo}
        refused = next(
            (
                key
                for key in waiting
                if refusal.concerns(
                    by_key[key].exchange, by_key[key].routing_key, by_key[key].message.properties
                )
            ),
            None,
        )
        if refused is None:
            raise exc
        outcome.forbidden[refused] = refusal.reason
        taken = [by_key[key] for key in waiting[: waiting.index(refused)]]
        after = todo[[item.key for item in todo].index(refused) + 1 :]
        ordering_key = by_key[refused].ordering_key
        if ordering_key is not None:
            # The later messages of its key wait for it (the broker discarded them).
            outcome.blocked += [item.key for item in after if item.ordering_key == ordering_key]
            after = [item for item in after if item.ordering_key != ordering_key]
        if not self.resend_unknown:
            outcome.unknown += [item.key for item in taken]
            taken = []
        self._written, self._written_tags = [], []
        self._outstanding.clear()
        self._returned.clear()
        self._sent = 0
        return [*taken, *after]

    def _new_channel(self, deadline: Deadline) -> None:
        # py-amqp has opened the closed channel again (same number, without confirms).
        if self._channel.is_open:
            self._channel.confirm_select()
            self._next_tag = 1
        else:
            self._channel = None
            self._open(deadline)

    def _reset_batch(self) -> None:
        self._written = []
        self._written_tags = []
        self._outstanding.clear()
        self._returned.clear()
        self._confirmed = []
        self._refused = {}

    def _open(self, deadline: Deadline) -> None:
        if self._channel is not None or self._producer is not None:
            return
        if deadline.expired():
            raise TimeoutError("no time left to connect to the broker")
        self.blocked = None
        transport_connection = connect(self.connection, timeout=deadline.remaining())
        if not is_amqp(self.connection):
            self._producer = Producer(self.connection.channel())
            return
        transport_connection.on_blocked = self._on_blocked
        transport_connection.on_unblocked = self._on_unblocked
        channel: Any = self.connection.channel()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        channel.confirm_select()
        self._channel = channel
        self._next_tag = 1

    def _watch_parked(self, declared: Iterable[topology.Topology]) -> None:
        # This process's own unroutable events are counted, at most once a minute per topic.
        now = time.monotonic()
        for declare in declared:
            for queue in declare.queues:
                name = queue.name
                if name.endswith(".unrouted") and now - self._parked_checked.get(name, -1e9) > 60:
                    self._parked_checked[name] = now
                    declaring.warn_parked(self.connection, name)

    def _declare(self, declare: topology.Topology) -> None:
        # What is published after a declaration must follow it: send the frames written first.
        self._declarations.ensure(self.connection, declare, first=self._send_written)

    def _publish_virtual(self, item: Outgoing) -> None:
        assert self._producer is not None
        self._producer.publish(
            item.message.body,
            exchange=item.exchange,
            routing_key=item.routing_key,
            headers=item.message.headers,
            retry=False,
            **item.message.properties,
        )

    def _publish_amqp(self, item: Outgoing, deadline: Deadline) -> None:
        while self.blocked is not None:
            self._wait(deadline)  # until the broker lets publishers go, or time runs out
        # The frames are written here (py-amqp's generic serializer costs most of a publish)
        # and sent with one system call per WRITE_BATCH messages; py-amqp's basic_publish would
        # also poll the socket for every message (for connection.blocked), which _wait does.
        channel = self._channel
        self._written.append(
            publish_frames(
                channel.channel_id,
                channel.connection.frame_max,
                item.exchange,
                item.routing_key,
                {**item.message.properties, "application_headers": item.message.headers},
                item.message.body,
            )
        )
        self._outstanding[self._next_tag] = (
            item.key,
            f"{item.message.properties.get('message_id')}\0{item.exchange}",
        )
        self._written_tags.append(self._next_tag)
        self._next_tag += 1
        if len(self._written) >= WRITE_BATCH:
            self._send_written()

    def _send_written(self) -> None:
        if self._written:
            data, self._written = b"".join(self._written), []
            self._channel.connection.transport.write(data)
            self._written_tags = []

    def _wait(self, deadline: Deadline) -> None:
        """Wait for the broker's next frame (confirms, mostly); raise when time runs out."""
        self._send_written()
        last_call = time.monotonic()
        while True:
            end = deadline.end
            if self.blocked is not None:
                if not self.blocked_patience:
                    raise BrokerBlockedError(f"the broker is blocking publishers ({self.blocked})")
                end = max(end, self._blocked_at + self.blocked_patience)
            left = end - time.monotonic()
            if left <= 0:
                blocked = f"; it is blocking publishers ({self.blocked})" if self.blocked else ""
                raise TimeoutError(
                    f"the broker did not confirm {len(self._outstanding)} message(s) in "
                    f"time{blocked}"
                )
            if self.stop is not None and self.stop.is_set():
                raise PublishStoppedError(
                    f"stopped while waiting for the broker to confirm {len(self._outstanding)} "
                    "message(s)"
                    + (f" (it is blocking publishers: {self.blocked})" if self.blocked else "")
                )
            chunk = min(left, self.wait_interval, STOP_POLL if self.stop is not None else left)
            try:
                self.connection.drain_events(timeout=chunk)
                break
            except TimeoutError:
                pass
            if self.on_wait is not None and time.monotonic() - last_call >= self.wait_interval:
                last_call = time.monotonic()
                self.on_wait()
        if self._unblocked:
            # The broker let publishers go: what it held gets confirmed now, in its own time.
            self._unblocked = False
            deadline.end = max(deadline.end, time.monotonic() + deadline.seconds)

    def _settle(self, delivery_tag: int, multiple: bool, refused_reason: str | None) -> None:
        tags = [t for t in self._outstanding if t <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            entry = self._outstanding.pop(tag, None)
            if entry is None:
                continue
            key, returned_as = entry
            if refused_reason is not None:
                self._refused[key] = refused_reason
            elif returned_as in self._returned:
                self._returned.discard(returned_as)
                self._refused[key] = "unroutable: the broker returned it (mandatory)"
            else:
                self._confirmed.append(key)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, "the broker refused it (basic.nack)")

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        # A return comes before the ack of the same message: remember it until then.
        message_id = getattr(message, "properties", {}).get("message_id")
        self._returned.add(f"{message_id}\0{exchange}")

    def _on_blocked(self, reason: str) -> None:
        self.blocked = reason or "connection blocked"
        self._blocked_at = time.monotonic()

    def _on_unblocked(self) -> None:
        self.blocked = None
        self._unblocked = True
