"""Prometheus metrics counted by a real worker on kombu's in-memory transport."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.worker import WorkController
from kombu import Connection, Exchange, Producer
from prometheus_client import REGISTRY

from events_celery.bus import metrics
from tests.memory_worker import ping_worker_settings, run_memory_worker, wait_until
from tests.testapp.events import PING

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "metered"
SERVICE = "metrics-tests"
EVENT = PING.event_type

WORKER_SETTINGS = ping_worker_settings(SERVICE, TOPIC)


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkController]:
    with run_memory_worker(SERVICE, WORKER_SETTINGS) as w:
        yield w


def value(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when it was never counted)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def message_labels() -> dict[str, str]:
    return {"service": SERVICE, "topic": TOPIC, "event_type": EVENT}


def run_labels(receiver: str, outcome: str | None = None) -> dict[str, str]:
    """Labels of a receiver's runs; a receiver connected with a dispatch_uid goes by it."""
    labels = {"service": SERVICE, "event_type": EVENT, "receiver": receiver}
    return labels | ({"outcome": outcome} if outcome else {})


RECORD = run_labels("metrics-record")
RECORD_SUCCESS = run_labels("metrics-record", "success")


def test_publishing_consuming_and_receiver_runs_are_counted(worker: WorkController) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def record(n: int, from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            with lock:
                seen.append(n)

    before = {
        "published": value("events_celery_published_messages_total", **message_labels()),
        "confirmed": value("events_celery_published_messages_confirmed_total", **message_labels()),
        "consumed": value("events_celery_consumed_messages_total", **message_labels()),
        "runs": value(
            "events_celery_receiver_runs_total", **run_labels("metrics-record", "success")
        ),
        "timed": value(
            "events_celery_receiver_duration_seconds_count", **run_labels("metrics-record")
        ),
    }
    PING.connect(record, weak=False, dispatch_uid="metrics-record")
    try:
        for n in range(4):
            PING.send_event(n=n)
        wait_until(lambda: len(seen) == 4, "four events from the bus")
    finally:
        PING.disconnect(dispatch_uid="metrics-record")

    labels = message_labels()
    assert value("events_celery_published_messages_total", **labels) == before["published"] + 4
    confirmed = value("events_celery_published_messages_confirmed_total", **labels)
    assert confirmed == before["confirmed"] + 4
    assert value("events_celery_published_messages_failed_total", **labels) == 0
    assert value("events_celery_consumed_messages_total", **labels) == before["consumed"] + 4
    runs = value("events_celery_receiver_runs_total", **RECORD_SUCCESS)
    assert runs == before["runs"] + 4
    timed = value("events_celery_receiver_duration_seconds_count", **RECORD)
    assert timed == before["timed"] + 4


@pytest.mark.django_db(transaction=True)  # the dead letter is a row
def test_a_failing_receiver_counts_a_retry_then_a_dead_letter(worker: WorkController) -> None:
    calls: list[int] = []

    def always_fails(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            calls.append(1)
            raise RuntimeError("this receiver always fails")

    retry = run_labels("metrics-fails", "retry")
    dead = run_labels("metrics-fails", "dead-lettered")
    PING.connect(always_fails, weak=False, dispatch_uid="metrics-fails")
    try:
        PING.send_event(n=1)
        wait_until(
            lambda: value("events_celery_receiver_runs_total", **dead) == 1,
            "the receiver's dead letter",
        )
    finally:
        PING.disconnect(dispatch_uid="metrics-fails")

    assert len(calls) == 2  # max_attempts
    assert value("events_celery_receiver_runs_total", **retry) == 1
    assert value("events_celery_receiver_runs_total", **run_labels("metrics-fails", "success")) == 0
    timed = value("events_celery_receiver_duration_seconds_count", **run_labels("metrics-fails"))
    assert timed == 2


@pytest.mark.django_db(transaction=True)  # the dead letter is a row
def test_a_poison_message_is_counted(worker: WorkController) -> None:
    labels = {"service": SERVICE, "topic": TOPIC}
    before = value("events_celery_poison_messages_total", **labels)

    with Connection("memory://") as connection:
        Producer(connection.default_channel).publish(
            b"not avro",
            exchange=Exchange(TOPIC, type="topic"),
            routing_key=EVENT,
            content_type="text/plain",
            content_encoding="binary",
        )

    wait_until(
        lambda: value("events_celery_poison_messages_total", **labels) == before + 1,
        "the poison message to be counted",
    )


def test_without_prometheus_client_events_flow_and_nothing_is_counted(
    worker: WorkController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "prometheus_client", None)
    monkeypatch.setattr(metrics, "_metrics", None)
    seen: list[int] = []

    def record(n: int, from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            seen.append(n)

    before = value("events_celery_consumed_messages_total", **message_labels())
    PING.connect(record, weak=False, dispatch_uid="metrics-off")
    try:
        PING.send_event(n=7)
        wait_until(lambda: seen == [7], "the event from the bus")
    finally:
        PING.disconnect(dispatch_uid="metrics-off")

    assert not metrics.enabled()
    assert value("events_celery_consumed_messages_total", **message_labels()) == before
    assert value("events_celery_receiver_runs_total", **run_labels("metrics-off", "success")) == 0


def test_without_the_optional_packages_the_bus_imports_and_encodes() -> None:
    # A fresh interpreter where importing prometheus_client or opentelemetry fails.
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import django; django.setup()\n"
        "from events_celery.bus import metrics, tracing, worker\n"
        "from events_celery.bus.consume import step, tasks\n"
        "from events_celery.wire import encode_event\n"
        "from events_celery.metadata import EventMetadata\n"
        "from tests.testapp.events import PING\n"
        "assert not metrics.enabled()\n"
        "metrics.consumed(metrics.bus_settings(), 'topic', PING.event_type)\n"
        "metadata = EventMetadata.create(PING.event_type, source='t')\n"
        "message = encode_event(PING, metadata, b'\\x02')\n"
        "assert 'traceparent' not in message.headers\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )

    assert result.stdout.strip() == "ok", result.stderr
