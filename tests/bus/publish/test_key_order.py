"""Rows of one partition key reach the broker in outbox order, whoever publishes them.

The claim rules are asserted on the table alone (SQLite and PostgreSQL); the background
publisher and concurrent relays publish to a probe queue on the shared RabbitMQ, and the order
of each key is read there.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from events_celery.bus.publish import background, claims, outbox, relay
from events_celery.bus.publish.outbox import Row
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.bus.conftest import received
from tests.testapp.events import PING

pytestmark = pytest.mark.django_db(transaction=True)

#: PING is keyed by its ``n``: events with the same ``n`` are one key.
KEYED = {PING.event_type: {"pings": {"event_key_field": "n", "enabled": True}}}


@pytest.fixture
def keyed(settings: Any) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = KEYED


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Row]:
    """Rows handed to the background publisher (which does not publish them here)."""
    rows: list[Row] = []
    monkeypatch.setattr(
        background.BackgroundPublisher, "submit", lambda self, new: rows.extend(new)
    )
    return rows


def send(*keys: int) -> list[int]:
    """Send one PING per key, in one transaction; the ids of their rows, in order."""
    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in keys]
    by_event = dict(OutboxMessage.objects.values_list("event_id", "id"))
    return [by_event[uuid.UUID(event)] for event in sent]


def expire(ids: list[int] | None = None) -> None:
    rows = OutboxMessage.objects.all() if ids is None else OutboxMessage.objects.filter(id__in=ids)
    rows.update(locked_until=timezone.now() - timedelta(seconds=1))


def claimed(**options: Any) -> list[int]:
    return [
        row.id for row in claims.claim(bus_settings(), limit=options.pop("limit", 100), **options)
    ]


@pytest.mark.usefixtures("keyed")
def test_rows_of_a_keyed_topic_carry_one_ordering_key_per_topic_and_key(
    submitted: list[Row], settings: Any
) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        PING.event_type: {
            "pings": {"event_key_field": "n", "enabled": True},
            "audit": {"enabled": True},
        }
    }
    send(1, 1, 2)

    keys = [row.ordering_key for row in submitted if row.topic == "pings"]
    assert keys[0] == keys[1] != keys[2]
    assert [row.ordering_key for row in submitted if row.topic == "audit"] == [None] * 3
    stored = dict(OutboxMessage.objects.values_list("id", "ordering_key"))
    assert all(stored[row.id] == row.ordering_key for row in submitted)


@pytest.mark.usefixtures("keyed", "submitted")
def test_a_claim_never_takes_a_later_row_of_a_key_while_an_earlier_one_is_leased_elsewhere() -> (
    None
):
    first, second, other, third, fourth = send(1, 1, 2, 1, 3)
    expire([second, other, third, fourth])  # ``first`` is still its writer's

    assert claimed() == [other, fourth]
    assert claimed() == []  # key 1 waits for ``first``

    expire([first])
    assert claimed() == [first, second, third]  # together, in order


@pytest.mark.usefixtures("keyed", "submitted")
def test_a_claim_never_takes_a_later_row_of_a_key_while_an_earlier_one_waits_to_be_retried() -> (
    None
):
    first, second = send(1, 1)
    expire()
    claims.release(bus_settings(), [first], retry_in=30.0, refused={first: "basic.nack"})

    assert claimed() == []

    expire([first])
    assert claimed() == [first, second]


@pytest.mark.usefixtures("keyed", "submitted")
def test_a_row_set_aside_blocks_its_key_only_and_the_backlog_says_so() -> None:
    first, second, other, third = send(1, 1, 2, 1)
    settings = bus_settings()
    claims.set_aside(settings, {first: "403 ACCESS_REFUSED"})
    expire()

    assert claimed() == [other]
    claims.delete(settings, [other])  # published
    waiting = outbox.backlog(settings)
    assert (waiting.forbidden, waiting.blocked_keys, waiting.blocked_rows) == (1, 1, 2)
    told = outbox.describe_blocked(waiting)
    assert "1 partition key(s) blocked" in told
    assert "2 later row(s)" in told
    assert "relay_events --retry-refused" in told

    expire()
    assert claimed(include_refused=True) == [first, second, third]


@pytest.mark.usefixtures("keyed", "submitted")
def test_rows_held_back_by_their_key_do_not_count_against_the_claim_limit() -> None:
    blocked = send(*[1] * 5)
    free = send(2, 3)
    claims.set_aside(bus_settings(), {blocked[0]: "403"})
    expire()

    assert claimed(limit=2) == free


@pytest.mark.usefixtures("keyed", "submitted")
def test_rows_without_a_key_are_claimed_in_any_case(settings: Any) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    _, second = send(1, 1)
    expire([second])

    assert claimed() == [second]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED: PostgreSQL")
@pytest.mark.usefixtures("keyed", "submitted")
def test_a_claim_passes_over_a_key_whose_earlier_row_a_concurrent_claim_has_locked() -> None:
    first, second, other = send(1, 1, 2)
    expire()
    locked = threading.Event()
    done = threading.Event()

    def lock_first() -> None:
        try:
            with transaction.atomic():
                list(OutboxMessage.objects.select_for_update().filter(id=first))
                locked.set()
                done.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=lock_first)
    thread.start()
    try:
        assert locked.wait(10)
        assert claimed() == [other]
    finally:
        done.set()
        thread.join()
    assert claimed() == [first, second]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED: PostgreSQL")
@pytest.mark.usefixtures("keyed", "submitted")
def test_a_claim_takes_a_key_only_up_to_a_row_a_concurrent_claim_has_locked() -> None:
    first, second, third, other = send(1, 1, 1, 2)
    expire()
    locked = threading.Event()
    done = threading.Event()

    def lock_second() -> None:
        try:
            with transaction.atomic():
                list(OutboxMessage.objects.select_for_update().filter(id=second))
                locked.set()
                done.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=lock_second)
    thread.start()
    try:
        assert locked.wait(10)
        assert claimed() == [first, other]  # ``third`` waits behind ``second``
    finally:
        done.set()
        thread.join()
    expire()
    assert claimed() == [first, second, third, other]


@pytest.mark.usefixtures("keyed")
def test_the_writer_leaves_a_key_to_the_relays_when_an_earlier_row_is_not_its_own(
    submitted: list[Row],
) -> None:
    dead, mine, _ = send(1, 1, 2)
    rows = [row for row in submitted if row.id != dead]
    settings = bus_settings()

    assert [row.id for row in claims.held_elsewhere(settings, rows, mine=[])] == [mine]
    assert claims.held_elsewhere(settings, submitted, mine=[]) == []  # the batch has them all
    published = [row for row in submitted if row.id == dead]  # confirmed, not deleted yet
    assert claims.held_elsewhere(settings, rows, mine=published) == []


# --- on the real broker -------------------------------------------------------------------


def order_by_key(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Event ids by partition key, in the order they arrived (first arrival only)."""
    seen: set[str] = set()
    keys: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        if message["ce_id"] not in seen:
            seen.add(message["ce_id"])
            keys[message["ce_partitionkey"]].append(message["ce_id"])
    return keys


@pytest.mark.rabbitmq
def test_the_background_publisher_leaves_a_key_with_an_older_foreign_row_to_the_relays(
    rabbitmq_url: str, probe: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        PING.event_type: {"pings": {"event_key_field": "n", "enabled": True}}
    }
    with monkeypatch.context() as dead:  # its writer dies before publishing it
        dead.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
        orphan = str(PING.send_event(n=1).metadata.id)
    later = str(PING.send_event(n=1).metadata.id)
    other = str(PING.send_event(n=2).metadata.id)
    try:
        assert background.background_publisher().flush(timeout=30)
    finally:
        background.stop_background_publisher()

    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == [other]
    waiting = OutboxMessage.objects.order_by("id")
    assert [str(row.event_id) for row in waiting] == [orphan, later]
    assert waiting.get(event_id=later).locked_until <= timezone.now()  # a relay may take it

    expire()
    relay.relay_pass(bus_settings())
    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == [orphan, later]


@pytest.mark.rabbitmq
def test_concurrent_relays_deliver_every_key_of_a_backlog_in_order(
    rabbitmq_url: str, probe: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = KEYED
    settings.EVENT_BUS_OUTBOX_BATCH_SIZE = 37  # many small claims, interleaved across relays
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    keys, per_key = 40, 25
    with transaction.atomic():
        sent = [
            (str(n), str(PING.send_event(n=n).metadata.id))
            for _ in range(per_key)
            for n in range(keys)
        ]
    expire()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def relay_until_empty() -> None:
        try:
            start.wait()
            for _ in range(500):
                try:
                    relay.relay_pass(bus_settings())
                except Exception as exc:  # SQLite under contention: "database is locked"
                    errors.append(exc)
                if not OutboxMessage.objects.exists():
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=relay_until_empty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not OutboxMessage.objects.exists(), errors[:3]
    messages = received(rabbitmq_url, probe)
    expected: dict[str, list[str]] = defaultdict(list)
    for key, event in sent:
        expected[key].append(event)
    assert order_by_key(messages) == expected  # every key complete and in order
    assert len(messages) == keys * per_key  # none twice
