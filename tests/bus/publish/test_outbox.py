"""The outbox table: rows written in the caller's transaction, leases, claims and deletes.

No broker here: publishing is stubbed out of the way, so what is asserted is only what the
table holds. The relay that publishes rows is tested against RabbitMQ in ``test_relay.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events_celery.bus.publish import background, claims, outbox, relay
from events_celery.bus.publish.outbox import Row
from events_celery.bus.publish.producer import batch_events
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.testapp.events import PING

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def routed(settings: Any) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Row]:
    """Rows handed to the background publisher (which does not publish them here)."""
    rows: list[Row] = []
    monkeypatch.setattr(
        background.BackgroundPublisher, "submit", lambda self, new: rows.extend(new)
    )
    return rows


def expire_leases() -> None:
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))


def test_a_committed_event_is_a_row_leased_to_its_writer_and_handed_over_after_commit(
    submitted: list[Row],
) -> None:
    with transaction.atomic():
        sent = PING.send_event(n=7)
        assert submitted == []  # not before the commit
        assert OutboxMessage.objects.count() == 1

    row = OutboxMessage.objects.get()
    assert row.event_id == sent.metadata.id
    assert row.event_type == PING.event_type
    assert row.topic == "pings"
    assert row.locked_by == outbox.process_owner()
    assert row.locked_until > timezone.now()
    headers = json.loads(row.headers)
    assert headers["ce_id"] == str(sent.metadata.id)
    assert bytes(row.body) == PING.serializer.encode({"n": 7})
    assert [r.id for r in submitted] == [row.id]


def test_outside_a_transaction_the_row_is_written_and_handed_over_at_once(
    submitted: list[Row],
) -> None:
    PING.send_event(n=1)

    assert OutboxMessage.objects.count() == 1
    assert len(submitted) == 1


def test_a_rolled_back_transaction_leaves_no_row_and_publishes_nothing(
    submitted: list[Row],
) -> None:
    def fail_after_sending() -> None:
        with transaction.atomic():
            PING.send_event(n=1)
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        fail_after_sending()

    with transaction.atomic():
        PING.send_event(n=2)
        transaction.set_rollback(True)

    assert not OutboxMessage.objects.exists()
    assert submitted == []


def test_a_rolled_back_savepoint_drops_only_its_own_events(submitted: list[Row]) -> None:
    with transaction.atomic():
        kept = PING.send_event(n=1)
        try:
            with transaction.atomic():
                PING.send_event(n=2)
                raise RuntimeError("inner block failed")
        except RuntimeError:
            pass

    assert list(OutboxMessage.objects.values_list("event_id", flat=True)) == [kept.metadata.id]
    assert [r.event_id for r in submitted] == [str(kept.metadata.id)]


def test_rows_are_claimed_only_once_their_lease_has_run_out(submitted: list[Row]) -> None:
    for n in range(3):
        PING.send_event(n=n)
    settings = bus_settings()

    assert claims.claim(settings, limit=10) == []

    expire_leases()
    claimed = claims.claim(settings, limit=10)
    assert [r.id for r in claimed] == sorted(r.id for r in submitted)  # oldest first
    assert claims.claim(settings, limit=10) == []  # leased to that claim now
    assert claimed[0].message.headers == submitted[0].message.headers
    assert claimed[0].message.properties == submitted[0].message.properties
    assert claimed[0].message.body == submitted[0].message.body


def test_concurrent_claims_never_share_a_row(submitted: list[Row]) -> None:
    with transaction.atomic():
        for n in range(300):
            PING.send_event(n=n)
    expire_leases()
    settings = bus_settings()
    taken: list[list[int]] = []
    start = threading.Barrier(4)

    def claim_all() -> None:
        mine: list[int] = []
        start.wait()
        try:
            for _ in range(100):
                try:
                    rows = claims.claim(settings, limit=7)
                except Exception:  # SQLite: "database is locked" under contention; try again
                    time.sleep(0.01)
                    continue
                if not rows and len(mine) + sum(map(len, taken)) >= 300:
                    break
                mine.extend(r.id for r in rows)
        finally:
            taken.append(mine)
            connection.close()

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [pk for mine in taken for pk in mine]
    assert len(everything) == len(set(everything))
    assert set(everything) == set(OutboxMessage.objects.values_list("id", flat=True))


def test_deleting_confirmed_rows_leaves_the_rest(submitted: list[Row]) -> None:
    for n in range(5):
        PING.send_event(n=n)

    claims.delete(bus_settings(), [r.id for r in submitted[:3]])

    assert set(OutboxMessage.objects.values_list("id", flat=True)) == {r.id for r in submitted[3:]}


def test_renewing_keeps_only_rows_still_owned(submitted: list[Row]) -> None:
    for n in range(2):
        PING.send_event(n=n)
    OutboxMessage.objects.filter(id=submitted[1].id).update(locked_by="another relay")

    renewed = claims.renew(bus_settings(), submitted)

    assert [r.id for r in renewed] == [submitted[0].id]
    assert renewed[0].leased_at >= submitted[0].leased_at


def test_refused_rows_are_set_aside_after_too_many_refusals(submitted: list[Row]) -> None:
    PING.send_event(n=1)
    settings = bus_settings()
    pk = submitted[0].id

    for _ in range(outbox.MAX_REFUSALS):
        claims.release(settings, [pk], retry_in=0.0, refused={pk: "basic.nack"})

    row = OutboxMessage.objects.get()
    assert row.attempts == outbox.MAX_REFUSALS
    assert row.last_error == "basic.nack"
    expire_leases()
    assert claims.claim(settings, limit=10) == []
    assert [r.id for r in claims.claim(settings, limit=10, include_refused=True)] == [pk]
    assert outbox.backlog(settings).refused == 1


def test_the_backlog_counts_rows_and_names_overdue_events(
    submitted: list[Row], settings: Any
) -> None:
    settings.EVENT_BUS_OUTBOX_WARN_AFTER = 10
    old = PING.send_event(n=1)
    PING.send_event(n=2)
    OutboxMessage.objects.filter(event_id=old.metadata.id).update(
        created_at=timezone.now() - timedelta(seconds=60)
    )

    waiting = outbox.backlog(bus_settings())
    ids, total = outbox.overdue(bus_settings())

    assert waiting.count == 2
    assert 59 < (waiting.oldest_age() or 0) < 120
    assert (ids, total) == ([str(old.metadata.id)], 1)


def test_the_overdue_warning_names_the_waiting_event_ids(
    submitted: list[Row], settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A Celery worker started by another test module may have raised the root level.
    caplog.set_level(logging.WARNING, logger="events_celery")
    settings.EVENT_BUS_OUTBOX_WARN_AFTER = 10
    late = PING.send_event(n=1)
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=60))

    relay.warn_overdue(bus_settings())

    assert str(late.metadata.id) in caplog.text
    assert "WARNING" in [r.levelname for r in caplog.records]


def test_a_batch_writes_its_events_in_one_insert_and_hands_them_over_after_commit(
    submitted: list[Row],
) -> None:
    with CaptureQueriesContext(connection) as queries, batch_events():
        sent = [PING.send_event(n=n).metadata.id for n in range(250)]
        assert not OutboxMessage.objects.exists()  # written when the block ends
        assert submitted == []

    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    assert list(OutboxMessage.objects.order_by("id").values_list("event_id", flat=True)) == sent
    assert [r.event_id for r in submitted] == [str(i) for i in sent]


def test_a_batch_leaves_out_events_of_a_rolled_back_savepoint(submitted: list[Row]) -> None:
    with batch_events():
        kept = PING.send_event(n=1).metadata.id
        try:
            with transaction.atomic():
                PING.send_event(n=2)
                raise RuntimeError("inner block failed")
        except RuntimeError:
            pass
        with transaction.atomic():
            also_kept = PING.send_event(n=3).metadata.id

    assert list(OutboxMessage.objects.order_by("id").values_list("event_id", flat=True)) == [
        kept,
        also_kept,
    ]
    assert len(submitted) == 2


def test_a_failing_batch_writes_nothing(submitted: list[Row]) -> None:
    def fail() -> None:
        with batch_events():
            PING.send_event(n=1)
            raise RuntimeError("the import failed")

    with pytest.raises(RuntimeError):
        fail()

    assert not OutboxMessage.objects.exists()
    assert submitted == []


def test_a_batch_inside_a_transaction_commits_with_it(submitted: list[Row]) -> None:
    with transaction.atomic():
        with batch_events(), batch_events():  # nested blocks join the outer one
            PING.send_event(n=1)
        assert OutboxMessage.objects.count() == 1
        assert submitted == []
        transaction.set_rollback(True)

    assert not OutboxMessage.objects.exists()
    assert submitted == []


def test_a_batch_whose_transaction_is_marked_for_rollback_writes_nothing(
    submitted: list[Row],
) -> None:
    with batch_events():
        PING.send_event(n=1)
        transaction.set_rollback(True)

    assert not OutboxMessage.objects.exists()
    assert submitted == []
