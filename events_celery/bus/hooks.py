"""Named hook points of the bus, where observers such as metrics and tracing hang.

The paths call these functions at fixed points (a message published, consumed or poisoned; a
receiver run; a message being sent), and each calls every attached :class:`Observer` in the
order they were attached, as dramatiq's middleware does. The bus never imports an observer:
the Django app attaches :mod:`events_celery.bus.tracing` and :mod:`events_celery.bus.metrics`
when it is ready, and an observer imports nothing of the bus but this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from events_celery.conf import BusSettings
    from events_celery.wire import ReceivedEvent

#: What follows a failed receiver run (:meth:`Observer.receiver_failed`).
RETRY, DEAD_LETTERED = "retry", "dead-lettered"


@attrs.frozen
class Published:
    """One message handed to the broker: where it went, and whether the broker confirmed it."""

    exchange: str
    routing_key: str
    confirmed: bool


class Observer:
    """Watches the bus at its hook points; each method does nothing unless overridden."""

    def message_headers(self) -> Mapping[str, str]:
        """Headers to add to an event message being sent (e.g. the trace context)."""
        return {}

    def published(self, messages: Sequence[Published]) -> None:
        """A batch of messages was handed to the broker."""

    def consumed(self, settings: BusSettings, topic: str, event_type: str) -> None:
        """A worker's consumer took an event message from a service queue."""

    def poisoned(self, settings: BusSettings, exchange: str) -> None:
        """A worker dead-lettered a message (come by ``exchange``) that cannot be an event."""

    def receiver_run(
        self,
        settings: BusSettings,
        event: ReceivedEvent,
        receiver: str,
        item: Mapping[str, Any],
        attempt: int,
    ) -> AbstractContextManager[None]:
        """Wraps one run of a receiver; an error of the receiver propagates through it.

        Args:
            settings: the bus settings.
            event: the decoded event.
            receiver: the receiver's bus name.
            item: the event as its task carries it (its message headers, and ``origin``: the
                exchange and routing key it came by).
            attempt: which run of the receiver this is (1, 2, ...).
        """
        return nullcontext()

    def receiver_failed(
        self, settings: BusSettings, event: ReceivedEvent, receiver: str, outcome: str
    ) -> None:
        """A receiver run failed; ``outcome`` is :data:`RETRY` or :data:`DEAD_LETTERED`."""


_observers: list[Observer] = []


def attach(observer: Observer) -> None:
    """Call ``observer`` at every hook point from now on (once, however often attached)."""
    if observer not in _observers:
        _observers.append(observer)


def detach(observer: Observer) -> None:
    """Stop calling ``observer``."""
    if observer in _observers:
        _observers.remove(observer)


def message_headers() -> dict[str, str]:
    """The headers the observers add to an event message being sent."""
    headers: dict[str, str] = {}
    for observer in _observers:
        headers.update(observer.message_headers())
    return headers


def published(messages: Sequence[Published]) -> None:
    """Tell the observers a batch was handed to the broker."""
    for observer in _observers:
        observer.published(messages)


def consumed(settings: BusSettings, topic: str, event_type: str) -> None:
    """Tell the observers the consumer took an event message."""
    for observer in _observers:
        observer.consumed(settings, topic, event_type)


def poisoned(settings: BusSettings, exchange: str) -> None:
    """Tell the observers a worker dead-lettered a message as poison."""
    for observer in _observers:
        observer.poisoned(settings, exchange)


@contextmanager
def receiver_run(
    settings: BusSettings,
    event: ReceivedEvent,
    receiver: str,
    item: Mapping[str, Any],
    attempt: int,
) -> Iterator[None]:
    """Run a receiver inside every observer's wrapper, the first attached outermost."""
    with ExitStack() as stack:
        for observer in _observers:
            stack.enter_context(observer.receiver_run(settings, event, receiver, item, attempt))
        yield


def receiver_failed(
    settings: BusSettings, event: ReceivedEvent, receiver: str, outcome: str
) -> None:
    """Tell the observers a receiver run failed, and what follows it."""
    for observer in _observers:
        observer.receiver_failed(settings, event, receiver, outcome)
