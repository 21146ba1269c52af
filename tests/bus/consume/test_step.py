"""The consumer on kombu's in-memory transport: a real Celery worker, in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.worker import WorkController

from events_celery.bus.consume.step import EventConsumerStep
from tests.memory_worker import ping_worker_settings, run_memory_worker, wait_until, wait_until_idle
from tests.testapp.events import PING

TOPIC = "memory"
SERVICE = "memory-tests"

#: Settings of the module's worker; a test that needs others gets a worker (and module) of its own.
WORKER_SETTINGS = ping_worker_settings(SERVICE, TOPIC)
#: The queues the worker reads: the service's event queue and its task queue.
WORKER_QUEUES = (f"{SERVICE}.{TOPIC}", f"{SERVICE}.events_celery.tasks")


@pytest.fixture(scope="module")
def module_worker() -> Iterator[WorkController]:
    """One worker for every test of the module: starting and stopping one takes seconds."""
    with run_memory_worker(SERVICE, WORKER_SETTINGS) as w:
        yield w


@pytest.fixture
def memory_worker(module_worker: WorkController) -> Iterator[Celery]:
    """The module's worker, left with nothing in flight by each test.

    Each test connects receivers of its own, recording into lists of its own, and disconnects
    them; waiting for the worker to go idle keeps an event or retry of one test from reaching
    the receivers of the next.
    """
    yield module_worker.app
    wait_until_idle(WORKER_QUEUES)


def test_worker_start_installs_the_event_consumer(memory_worker: Celery) -> None:
    assert EventConsumerStep in memory_worker.steps["consumer"]


def test_events_reach_receivers_through_the_worker(memory_worker: Celery) -> None:
    seen: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def on_ping(n: int, from_event_bus: bool, **kwargs: Any) -> None:
        with lock:
            seen.append((n, from_event_bus))

    PING.connect(on_ping, weak=False, dispatch_uid="memory-test")
    try:
        for n in range(5):
            PING.send_event(n=n)
        wait_until(lambda: len([s for s in seen if s[1]]) == 5, "five events from the bus")
    finally:
        PING.disconnect(dispatch_uid="memory-test")
    assert sorted(n for n, bus in seen if bus) == list(range(5))
    assert sorted(n for n, bus in seen if not bus) == list(range(5)), "local receivers ran too"


def test_a_failing_receiver_is_retried_without_rerunning_the_others(memory_worker: Celery) -> None:
    calls: dict[str, int] = {"steady": 0, "flaky": 0}

    def steady(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            calls["steady"] += 1

    def flaky(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise RuntimeError("first attempt fails")

    PING.connect(steady, weak=False, dispatch_uid="memory-steady")
    PING.connect(flaky, weak=False, dispatch_uid="memory-flaky")
    try:
        PING.send_event(n=1)
        wait_until(lambda: calls["flaky"] == 2, "the retry of the flaky receiver")
        wait_until_idle(WORKER_QUEUES)  # a wrong re-run of the steady receiver has run by then
    finally:
        PING.disconnect(dispatch_uid="memory-steady")
        PING.disconnect(dispatch_uid="memory-flaky")
    assert calls == {"steady": 1, "flaky": 2}


def test_a_retry_reaches_the_receiver_that_failed_among_look_alikes(memory_worker: Celery) -> None:
    calls: list[str] = []

    def make(label: str, failures: int) -> Any:
        def handler(from_event_bus: bool, **kwargs: Any) -> None:
            if from_event_bus:
                calls.append(label)
                if calls.count(label) <= failures:
                    raise RuntimeError(f"{label} fails")

        return handler

    ok, bad = make("ok", 0), make("bad", 1)
    PING.connect(ok, weak=False, dispatch_uid="memory-look-alike-ok")
    PING.connect(bad, weak=False, dispatch_uid="memory-look-alike-bad")
    try:
        PING.send_event(n=1)
        wait_until(lambda: calls.count("bad") == 2, "the retry of the failing receiver")
        wait_until_idle(WORKER_QUEUES)  # a retry sent to the wrong receiver has run by then
    finally:
        PING.disconnect(dispatch_uid="memory-look-alike-ok")
        PING.disconnect(dispatch_uid="memory-look-alike-bad")
    assert sorted(calls) == ["bad", "bad", "ok"]


def test_each_delivery_decodes_its_event_once(
    memory_worker: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    decode = PING.serializer.decode

    def counting_decode(body: bytes, *args: Any, **kwargs: Any) -> Any:
        payload = decode(body, *args, **kwargs)
        decoded.append(payload["n"])
        return payload

    ran: list[str] = []

    def first(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            ran.append("first")

    def second(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            ran.append("second")
            if ran.count("second") == 1:
                raise RuntimeError("the first attempt fails")

    monkeypatch.setattr(PING.serializer, "decode", counting_decode)
    PING.connect(first, weak=False, dispatch_uid="memory-decode-first")
    PING.connect(second, weak=False, dispatch_uid="memory-decode-second")
    try:
        PING.send_event(n=7)
        wait_until(lambda: ran.count("second") == 2, "the retry of the second receiver")
        wait_until_idle(WORKER_QUEUES)
    finally:
        PING.disconnect(dispatch_uid="memory-decode-first")
        PING.disconnect(dispatch_uid="memory-decode-second")

    # Two deliveries: the event's task runs both receivers, then the retry task runs the
    # second again. Each decodes the body once; the consumer step does not decode it.
    assert sorted(ran) == ["first", "second", "second"]
    assert decoded == [7, 7]
