"""Trace context across the real RabbitMQ, into a receiver of a prefork worker."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import PING

pytestmark = pytest.mark.rabbitmq

TOPIC = "shop"


@pytest.fixture
def tracer() -> trace.Tracer:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    return trace.get_tracer("tests")


def test_the_receiver_span_in_another_service_is_a_child_of_the_senders_span(
    bus: Bus, settings: Any, tracer: trace.Tracer
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}}, env={"TEST_TRACING": "1"})
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {TOPIC: {"enabled": True}}}

    with tracer.start_as_current_span("checkout") as sender:
        PING.send_event(n=1)
    PING.send_event(n=2)  # outside any span

    records = wait_for(
        lambda: (
            (found := bus.records(service=billing, receiver="on_ping"))
            and len(found) == 2
            and found
        ),
        "both pings",
    )
    by_n = {record["n"]: record for record in records}
    context = sender.get_span_context()
    assert by_n[1]["trace_id"] == f"{context.trace_id:032x}"
    assert by_n[1]["parent_span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in by_n[2]  # its span has no parent: a trace of its own
