"""Receivers of the service processes: each one records what it saw in TEST_RESULTS."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from django.dispatch import receiver

from events_celery import current_attempt
from events_celery import receiver as bus_receiver
from tests.testapp.events import (
    CRASHING,
    DOOMED,
    FLAKY,
    ORDER_PLACED,
    PICKY,
    PING,
    SLOW,
    STEPPED,
)


def record(receiver_name: str, metadata: Any, outcome: str, **extra: Any) -> None:
    line = {
        "service": os.environ["TEST_SERVICE"],
        "node": os.environ.get("TEST_NODE", ""),
        "receiver": receiver_name,
        "event_id": str(metadata.id),
        "outcome": outcome,
        "pid": os.getpid(),
        **trace_ids(),
        **extra,
    }
    # One write of the whole line, appended: lines of concurrent pool processes never mix.
    fd = os.open(os.environ["TEST_RESULTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def trace_ids() -> dict[str, str]:
    """The trace id and parent span id of the receiver's span, when the service traces."""
    if not os.environ.get("TEST_TRACING"):
        return {}
    from opentelemetry import trace

    span: Any = trace.get_current_span()
    if not span.is_recording() or span.parent is None:
        return {}
    return {
        "trace_id": f"{span.get_span_context().trace_id:032x}",
        "parent_span_id": f"{span.parent.span_id:016x}",
    }


def attempts_so_far(receiver_name: str, event_id: str) -> int:
    lines = []
    with open(os.environ["TEST_RESULTS"]) as results:
        for text in results:
            try:
                lines.append(json.loads(text))
            except ValueError:  # a process SIGKILLed while it wrote its line
                continue
    service = os.environ["TEST_SERVICE"]
    return sum(
        1
        for x in lines
        if x["receiver"] == receiver_name and x["event_id"] == event_id and x["service"] == service
    )


@receiver(PING)
def on_ping(metadata: Any, n: int, from_event_bus: bool, **kwargs: Any) -> None:
    record("on_ping", metadata, "ok", n=n, from_event_bus=from_event_bus)


@receiver(ORDER_PLACED)
def on_order(metadata: Any, order: Any, **kwargs: Any) -> None:
    record("on_order", metadata, "ok", total=str(order.total), email=order.customer.email)


@receiver(FLAKY)
def steady(metadata: Any, n: int, **kwargs: Any) -> None:
    record("steady", metadata, "ok", n=n)


@receiver(FLAKY)
def flaky(metadata: Any, n: int, **kwargs: Any) -> None:
    if attempts_so_far("flaky", str(metadata.id)) < 2:
        record("flaky", metadata, "failed", n=n)
        raise RuntimeError("flaky receiver fails its first two attempts")
    record("flaky", metadata, "ok", n=n)


@receiver(DOOMED)
def doomed(metadata: Any, n: int, **kwargs: Any) -> None:
    """Always fails, until a test "fixes" it: ``<TEST_RESULTS>.fixed`` exists.

    When that file says ``wait``, the fixed receiver records that it started and waits (up to
    60 s) for ``<TEST_RESULTS>.release`` before it finishes.
    """
    fixed = os.environ["TEST_RESULTS"] + ".fixed"
    if os.path.exists(fixed):
        with open(fixed) as flag:
            wait = flag.read().strip() == "wait"
        if wait:
            record("doomed", metadata, "started", n=n)
            deadline = time.monotonic() + 60
            while not os.path.exists(os.environ["TEST_RESULTS"] + ".release"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        record("doomed", metadata, "ok", n=n)
        return
    record("doomed", metadata, "failed", n=n)
    raise ValueError(f"doomed receiver always fails (n={n})")


@receiver(SLOW)
def slow(metadata: Any, n: int, **kwargs: Any) -> None:
    first = attempts_so_far("slow", str(metadata.id)) == 0
    record("slow", metadata, "started", n=n)
    if first:
        time.sleep(60)  # the test kills the worker meanwhile
    record("slow", metadata, "ok", n=n)


@receiver(CRASHING)
def crash(metadata: Any, n: int, **kwargs: Any) -> None:
    """Kill the pool process running it, as a segfault or an OOM kill would."""
    record("crash", metadata, "started", n=n)
    os.kill(os.getpid(), signal.SIGKILL)


@bus_receiver(PICKY, give_up_on=(ValueError,))
def gives_up(metadata: Any, n: int, **kwargs: Any) -> None:
    """Fails with an error that is not worth retrying."""
    record("gives_up", metadata, "failed", n=n, attempt=current_attempt())
    raise ValueError(f"bad data in event {n}")


@bus_receiver(PICKY, retry={"max_attempts": 5, "backoff": 0.05, "backoff_max": 0.1})
def persistent(metadata: Any, n: int, **kwargs: Any) -> None:
    """Succeeds on its fourth attempt; its own policy allows five."""
    attempt = current_attempt()
    if attempt < 4:
        record("persistent", metadata, "failed", n=n, attempt=attempt)
        raise RuntimeError(f"attempt {attempt} fails")
    record("persistent", metadata, "ok", n=n, attempt=attempt)


@receiver(STEPPED)
def stepped(metadata: Any, step: Any, **kwargs: Any) -> None:
    """Records each run; fails the first attempt of 1 event in ``TEST_FAIL_ONE_IN``, and every
    attempt of the key ``TEST_DOOMED_KEY``; kills its own process on the step
    ``TEST_CRASH_STEP`` (``key/seq``); sleeps ``TEST_STEP_SLEEP`` seconds."""
    extra = {"key": step.key, "seq": step.seq, "attempt": current_attempt()}
    if f"{step.key}/{step.seq}" == os.environ.get("TEST_CRASH_STEP"):
        record("stepped", metadata, "started", **extra)
        os.kill(os.getpid(), signal.SIGKILL)
    pause = float(os.environ.get("TEST_STEP_SLEEP", "0") or 0)
    if pause:
        time.sleep(pause)
    one_in = int(os.environ.get("TEST_FAIL_ONE_IN", "0") or 0)
    if step.key == os.environ.get("TEST_DOOMED_KEY") or (
        one_in and current_attempt() == 1 and metadata.id.int % one_in == 0
    ):
        record("stepped", metadata, "failed", **extra)
        raise RuntimeError(f"step {step.key}/{step.seq} fails")
    record("stepped", metadata, "ok", **extra)
