"""Replaying, discarding and reading dead letters: claims on the database, tasks on memory://."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery.worker import WorkController
from fastavro import parse_schema, schemaless_writer

from events_celery.avro import fingerprint
from events_celery.bus.consume.tasks import DELIVER_EVENTS, RUN_RECEIVER
from events_celery.bus.dead_letters.replay import (
    decode_dead_letter,
    discard_dead_letters,
    replay_dead_letters,
)
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter
from events_celery.conf import bus_settings
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import HEADER_FINGERPRINT, encode_event
from tests.memory_worker import ping_worker_settings, run_memory_worker, wait_until
from tests.task_queue import take_tasks
from tests.testapp.events import ORDER_PLACED, PING, CustomerData, OrderData

pytestmark = pytest.mark.django_db(transaction=True)

AVRO = "application/avro"
TOPIC = "pings"
ORIGIN = f"{TOPIC}/{PING.event_type}"
RECEIVER = "billing.receivers.on_ping"


@pytest.fixture
def service(settings: Any) -> Iterator[str]:
    """This test's service on memory://, subscribed to PING; its task queue is left empty."""
    name = f"replay-{uuid.uuid4().hex[:8]}"
    settings.EVENT_BUS_SERVICE_NAME = name
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_CONSUMER_CONFIG = {TOPIC: {"event_types": [PING.event_type]}}
    yield name
    take_tasks(name)


def ping(n: int, **headers: str) -> Any:
    metadata = EventMetadata.create(PING.event_type, source="replay-tests")
    message = encode_event(PING, metadata, PING.serializer.encode({"n": n}))
    return message.body, {**message.headers, **headers}


def receiver_dead_letter(n: int = 1) -> DeadLetter:
    body, headers = ping(n)
    failure = Failure(
        Reason.RECEIVER_FAILED, "receiver failed after 3 attempt(s): ValueError: x",
        receiver=RECEIVER, attempts=3, origin=ORIGIN,
    )  # fmt: skip
    dead_letter(bus_settings(), body, headers, failure, content_type=AVRO)
    return DeadLetter.objects.get(event_id=headers["ce_id"], receiver=RECEIVER)


def poison_dead_letter(body: bytes, headers: dict[str, Any], error: str) -> DeadLetter:
    failure = Failure(Reason.POISON, error, origin=ORIGIN)
    dead_letter(bus_settings(), body, headers, failure, content_type=AVRO)
    return DeadLetter.objects.filter(event_id=headers["ce_id"]).latest("id")


def test_a_receiver_dead_letter_replays_only_that_receiver_with_fresh_attempts(
    service: str,
) -> None:
    row = receiver_dead_letter(5)

    result = replay_dead_letters(DeadLetter.objects.filter(pk=row.pk))

    assert result.started == (row.pk,)
    assert result.skipped == {}
    [(task, args)] = take_tasks(service)
    assert task == RUN_RECEIVER
    item, receiver, attempt = args
    assert (receiver, attempt) == (RECEIVER, 1)
    assert item["dead_letter"] == row.pk
    assert item["origin"] == ORIGIN
    assert item["headers"] == row.headers
    row.refresh_from_db()
    assert (row.status, row.replays) == ("replaying", 1)


def test_a_second_replay_while_the_first_runs_is_skipped_and_says_so(service: str) -> None:
    row = receiver_dead_letter()
    replay_dead_letters([row])

    second = replay_dead_letters([row])

    assert second.started == ()
    assert "already replaying" in second.skipped[row.pk]
    assert "--force" in second.skipped[row.pk]
    assert len(take_tasks(service)) == 1


def test_two_replays_racing_for_one_row_start_it_once(service: str) -> None:
    rows = [receiver_dead_letter(n) for n in range(20)]
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def replay() -> None:
        barrier.wait()
        try:
            results.append(replay_dead_letters(rows))
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    started = [pk for result in results for pk in result.started]
    assert sorted(started) == sorted(row.pk for row in rows)  # each once, by one of them
    assert len(take_tasks(service)) == 20


def test_force_claims_only_a_replay_older_than_the_stated_time(service: str) -> None:
    row = receiver_dead_letter()
    replay_dead_letters([row])

    fresh = replay_dead_letters([row], force_stale_after=timedelta(minutes=15))
    DeadLetter.objects.filter(pk=row.pk).update(
        status_changed_at=datetime.now(UTC) - timedelta(minutes=20)
    )
    stale = replay_dead_letters([row], force_stale_after=timedelta(minutes=15))

    assert "for less than 0:15:00" in fresh.skipped[row.pk]
    assert stale.started == (row.pk,)
    assert len(take_tasks(service)) == 2
    row.refresh_from_db()
    assert row.replays == 2


def test_replayed_and_discarded_dead_letters_are_not_replayed(service: str) -> None:
    replayed, discarded = receiver_dead_letter(1), receiver_dead_letter(2)
    DeadLetter.objects.filter(pk=replayed.pk).update(status="replayed")
    DeadLetter.objects.filter(pk=discarded.pk).update(status="discarded")

    result = replay_dead_letters(DeadLetter.objects.all())

    assert result.skipped == {replayed.pk: "already replayed", discarded.pk: "already discarded"}
    assert take_tasks(service) == []


def test_only_event_types_the_service_subscribes_to_are_replayed(
    service: str, settings: Any
) -> None:
    row = receiver_dead_letter()
    settings.EVENT_BUS_CONSUMER_CONFIG = {TOPIC: {"event_types": [ORDER_PLACED.event_type]}}

    result = replay_dead_letters([row])

    assert result.skipped[row.pk] == (
        f"{PING.event_type!r} is not an event type this service subscribes to on topic "
        f"{TOPIC!r} (EVENT_BUS_CONSUMER_CONFIG)"
    )
    assert DeadLetter.objects.get().status == "pending"


def test_another_services_dead_letter_is_not_replayed_here(service: str) -> None:
    row = receiver_dead_letter()
    DeadLetter.objects.filter(pk=row.pk).update(service="elsewhere")

    result = replay_dead_letters([row])

    assert result.skipped[row.pk].startswith(
        "belongs to service 'elsewhere': replay it with that service's settings"
    )


def test_a_poison_message_that_still_cannot_be_decoded_stays_pending_with_the_new_error(
    service: str,
) -> None:
    _, headers = ping(3, **{HEADER_FINGERPRINT: "0123456789abcdef"})
    row = poison_dead_letter(b"\xff\xff", headers, "first error")

    result = replay_dead_letters([row])

    assert "still cannot become an event: " in result.skipped[row.pk]
    row.refresh_from_db()
    assert (row.status, row.failures, row.reason) == ("pending", 2, "poison")
    assert "unknown writer schema fingerprint 0123456789abcdef" in row.error
    assert "manage.py event_dead_letters replay" in row.error
    assert take_tasks(service) == []


def test_a_poison_body_under_a_known_schema_that_still_cannot_be_decoded_stays_pending(
    service: str,
) -> None:
    _, headers = ping(3)  # today's fingerprint: the envelope is fine, the body is not
    row = poison_dead_letter(b"\xff\xff\xff", headers, "first error")

    result = replay_dead_letters([row])

    assert "still cannot become an event: " in result.skipped[row.pk]
    assert result.started == ()
    row.refresh_from_db()
    assert (row.status, row.failures, row.reason) == ("pending", 2, "poison")
    assert "cannot decode the Avro payload" in row.error
    assert take_tasks(service) == []


def older_ping_schema() -> dict[str, Any]:
    """PING as an older release wrote it: one more field, which today's PING ignores."""
    schema: dict[str, Any] = json.loads(json.dumps(PING.serializer.schema))
    schema["fields"].append({"name": "note", "type": "string", "default": ""})
    return schema


def older_ping(n: int) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    schema = older_ping_schema()
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), {"n": n, "note": "from an older release"})
    _, headers = ping(n, **{HEADER_FINGERPRINT: fingerprint(schema)})
    return out.getvalue(), headers, schema


def test_a_poison_message_replays_as_a_whole_event_once_its_schema_is_known(
    service: str, settings: Any, tmp_path: Path
) -> None:
    settings.EVENT_BUS_SCHEMA_DIR = str(tmp_path / "before")
    body, headers, schema = older_ping(8)
    row = poison_dead_letter(body, headers, "unknown writer schema fingerprint")
    assert decode_dead_letter(row).error is not None
    # The upgrade: the service now stores the schema the message was written with.
    upgraded = tmp_path / "after"
    upgraded.mkdir()
    (upgraded / f"{PING.event_type}.{fingerprint(schema)}.avsc").write_text(json.dumps(schema))
    settings.EVENT_BUS_SCHEMA_DIR = str(upgraded)

    result = replay_dead_letters([row])

    assert result.started == (row.pk,)
    [(task, args)] = take_tasks(service)
    assert task == DELIVER_EVENTS
    [[item]] = args
    assert item["dead_letter"] == row.pk
    assert decode_dead_letter(row).payload == {"n": 8}


def test_discard_marks_pending_dead_letters_and_keeps_the_rows(service: str) -> None:
    pending, replaying = receiver_dead_letter(1), receiver_dead_letter(2)
    replay_dead_letters([replaying])

    assert discard_dead_letters(DeadLetter.objects.all()) == 1

    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {pending.pk: "discarded", replaying.pk: "replaying"}
    assert replay_dead_letters([pending]).skipped == {pending.pk: "already discarded"}


def test_a_dead_letter_decodes_to_readable_metadata_and_payload(service: str) -> None:
    order = OrderData(
        id=uuid.UUID(int=1),
        customer=CustomerData(id=uuid.UUID(int=2), email="ada@example.org"),
        total=Decimal("12.50"),
        placed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="replay-tests")
    message = encode_event(ORDER_PLACED, metadata, ORDER_PLACED.serializer.encode({"order": order}))
    failure = Failure(Reason.GAVE_UP, "gave up", receiver=RECEIVER)
    dead_letter(bus_settings(), message.body, message.headers, failure, content_type=AVRO)

    decoded = decode_dead_letter(DeadLetter.objects.get())

    assert decoded.error is None
    assert decoded.payload == {
        "order": {
            "id": "00000000-0000-0000-0000-000000000001",
            "customer": {"id": "00000000-0000-0000-0000-000000000002", "email": "ada@example.org"},
            "total": "12.50",
            "placed_at": "2026-01-02T03:04:05+00:00",
            "mode": "AUDIT",
            "note": None,
        }
    }
    assert decoded.metadata is not None
    assert decoded.metadata["id"] == str(metadata.id)
    assert decoded.metadata["event_type"] == ORDER_PLACED.event_type
    json.dumps(decoded.payload)  # readable: plain JSON values


def test_a_dead_letter_that_is_no_event_decodes_to_the_reason(service: str) -> None:
    failure = Failure(Reason.POISON, "bad")
    dead_letter(bus_settings(), b"task: x", {}, failure, content_type="application/x-yaml")

    decoded = decode_dead_letter(DeadLetter.objects.get())

    assert decoded.payload is None
    assert decoded.metadata is None
    assert decoded.error == (
        "content type is 'application/x-yaml'; only 'application/avro' is accepted"
    )


# --- a real worker on memory:// ------------------------------------------------------------

WORKER_SERVICE = "replay-memory"
WORKER_SETTINGS = ping_worker_settings(WORKER_SERVICE, TOPIC)


@pytest.fixture(scope="module")
def module_worker() -> Iterator[WorkController]:
    with run_memory_worker(WORKER_SERVICE, WORKER_SETTINGS) as w:
        yield w


def test_on_a_worker_a_replay_after_the_fix_runs_the_receiver_once_and_a_new_failure_counts(
    module_worker: WorkController,
) -> None:
    runs: list[int] = []
    broken = {"yes": True}

    def on_ping(n: int, from_event_bus: bool, **kwargs: Any) -> None:
        if from_event_bus:
            runs.append(n)
            if broken["yes"]:
                raise ValueError(f"broken receiver (n={n})")

    PING.connect(on_ping, weak=False, dispatch_uid="replay-memory-on-ping")
    try:
        PING.send_event(n=9)
        row = wait_until(lambda: DeadLetter.objects.filter(reason="receiver-failed").first(), "dl")
        assert row.receiver == "replay-memory-on-ping"
        assert runs == [9, 9]  # two attempts

        broken["yes"] = False  # the fix
        assert replay_dead_letters([row], app=module_worker.app).started == (row.pk,)
        wait_until(lambda: DeadLetter.objects.get().status == "replayed", "the replay")
        assert runs == [9, 9, 9]

        broken["yes"] = True  # broken again: the same row, failed twice now
        DeadLetter.objects.update(status="pending")
        replay_dead_letters([row], app=module_worker.app)
        wait_until(lambda: DeadLetter.objects.get().failures == 2, "the second dead-lettering")
    finally:
        PING.disconnect(dispatch_uid="replay-memory-on-ping")
    row = DeadLetter.objects.get()
    assert (row.status, row.replays, row.attempts) == ("pending", 2, 2)
    assert runs == [9, 9, 9, 9, 9]


def test_once_the_broker_refuses_a_replay_the_rest_are_not_tried_and_stay_pending(
    service: str, settings: Any
) -> None:
    rows = [receiver_dead_letter(n) for n in range(3)]
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens there
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 1}

    result = replay_dead_letters(rows)

    assert result.started == ()
    first, *rest = (row.pk for row in rows)
    assert result.skipped[first].startswith("the broker did not take the replay task")
    assert all(result.skipped[pk].startswith("not tried:") for pk in rest)
    assert set(
        DeadLetter.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", "replays")
    ) == {("pending", 0)}
