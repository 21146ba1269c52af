"""Dead letters with real ``celery worker`` processes: rows, replays, and the broker fallback."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import amqp
import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from fastavro import parse_schema, schemaless_writer

from events_celery.avro import fingerprint
from events_celery.bus.dead_letters.replay import replay_dead_letters
from events_celery.metadata import EventMetadata
from events_celery.models import DeadLetter
from events_celery.wire import HEADER_FINGERPRINT, encode_event
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import DOOMED, PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"


def route(*signals: Any) -> dict[str, Any]:
    return {s.event_type: {TOPIC: {"event_key_field": None, "enabled": True}} for s in signals}


def as_service(settings: Any, service: str) -> None:
    """This process acts as ``service``'s operator (replays, imports) from here on."""
    settings.EVENT_BUS_SERVICE_NAME = service
    settings.EVENT_BUS_CONSUMER_CONFIG = {TOPIC: {}}


def test_a_replay_after_the_fix_runs_only_that_receiver_once_and_refuses_a_second_meanwhile(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED)
    sent = DOOMED.send_event(n=21).metadata
    [row] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    assert (row.event_id, row.reason, row.failures) == (sent.id, "receiver-failed", 1)
    assert len(bus.records(service=billing, receiver="doomed")) == 3
    as_service(settings, billing)

    # The fix is deployed; its replay is slow enough to try a second replay meanwhile.
    Path(f"{bus.results}.fixed").write_text("wait")
    first = replay_dead_letters(DeadLetter.objects.filter(pk=row.pk))
    wait_for(lambda: bus.records(service=billing, outcome="started"), "the replay to start")
    second = replay_dead_letters(DeadLetter.objects.filter(pk=row.pk))
    Path(f"{bus.results}.release").touch()

    assert first.started == (row.pk,)
    assert second.started == ()
    assert "already replaying" in second.skipped[row.pk]
    wait_for(lambda: DeadLetter.objects.get(pk=row.pk).status == "replayed", "replayed")
    runs = bus.records(service=billing, receiver="doomed")
    assert [r["outcome"] for r in runs] == ["failed"] * 3 + ["started", "ok"]  # once more
    assert bus.records(service=billing, receiver="on_ping") == []


def test_a_replay_that_fails_again_is_the_same_dead_letter_failed_twice(
    bus: Bus, settings: Any
) -> None:
    billing = bus.service_name("billing")
    bus.start(billing, {TOPIC: {}})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED)
    DOOMED.send_event(n=22)
    [row] = wait_for(lambda: bus.dead_letters(billing), "the dead letter")
    as_service(settings, billing)

    out = io.StringIO()
    call_command("event_dead_letters", "replay", "--id", str(row.pk), stdout=out)

    assert "replay started for 1 dead letter(s)" in out.getvalue()
    wait_for(lambda: DeadLetter.objects.get(pk=row.pk).failures == 2, "the second failure")
    [again] = bus.dead_letters(billing)
    assert (again.pk, again.status, again.replays, again.attempts) == (row.pk, "pending", 1, 3)
    assert len(bus.records(service=billing, receiver="doomed")) == 6  # fresh attempts: 3 more


def older_ping(n: int) -> tuple[bytes, dict[str, str], dict[str, Any]]:
    """A PING as an older release wrote it (one more field): a fingerprint billing lacks."""
    schema: dict[str, Any] = json.loads(json.dumps(PING.serializer.schema))
    schema["fields"].append({"name": "note", "type": "string", "default": ""})
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), {"n": n, "note": "older"})
    metadata = EventMetadata.create(PING.event_type, source="plain-client")
    message = encode_event(PING, metadata, b"")
    return out.getvalue(), {**message.headers, HEADER_FINGERPRINT: fingerprint(schema)}, schema


def test_a_poison_message_replayed_after_the_upgrade_that_knows_its_schema_is_delivered(
    bus: Bus, settings: Any, tmp_path: Path
) -> None:
    billing = bus.service_name("billing")
    before, after = tmp_path / "schemas-before", tmp_path / "schemas-after"
    before.mkdir()
    after.mkdir()
    old = bus.start(billing, {TOPIC: {}}, node="billing-old", env={"TEST_SCHEMA_DIR": str(before)})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(PING)
    PING.send_event(n=0)  # declares the topic exchange
    wait_for(lambda: bus.records(service=billing, n=0), "the first ping")
    body, headers, schema = older_ping(31)
    channel = bus.amqp.channel()
    channel.basic_publish(
        amqp.Message(body, application_headers=headers, content_type="application/avro"),
        exchange=f"{bus.prefix}{TOPIC}",
        routing_key=PING.event_type,
    )
    channel.close()
    [row] = wait_for(lambda: bus.dead_letters(billing), "the poison dead letter")
    assert (row.reason, row.receiver) == ("poison", "")
    assert "unknown writer schema fingerprint" in row.error
    assert "manage.py event_dead_letters replay" in row.error

    # The upgrade: the new release stores the older schema; its workers replace the old ones.
    (after / f"{PING.event_type}.{fingerprint(schema)}.avsc").write_text(json.dumps(schema))
    old.stop()
    bus.start(billing, {TOPIC: {}}, node="billing-new", env={"TEST_SCHEMA_DIR": str(after)})
    as_service(settings, billing)
    settings.EVENT_BUS_SCHEMA_DIR = str(after)
    result = replay_dead_letters(DeadLetter.objects.filter(pk=row.pk))

    assert result.started == (row.pk,)
    [delivered] = wait_for(lambda: bus.records(service=billing, n=31), "the replayed event")
    assert delivered["event_id"] == headers["ce_id"]
    assert delivered["node"] == "billing-new"
    wait_for(lambda: DeadLetter.objects.get(pk=row.pk).status == "replayed", "replayed")


def test_with_the_database_unavailable_dead_letters_wait_on_the_broker_until_imported(
    bus: Bus, settings: Any, tmp_path: Path
) -> None:
    billing = bus.service_name("billing")
    # The worker's database has no tables (as before migrate) or does not exist at all.
    missing = (
        str(tmp_path / "not-migrated.sqlite3")
        if db_connection.vendor == "sqlite"
        else "events_celery_no_such_database"
    )
    bus.start(billing, {TOPIC: {}}, env={"TEST_DB_NAME": missing})
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED, PING)
    PING.send_event(n=0)  # declares the topic exchange
    small = DOOMED.send_event(n=41).metadata
    # Headers near the frame size: with the dead-letter headers added it does not fit a frame,
    # so it waits on the broker with the wire headers only.
    bulky = encode_event(
        DOOMED,
        EventMetadata.create(DOOMED.event_type, source="plain-client"),
        DOOMED.serializer.encode({"n": 42}),
    )
    channel = bus.amqp.channel()
    channel.basic_publish(
        amqp.Message(
            bulky.body,
            application_headers={**bulky.headers, "x-bulky": "b" * 130_000},
            content_type="application/avro",
        ),
        exchange=f"{bus.prefix}{TOPIC}",
        routing_key=DOOMED.event_type,
    )
    channel.close()
    store = f"{billing}.events_celery.dead_letters"
    wait_for(lambda: bus.depth(store) == 2, "two dead letters on the broker")
    assert DeadLetter.objects.count() == 0
    as_service(settings, billing)

    out = io.StringIO()
    call_command("event_dead_letters", "import", stdout=out)

    assert out.getvalue() == f"imported 2 message(s) from {store}\n"
    assert bus.depth(store) == 0
    rows = {str(row.event_id): row for row in bus.dead_letters(billing)}
    assert set(rows) == {str(small.id), bulky.headers["ce_id"]}
    for row in rows.values():
        assert (row.reason, row.receiver, row.status) == (
            "receiver-failed",
            "tests.integration.receivers.handlers.doomed",
            "pending",
        )
        assert row.error.startswith("receiver failed after 3 attempt(s): ValueError: doomed")
        assert row.origin == f"{bus.prefix}{TOPIC}/{DOOMED.event_type}"
    by_n = {DOOMED.serializer.decode(bytes(r.body))["n"]: r for r in rows.values()}
    assert "Traceback" in by_n[41].traceback
    assert by_n[42].traceback == ""  # it did not fit: the wire headers only
    assert "x-bulky" not in by_n[42].headers
    assert len(bus.records(service=billing, receiver="doomed")) == 6  # never re-run
