"""What the bus knows of receivers: their names, and how a worker retries them.

Every receiver connected to an :class:`~events_celery.EventSignal` has a bus name
(:class:`ReceiverNames`), by which workers find the receiver to retry and logs and dead
letters name it. A receiver connected with :func:`receiver` also has options: how often a
worker retries it, and when it gives up. Both live here, not on the event.

::

    @receiver(ORDER_PLACED, retry={"max_attempts": 8, "backoff": 0.5}, give_up_on=(ValueError,))
    def bill(order, metadata, **kwargs):
        ...

A receiver connected without options (``ORDER_PLACED.connect(bill)`` or Django's
``@receiver``) gets ``EVENT_BUS_RETRY_POLICY``. The options matter where the event arrives from
the bus: a Celery worker retries a failing receiver on its own, and dead-letters the event for
it after the last attempt, or at once for an exception listed in ``give_up_on``.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from events_celery.conf import Problems, RetryPolicy, parse_retry_policy
from events_celery.exceptions import EventDefinitionError

if TYPE_CHECKING:
    from events_celery.signals import EventSignal

Receiver = Callable[..., Any]


def dotted_name(func: Receiver) -> str:
    """Dotted name of a function (``module.qualname``), stable across processes.

    It is a receiver's name unless the receiver is connected with a ``dispatch_uid``
    (:meth:`EventSignal.receiver_name`).
    """
    module = getattr(func, "__module__", None) or type(func).__module__
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


def receiver_key(func: Receiver) -> Any:
    """What identifies a connected receiver (a bound method by its instance and function)."""
    # Bound methods are created anew on each attribute access: key them by instance + function.
    bound_to = getattr(func, "__self__", None)
    if bound_to is not None and hasattr(func, "__func__"):
        return (id(bound_to), id(func.__func__))
    return id(func)


def _reference(func: Receiver, *, weak: bool) -> Callable[[], Receiver | None]:
    """A reference that keeps ``func`` alive only if its connection does."""
    if weak:
        try:
            if hasattr(func, "__self__") and hasattr(func, "__func__"):
                return weakref.WeakMethod(func)
            return weakref.ref(func)
        except TypeError:  # not weak-referenceable: Django keeps it strongly, so do we
            pass
    return lambda: func


class ReceiverNames:
    """The bus names of one event's receivers, both ways: receiver → name, name → receiver.

    A name is the ``dispatch_uid`` a receiver was connected with, else its dotted name. A
    worker finds the receiver to retry by its name with one dict look-up.
    """

    def __init__(self) -> None:
        self._names: dict[Any, str] = {}
        self._receivers: dict[str, tuple[Any, Callable[[], Receiver | None]]] = {}

    def check_free(
        self, event_type: str, receiver: Receiver, name: str, connected: Iterable[Receiver]
    ) -> None:
        """Refuse ``name`` for ``receiver`` if another receiver still connected has it.

        Raises:
            EventDefinitionError: the name is taken.
        """
        live = {receiver_key(r) for r in connected}
        for stale in [key for key in self._names if key not in live]:
            self._receivers.pop(self._names.pop(stale), None)
        taken = self._receivers.get(name)
        if taken is not None and taken[0] != receiver_key(receiver):
            raise EventDefinitionError(
                f"{event_type}: another receiver is already connected as {name!r}; a worker "
                "finds the receiver to retry by this name, so each needs its own: connect this "
                "one with a distinct dispatch_uid, or make it a module-level function"
            )

    def add(self, receiver: Receiver, name: str, *, weak: bool) -> None:
        """Record the name of a receiver just connected."""
        key = receiver_key(receiver)
        self._names[key] = name
        self._receivers[name] = (key, _reference(receiver, weak=weak))

    def forget(self, receiver: Receiver | None = None, dispatch_uid: str | None = None) -> None:
        """Forget a receiver being disconnected, by itself or by its ``dispatch_uid``."""
        if receiver is not None:
            name = self._names.pop(receiver_key(receiver), None)
            if name is not None:
                self._receivers.pop(name, None)
        if dispatch_uid is not None:
            named = self._receivers.pop(dispatch_uid, None)
            if named is not None:
                self._names.pop(named[0], None)

    def name_of(self, func: Receiver) -> str:
        """The bus name of a receiver."""
        return self._names.get(receiver_key(func)) or dotted_name(func)

    def find(self, name: str) -> Receiver | None:
        """The receiver connected as ``name`` now, if any."""
        named = self._receivers.get(name)
        return named[1]() if named is not None else None


_names: weakref.WeakKeyDictionary[EventSignal, ReceiverNames] = weakref.WeakKeyDictionary()


def names_of(signal: EventSignal) -> ReceiverNames:
    """The bus names of ``signal``'s receivers."""
    names = _names.get(signal)
    if names is None:
        names = _names[signal] = ReceiverNames()
    return names


@attrs.frozen
class ReceiverOptions:
    """How a worker runs one receiver.

    Attributes:
        retry: its retry policy; ``None`` means ``EVENT_BUS_RETRY_POLICY``.
        give_up_on: exceptions after which it is not retried: the event is dead-lettered for
            it at once (like Celery's ``dont_autoretry_for``).
    """

    retry: RetryPolicy | None = None
    give_up_on: tuple[type[BaseException], ...] = ()


_options: weakref.WeakKeyDictionary[Receiver, ReceiverOptions] = weakref.WeakKeyDictionary()
_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("events_celery_attempt", default=1)


def receiver(
    signal: EventSignal,
    *,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    give_up_on: tuple[type[BaseException], ...] = (),
    dispatch_uid: str | None = None,
) -> Callable[[Receiver], Receiver]:
    """Connect the decorated function to ``signal``, with its own retry options.

    Args:
        signal: the event.
        retry: a :class:`~events_celery.conf.RetryPolicy`, or a dict with the keys of
            ``EVENT_BUS_RETRY_POLICY`` (those left out keep their defaults).
        give_up_on: exception classes that are not retried.
        dispatch_uid: the receiver's name (see :meth:`~events_celery.EventSignal.receiver_name`).

    Raises:
        EventDefinitionError: the options are not valid (the message says which and why).
    """
    policy = _policy(signal, retry)
    if not isinstance(give_up_on, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in give_up_on
    ):
        raise EventDefinitionError(
            f"{signal.event_type}: give_up_on must be a tuple of exception classes, "
            f"e.g. (ValueError,), got {give_up_on!r}"
        )
    options = ReceiverOptions(policy, give_up_on)

    def connect(func: Receiver) -> Receiver:
        signal.connect(func, weak=False, dispatch_uid=dispatch_uid)
        _options[func] = options
        return func

    return connect


def _policy(
    signal: EventSignal, retry: RetryPolicy | Mapping[str, Any] | None
) -> RetryPolicy | None:
    if retry is None or isinstance(retry, RetryPolicy):
        return retry
    problems = Problems()
    policy = parse_retry_policy(problems, retry, setting=f"{signal.event_type} retry")
    if problems:
        listed = "; ".join(f"{p.message} ({p.hint})" for p in problems.found)
        raise EventDefinitionError(f"{signal.event_type}: invalid retry options: {listed}")
    return policy


def options_for(func: Receiver) -> ReceiverOptions:
    """The options ``func`` was connected with (defaults when none)."""
    try:
        return _options.get(func) or ReceiverOptions()
    except TypeError:  # not weak-referenceable (a bound method, a builtin): no options
        return ReceiverOptions()


def current_attempt() -> int:
    """The attempt number of the receiver running now: 1, then 2, 3, ... on worker retries.

    Outside a worker's retries (a local ``send_event``, the first run) it is 1.
    """
    return _attempt.get()


@contextmanager
def attempt(number: int) -> Iterator[None]:
    """Make :func:`current_attempt` return ``number`` inside the block (used by workers)."""
    token = _attempt.set(number)
    try:
        yield
    finally:
        _attempt.reset(token)
