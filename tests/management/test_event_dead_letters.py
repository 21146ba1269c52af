"""``manage.py event_dead_letters``: list, show, replay, discard and import, on memory://."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from kombu import Connection

from events_celery.bus.broker import topology
from events_celery.bus.consume.handoff import envelope
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter
from events_celery.conf import bus_settings
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import (
    HEADER_DEAD_LETTERED_AT,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_USER_ID,
    encode_event,
)
from tests.bus.conftest import DeadLetterStore
from tests.testapp.events import PING

pytestmark = pytest.mark.django_db(transaction=True)

AVRO = "application/avro"
ORIGIN = f"pings/{PING.event_type}"


@pytest.fixture
def service(settings: Any) -> Iterator[str]:
    name = f"command-{uuid.uuid4().hex[:8]}"
    settings.EVENT_BUS_SERVICE_NAME = name
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}
    yield name
    with Connection("memory://") as connection:
        channel = connection.default_channel
        topology.task_queue(name)(channel).purge()
        topology.dead_letter_queue(name)(channel).purge()


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("event_dead_letters", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def send(n: int, reason: str = Reason.RECEIVER_FAILED, receiver: str | None = "app.on_ping") -> str:
    """Dead-letter a PING; returns where it went."""
    metadata = EventMetadata.create(PING.event_type, source="command-tests")
    message = encode_event(PING, metadata, PING.serializer.encode({"n": n}))
    failure = Failure(reason, f"{reason} for n={n}", receiver=receiver, origin=ORIGIN, attempts=3)
    return dead_letter(bus_settings(), message.body, message.headers, failure, content_type=AVRO)


def make(n: int, reason: str = Reason.RECEIVER_FAILED, receiver: str | None = "app.on_ping") -> Any:
    assert send(n, reason, receiver) == "database"
    return DeadLetter.objects.latest("id")


def test_list_prints_one_line_per_dead_letter_newest_first(service: str) -> None:
    first, second = make(1), make(2, Reason.POISON, receiver=None)

    out, _ = run("list")

    lines = out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [second.pk, first.pk]
    assert "poison" in lines[0]
    assert "(whole event)" in lines[0]
    assert "poison for n=2" in lines[0]
    assert "app.on_ping" in lines[1]


def test_list_filters_by_reason_receiver_event_type_status_since_and_id(service: str) -> None:
    failed, poison, other = make(1), make(2, Reason.POISON, receiver=None), make(3)
    DeadLetter.objects.filter(pk=other.pk).update(
        status="discarded", last_failed_at=datetime.now(UTC) - timedelta(days=3)
    )

    def ids(*args: str) -> list[int]:
        out, _ = run("list", *args)
        return sorted(int(line.split()[0]) for line in out.splitlines() if line[0].isdigit())

    assert ids("--reason", "poison") == [poison.pk]
    assert ids("--receiver", "") == [poison.pk]
    assert ids("--receiver", "app.on_ping") == [failed.pk, other.pk]
    assert ids("--event-type", PING.event_type) == [failed.pk, poison.pk, other.pk]
    assert ids("--status", "discarded") == [other.pk]
    assert ids("--since", "2h") == [failed.pk, poison.pk]
    assert ids("--since", (datetime.now(UTC) - timedelta(days=5)).date().isoformat()) == [
        failed.pk,
        poison.pk,
        other.pk,
    ]
    assert ids("--id", str(failed.pk), "--id", str(other.pk)) == [failed.pk, other.pk]


def test_list_says_when_nothing_matches(service: str) -> None:
    assert run("list")[0] == "no dead letters match\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--reason", "boom"), "--reason 'boom' is not a reason; use one of: "),
        (("list", "--status", "done"), "--status 'done' is not a status; use one of: "),
        (("list", "--since", "yesterday"), "--since 'yesterday' is neither a duration"),
        (("replay",), "replay needs a filter"),
        (("discard",), "discard needs a filter"),
        (("show", "--id", "999999"), "no dead letters of service"),
        (("replay", "--force", "soon", "--all"), "'soon' is not a duration"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(
    service: str, args: tuple[str, ...], message: str
) -> None:
    make(1)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("'", "'")):
        run(*args)


def test_show_prints_the_row_and_its_decoded_payload(service: str) -> None:
    row = make(42)

    out, _ = run("show", "--id", str(row.pk))

    assert f"dead letter {row.pk}" in out
    assert "reason:        receiver-failed (receiver used up its attempts)" in out
    assert f"origin:        {ORIGIN}" in out
    assert '"n": 42' in out
    assert f"ce_id: {row.event_id}" in out


def test_replay_starts_the_matching_pending_dead_letters_and_reports_skips(service: str) -> None:
    rows = [make(n) for n in range(25)]
    DeadLetter.objects.filter(pk=rows[0].pk).update(status="replaying")

    out, err = run("replay", "--reason", "receiver-failed", "--status", "pending")
    again, _ = run("replay", "--id", str(rows[1].pk), "--status", "replaying")

    assert "replay started for 24 dead letter(s)" in out
    assert "24/24\n" in err  # the progress bar, on stderr
    assert f"skipped {rows[1].pk}: already replaying" in again
    assert DeadLetter.objects.filter(status="replaying").count() == 25


def test_replay_force_takes_back_a_stale_replay(service: str) -> None:
    row = make(1)
    DeadLetter.objects.filter(pk=row.pk).update(
        status="replaying", status_changed_at=datetime.now(UTC) - timedelta(hours=1)
    )

    plain, _ = run("replay", "--id", str(row.pk), "--status", "replaying")
    forced, _ = run("replay", "--id", str(row.pk), "--force")

    assert "replay started for 0" in plain
    assert "replay started for 1 dead letter(s)" in forced


def test_discard_marks_pending_rows_and_keeps_them(service: str) -> None:
    keep, drop = make(1), make(2, Reason.POISON, receiver=None)

    out, _ = run("discard", "--reason", "poison")

    assert out == "discarded 1 dead letter(s)\n"
    assert dict(DeadLetter.objects.values_list("pk", "status")) == {
        keep.pk: "pending",
        drop.pk: "discarded",
    }


def test_import_moves_the_broker_queue_into_the_table_once(
    service: str, table_missing_then_back: Any, memory_store_of: Any
) -> None:
    store = memory_store_of(service)
    with table_missing_then_back():
        assert send(7) == "broker"  # the table is missing: this goes to the broker queue
    assert DeadLetter.objects.count() == 0
    [parked] = store.peek()
    assert parked.headers[HEADER_REASON] == "receiver-failed"
    assert parked.headers[HEADER_RECEIVER] == "app.on_ping"

    out, _ = run("import")
    again, _ = run("import")

    assert out == f"imported 1 message(s) from {service}.events_celery.dead_letters\n"
    assert again == f"imported 0 message(s) from {service}.events_celery.dead_letters\n"
    row = DeadLetter.objects.get()
    assert (row.reason, row.receiver, row.attempts) == ("receiver-failed", "app.on_ping", 3)
    assert row.error == "receiver-failed for n=7"
    assert row.origin == ORIGIN
    assert row.headers["ce_type"] == PING.event_type
    assert HEADER_DEAD_LETTERED_AT not in row.headers
    assert PING.serializer.decode(bytes(row.body)) == {"n": 7}
    assert store.peek() == []


def test_import_unpacks_a_task_message_the_broker_dead_lettered(service: str) -> None:
    metadata = EventMetadata.create(PING.event_type, source="command-tests")
    message = encode_event(PING, metadata, PING.serializer.encode({"n": 5}))
    item = envelope(message.headers, message.body, origin=ORIGIN)
    death = {
        "queue": f"{service}.events_celery.tasks",
        "reason": "rejected",
        "count": 1,
        "exchange": f"{service}.events_celery.tasks",
        "routing-keys": [f"{service}.events_celery.tasks"],
        "time": datetime(2026, 11, 29, 6, 0, tzinfo=UTC),
    }
    with Connection("memory://") as connection:
        producer = connection.Producer()
        producer.publish(
            [[item, "app.on_ping", 3], {}, {}],
            exchange=topology.dead_letter_exchange(service),
            routing_key="",
            serializer="json",
            headers={"task": "events_celery.run_receiver", "x-death": [death]},
            declare=[topology.dead_letter_queue(service)],
        )

    out, _ = run("import")

    assert "imported 1 message(s)" in out
    row = DeadLetter.objects.get()
    assert (row.reason, row.receiver, row.attempts) == ("receiver-failed", "app.on_ping", 3)
    assert row.event_id == metadata.id
    assert row.origin == ORIGIN
    assert row.last_failed_at == death["time"]
    assert "dead-lettered by RabbitMQ from queue" in row.error
    assert "run_receiver task of receiver app.on_ping, attempt 3" in row.error
    assert PING.serializer.decode(bytes(row.body)) == {"n": 5}


def test_import_of_a_rejected_task_whose_event_cannot_be_read_names_it_poison(
    service: str,
) -> None:
    """The task was rejected because its event was undecodable and could not be stored."""
    metadata = EventMetadata.create(PING.event_type, source="command-tests")
    message = encode_event(PING, metadata, b"\xff\xff\xff")
    item = envelope(message.headers, message.body, origin=ORIGIN)
    with Connection("memory://") as connection:
        connection.Producer().publish(
            [[[item]], {}, {}],
            exchange=topology.dead_letter_exchange(service),
            routing_key="",
            serializer="json",
            headers={"task": "events_celery.deliver_events", "x-death": [{"reason": "rejected"}]},
            declare=[topology.dead_letter_queue(service)],
        )

    out, _ = run("import")

    assert "imported 1 message(s)" in out
    row = DeadLetter.objects.get()
    assert (row.reason, row.receiver, row.event_id) == ("poison", "", metadata.id)
    assert "cannot decode the Avro payload" in row.error
    assert row.origin == ORIGIN


def test_import_with_nothing_on_the_broker_imports_nothing(service: str) -> None:
    assert run("import")[0] == f"imported 0 message(s) from {service}.events_celery.dead_letters\n"


@pytest.fixture
def memory_store_of(settings: Any) -> Any:
    def store(service: str) -> Any:
        return _Peekable(DeadLetterStore("memory://", service))

    return store


class _Peekable:
    def __init__(self, store: DeadLetterStore) -> None:
        self.store = store

    def peek(self) -> list[Any]:
        """The messages in the store, put back afterwards."""
        with Connection("memory://") as connection:
            queue = topology.dead_letter_queue(self.store.service)(connection.default_channel)
            queue.declare()
            seen = []
            while (message := queue.get(no_ack=False)) is not None:
                seen.append(message)
            for message in seen:
                message.requeue()
            return seen


@pytest.fixture
def table_missing_then_back() -> Any:
    from contextlib import contextmanager

    from django.db import connection

    from tests.bus.conftest import _AWAY

    @contextmanager
    def gone() -> Iterator[None]:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {DeadLetter._meta.db_table} RENAME TO {_AWAY}")
        try:
            yield
        finally:
            connection.close()
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {_AWAY} RENAME TO {DeadLetter._meta.db_table}")

    return gone


def _rejected_whole(service: str, queue: str, user_id: str, claimed: str) -> None:
    """A PING the broker dead-lettered from ``queue`` (no reason of ours recorded), published
    by ``user_id``, with a header that claims ``claimed``."""
    metadata = EventMetadata.create(PING.event_type, source="command-tests")
    message = encode_event(PING, metadata, PING.serializer.encode({"n": 9}))
    death = {"queue": queue, "reason": "rejected", "count": 1, "exchange": "pings"}
    with Connection("memory://") as connection:
        connection.Producer().publish(
            message.body,
            exchange=topology.dead_letter_exchange(service),
            routing_key="",
            content_type=AVRO,
            content_encoding="binary",
            headers={**message.headers, HEADER_USER_ID: claimed, "x-death": [death]},
            user_id=user_id,
            declare=[topology.dead_letter_queue(service)],
        )


def test_import_keeps_the_publisher_the_broker_checked_not_a_header_claiming_one(
    service: str,
) -> None:
    _rejected_whole(service, f"{service}.pings", user_id="shop", claimed="payments")

    run("import")

    row = DeadLetter.objects.get()
    assert row.reason == "poison"
    assert row.headers[HEADER_USER_ID] == "shop"


def test_import_keeps_the_publisher_a_partition_message_carries_from_its_router(
    service: str, settings: Any
) -> None:
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"order_by_key": True}}
    # The router publishes as the service's own user, the event's publisher in the header.
    _rejected_whole(service, f"{service}.pings.ordered.3", user_id=service, claimed="shop")

    run("import")

    assert DeadLetter.objects.get().headers[HEADER_USER_ID] == "shop"
