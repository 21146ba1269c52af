"""Per-process resources: one per process (and thread), a forked child makes its own."""

from __future__ import annotations

import os
import threading
from typing import Any

from events_celery.bus.broker.resources import PerProcess, PerThread
from events_celery.conf import bus_settings


class Resource:
    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.closed = False

    def close(self) -> None:
        self.closed = True


def in_a_forked_child(check: Any) -> int:
    """Run ``check`` in a forked child; its exit status (0: it returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if check() else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_one_resource_per_thread_and_settings_and_the_replaced_one_is_closed(settings) -> None:
    per_thread: PerThread[Resource] = PerThread(Resource, Resource.close)
    first = per_thread.get(bus_settings())
    other: list[Resource] = []
    thread = threading.Thread(target=lambda: other.append(per_thread.get(bus_settings())))
    thread.start()
    thread.join()

    assert per_thread.get(bus_settings()) is first
    assert other[0] is not first
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 3.0  # new settings: a new resource
    renewed = per_thread.get(bus_settings())
    assert renewed is not first
    assert first.closed
    assert not renewed.closed


def test_a_forked_child_makes_its_own_and_leaves_the_parents_open() -> None:
    per_thread: PerThread[Resource] = PerThread(Resource, Resource.close)
    per_process: PerProcess[Resource] = PerProcess(Resource)
    parents = per_thread.get(bus_settings()), per_process.get()

    def child_has_its_own() -> bool:
        return (
            per_thread.peek() is None
            and per_process.peek() is None
            and per_thread.get(bus_settings()) is not parents[0]
            and per_process.get() is not parents[1]
            and not parents[0].closed
        )

    assert in_a_forked_child(child_has_its_own) == 0
    assert per_thread.get(bus_settings()) is parents[0]
    assert per_process.get() is parents[1]
    assert not parents[0].closed


def test_taking_the_process_resource_makes_the_next_one_anew() -> None:
    per_process: PerProcess[Resource] = PerProcess(Resource)
    first = per_process.get()

    assert per_process.take() is first
    assert per_process.peek() is None
    assert per_process.get() is not first
