"""Trace context from the sender's span to each receiver's span (OpenTelemetry SDK, in memory)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.worker import WorkController
from django.db import transaction
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from events_celery.bus import tracing
from events_celery.metadata import EventMetadata
from events_celery.models import OutboxMessage
from events_celery.wire import encode_event
from tests.memory_worker import ping_worker_settings, run_memory_worker, wait_until
from tests.testapp.events import PING

TOPIC = "traced"
SERVICE = "tracing-tests"

WORKER_SETTINGS = ping_worker_settings(SERVICE, TOPIC)

_exporter = InMemorySpanExporter()
_installed = False


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The spans this process finished (the SDK is this process's tracer provider)."""
    global _installed
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not _installed:  # the fixture is set up again when pytest-django reorders the tests
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        _installed = True
    return _exporter


@pytest.fixture(autouse=True)
def _fresh(spans: InMemorySpanExporter) -> None:
    spans.clear()


@pytest.fixture(scope="module")
def worker(spans: InMemorySpanExporter) -> Iterator[WorkController]:
    with run_memory_worker(SERVICE, WORKER_SETTINGS) as w:
        yield w


def receiver_spans(exporter: InMemorySpanExporter, receiver: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get("events_celery.receiver") == receiver
    ]


def test_a_message_sent_in_a_span_carries_its_traceparent() -> None:
    tracer = trace.get_tracer("tests")
    metadata = EventMetadata.create(PING.event_type, source="tests")

    with tracer.start_as_current_span("checkout") as span:
        message = encode_event(PING, metadata, b"\x02", trace_context=tracing.context())
    outside = encode_event(PING, metadata, b"\x02", trace_context=tracing.context())

    context = span.get_span_context()
    version, trace_id, span_id, flags = message.headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == context.trace_id
    assert int(span_id, 16) == context.span_id
    assert "traceparent" not in outside.headers


@pytest.mark.django_db(transaction=True)
def test_the_outbox_row_keeps_the_senders_trace_context(settings: Any) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {TOPIC: {"enabled": True}}}
    tracer = trace.get_tracer("tests")

    with tracer.start_as_current_span("checkout") as span, transaction.atomic():
        sent = PING.send_event(n=1)
        row = OutboxMessage.objects.get(event_id=sent.metadata.id)

    context = span.get_span_context()
    headers = json.loads(row.headers)
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_each_receiver_runs_in_a_child_span_of_the_senders_span(
    worker: WorkController, spans: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def record(n: int, from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            with lock:
                seen.append(n)

    PING.connect(record, weak=False, dispatch_uid="traced-record")
    try:
        with trace.get_tracer("tests").start_as_current_span("checkout") as sender:
            sent = PING.send_event(n=3)
        wait_until(lambda: receiver_spans(spans, "traced-record"), "the receiver's span")
    finally:
        PING.disconnect(dispatch_uid="traced-record")

    [span] = receiver_spans(spans, "traced-record")
    parent = sender.get_span_context()
    assert seen == [3]
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == parent.trace_id
    assert span.parent.span_id == parent.span_id
    assert span.parent.is_remote  # it came through the message, not the thread
    assert span.name == f"process {PING.event_type}"
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": TOPIC,
        "messaging.message.id": str(sent.metadata.id),
        "messaging.rabbitmq.destination.routing_key": PING.event_type,
        "events_celery.receiver": "traced-record",
        "events_celery.attempt": 1,
        "events_celery.source": SERVICE,
    }


def test_every_attempt_of_a_failing_receiver_is_an_error_span_under_the_sender(
    worker: WorkController, spans: InMemorySpanExporter
) -> None:
    def always_fails(from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            raise RuntimeError("this receiver always fails")

    PING.connect(always_fails, weak=False, dispatch_uid="traced-fails")
    try:
        with trace.get_tracer("tests").start_as_current_span("checkout") as sender:
            PING.send_event(n=4)
        found = wait_until(
            lambda: len(receiver_spans(spans, "traced-fails")) == 2, "both attempts' spans"
        )
    finally:
        PING.disconnect(dispatch_uid="traced-fails")

    assert found
    attempts = sorted(receiver_spans(spans, "traced-fails"), key=lambda s: s.start_time or 0)
    parent = sender.get_span_context()
    assert [(s.attributes or {})["events_celery.attempt"] for s in attempts] == [1, 2]
    for span in attempts:
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id
        assert span.status.status_code is StatusCode.ERROR
        assert [event.name for event in span.events] == ["exception"]


def test_an_event_sent_outside_any_span_starts_a_trace_of_its_own(
    worker: WorkController, spans: InMemorySpanExporter
) -> None:
    PING.connect(lambda **kwargs: None, weak=False, dispatch_uid="traced-alone")
    try:
        PING.send_event(n=5)
        [span] = wait_until(lambda: receiver_spans(spans, "traced-alone"), "the receiver's span")
    finally:
        PING.disconnect(dispatch_uid="traced-alone")

    assert span.parent is None


def test_without_opentelemetry_no_header_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_propagator", None)
    metadata = EventMetadata.create(PING.event_type, source="tests")

    with trace.get_tracer("tests").start_as_current_span("checkout"):
        message = encode_event(PING, metadata, b"\x02", trace_context=tracing.context())

    assert "traceparent" not in message.headers
