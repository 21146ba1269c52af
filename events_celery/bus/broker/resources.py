"""Per-process resources: one home for what a process keeps, and what a fork must not share.

Connections and threads belong to the process that made them: a child forked from it (a
Celery prefork pool process, say) must make its own instead of writing to its parent's
socket. :class:`PerThread` keeps one resource per process, thread and settings object (the
retrying publisher, direct mode's windowed publisher); :class:`PerProcess` keeps one per
process (the background publisher, the outbox's lease owner name). Both forget what a fork
inherited, and close a resource only in the process that made it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from events_celery.conf import BusSettings

T = TypeVar("T")


class PerThread(Generic[T]):
    """One resource per process, thread and settings object, made on first use.

    Args:
        make: builds the resource for the settings.
        close: releases a resource replaced by one for new settings.
    """

    def __init__(self, make: Callable[[BusSettings], T], close: Callable[[T], Any]) -> None:
        self._make = make
        self._close = close
        self._local = threading.local()
        os.register_at_fork(after_in_child=self.forget)

    def get(self, settings: BusSettings) -> T:
        """The resource of this process and thread for ``settings``."""
        local = self._local
        current: T | None = getattr(local, "value", None)
        if current is None or local.settings is not settings or local.pid != os.getpid():
            if current is not None and local.pid == os.getpid():
                self._close(current)
            current = local.value = self._make(settings)
            local.settings = settings
            local.pid = os.getpid()
        return current

    def peek(self) -> T | None:
        """This thread's resource, if this process made one (never makes it)."""
        if getattr(self._local, "pid", None) != os.getpid():
            return None
        value: T | None = getattr(self._local, "value", None)
        return value

    def forget(self) -> None:
        """Drop this thread's resource without closing it (a forked child's inheritance)."""
        self._local.__dict__.clear()


class PerProcess(Generic[T]):
    """One resource per process, made on first use, anew in a forked child.

    Args:
        make: builds the resource.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._held: tuple[int, T] | None = None

    def get(self) -> T:
        """This process's resource."""
        with self._lock:
            if self._held is None or self._held[0] != os.getpid():
                self._held = (os.getpid(), self._make())
            return self._held[1]

    def peek(self) -> T | None:
        """This process's resource, if it made one (never makes it)."""
        held = self._held
        return held[1] if held is not None and held[0] == os.getpid() else None

    def take(self) -> T | None:
        """Remove and return this process's resource, if it made one (the next get makes anew)."""
        with self._lock:
            held, self._held = self._held, None
        return held[1] if held is not None and held[0] == os.getpid() else None
