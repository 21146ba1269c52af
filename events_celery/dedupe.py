"""Idempotent receivers: skip an event a receiver already handled.

Delivery is at least once, so a receiver can see the same event twice (a redelivery after a
worker died, a batch that came back). Every copy carries the same ``metadata.id``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from django.core.cache import caches

from events_celery.metadata import EventMetadata
from events_celery.receivers import dotted_name

F = TypeVar("F", bound=Callable[..., Any])

#: How long a handled event is remembered by default: a week, well past any redelivery.
DEFAULT_TIMEOUT = 7 * 24 * 3600


@overload
def once_per_event(func: F) -> F: ...


@overload
def once_per_event(
    func: None = None, *, cache: str = "default", timeout: int = DEFAULT_TIMEOUT
) -> Callable[[F], F]: ...


def once_per_event(
    func: F | None = None, *, cache: str = "default", timeout: int = DEFAULT_TIMEOUT
) -> F | Callable[[F], F]:
    """Make a receiver skip events it has already handled successfully.

    The receiver runs; when it returns without raising, ``(receiver, metadata.id)`` is
    remembered in a Django cache for ``timeout`` seconds, and a later delivery of the same event
    returns ``None`` without running it. A receiver that raises is not remembered, so its retry
    runs it again. Use it below ``@receiver``::

        @receiver(ORDER_PLACED)
        @once_per_event
        def charge(metadata, order, **kwargs): ...

    Args:
        func: the receiver.
        cache: alias of the Django cache to remember events in. It must be shared by every
            worker of the service (Redis, Memcached, the database cache): the default
            local-memory cache remembers per process only.
        timeout: seconds an event is remembered.

    Two copies of one event running at the same moment can both run; when an effect must happen
    exactly once, guard it with a unique constraint on ``metadata.id`` in the database as well.
    """

    def decorate(receiver: F) -> F:
        name = dotted_name(receiver)

        @functools.wraps(receiver)
        def run_once(*args: Any, metadata: EventMetadata, **kwargs: Any) -> Any:
            key = f"events_celery:handled:{name}:{metadata.id}"
            store = caches[cache]
            if store.get(key):
                return None
            result = receiver(*args, metadata=metadata, **kwargs)
            store.set(key, True, timeout)
            return result

        return run_once  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
