"""Receiver tasks: retry timing and task arguments (no broker), retries on kombu's in-memory bus."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events_celery.bus.broker.backoff import retry_delay
from events_celery.bus.consume.handoff import envelope
from events_celery.bus.consume.tasks import run_receiver
from events_celery.conf import RetryPolicy
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import encode_event
from tests.testapp.events import PING


def test_backoff_doubles_from_the_second_attempt_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=2.0, backoff_max=10.0, jitter=False)
    assert [retry_delay(policy, attempt) for attempt in range(2, 7)] == [2, 4, 8, 10, 10]


@given(attempt=st.integers(min_value=2, max_value=60))
def test_jitter_keeps_each_delay_between_half_and_the_full_backoff(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=100, backoff=1.0, backoff_max=300.0, jitter=True)
    full = min(1.0 * 2 ** (attempt - 2), 300.0)
    assert full / 2 <= retry_delay(policy, attempt) <= full


@given(body=st.binary(max_size=256), value=st.text(max_size=20))
def test_an_envelope_carries_body_and_headers_as_json_safe_values(body: bytes, value: str) -> None:
    packed = envelope({"ce_id": value}, body)
    assert packed["headers"] == {"ce_id": value}
    assert isinstance(packed["body"], str)
    assert base64.b64decode(packed["body"]) == body


@pytest.mark.django_db(transaction=True)
def test_a_retry_of_a_receiver_no_longer_connected_is_dead_lettered_naming_it(
    settings: Any,
) -> None:
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}
    ran: list[str] = []

    def gone(**kwargs: Any) -> None:
        ran.append("gone")

    def still_here(**kwargs: Any) -> None:
        ran.append("still here")

    # The receiver failed its first attempt and got a retry task; then a deploy removed it.
    PING.connect(gone, weak=False, dispatch_uid="tasks-test-gone")
    receiver = PING.receiver_name(gone)
    PING.disconnect(dispatch_uid="tasks-test-gone")
    PING.connect(still_here, weak=False, dispatch_uid="tasks-test-still-here")
    metadata = EventMetadata.create(PING.event_type, source="tasks-tests")
    event = encode_event(PING, metadata, PING.serializer.encode({"n": 4}))
    item = envelope(event.headers, event.body, origin=f"pings/{PING.event_type}")
    try:
        run_receiver.apply(args=[item, receiver, 2], throw=True)
    finally:
        PING.disconnect(dispatch_uid="tasks-test-still-here")

    row = DeadLetter.objects.get()
    assert row.reason == "receiver-gone"
    assert row.error == f"receiver {receiver} is no longer connected to {PING.event_type}"
    assert row.receiver == receiver == "tasks-test-gone"
    assert row.attempts == 1
    assert row.event_id == uuid.UUID(str(metadata.id))
    assert bytes(row.body) == event.body
    assert row.origin == f"pings/{PING.event_type}"
    assert ran == []


@pytest.mark.django_db(transaction=True)
def test_an_undecodable_event_whose_task_runs_twice_is_one_dead_letter(settings: Any) -> None:
    """A batch that comes back from the broker runs again; its poison event is one row."""
    from events_celery.bus.consume.tasks import deliver_events

    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}
    metadata = EventMetadata.create(PING.event_type, source="tasks-tests")
    event = encode_event(PING, metadata, b"\xff\xff\xff")
    item = envelope(event.headers, event.body, origin=f"pings/{PING.event_type}")
    for _ in range(2):
        deliver_events.apply(args=[[item]], throw=True)

    row = DeadLetter.objects.get()
    assert (row.reason, row.receiver, row.failures) == ("poison", "", 2)
    assert row.event_id == uuid.UUID(str(metadata.id))
    assert "cannot decode the Avro payload" in row.error
