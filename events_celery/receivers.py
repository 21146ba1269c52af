"""Connecting receivers with options: how often a worker retries them, and when it gives up.

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from events_celery.conf import Problems, RetryPolicy, parse_retry_policy
from events_celery.exceptions import EventDefinitionError
from events_celery.signals import EventSignal, Receiver


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
