"""Management commands that need no broker: schemas and ``show_event_bus --offline``."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from events_celery import registry
from events_celery.avro import fingerprint
from events_celery.bus.publish import claims, outbox
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError
from events_celery.models import DeadLetter, OutboxMessage
from events_celery.testing import isolated_registry
from tests.testapp.events import ORDER_PLACED, PING


def run(*args):
    """Run a command; return what it wrote to stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def add_required_field(path, name):
    """Edit a stored schema: give the order record a field without default."""
    schema = json.loads(path.read_text())
    schema["fields"][0]["type"]["fields"].append({"name": name, "type": "string"})
    path.write_text(json.dumps(schema, indent=2))
    return schema


# --- generate_avro_schemas ------------------------------------------------------------------


def test_generate_writes_one_avsc_per_event_type(tmp_path):
    out, _ = run("generate_avro_schemas", "--dir", str(tmp_path))

    expected = {f"{signal.event_type}.avsc" for signal in registry.all()}
    assert {path.name for path in tmp_path.iterdir()} == expected
    golden = tmp_path / f"{ORDER_PLACED.event_type}.avsc"
    assert json.loads(golden.read_text()) == ORDER_PLACED.serializer.schema
    assert f"wrote {golden}" in out


def test_generate_only_the_named_event_types(tmp_path):
    run("generate_avro_schemas", PING.event_type, "--dir", str(tmp_path))

    assert [path.name for path in tmp_path.iterdir()] == [f"{PING.event_type}.avsc"]


def test_generate_again_reports_unchanged(tmp_path):
    run("generate_avro_schemas", PING.event_type, "--dir", str(tmp_path))

    out, _ = run("generate_avro_schemas", PING.event_type, "--dir", str(tmp_path))

    assert out.strip() == f"unchanged {tmp_path / f'{PING.event_type}.avsc'}"


def test_generate_without_any_event_is_an_error(tmp_path):
    with isolated_registry() as events:
        for signal in events.all():
            events.unregister(signal.event_type)

        with pytest.raises(CommandError, match="no events are defined"):
            run("generate_avro_schemas", "--dir", str(tmp_path))


def test_regenerating_keeps_the_previous_schema_by_fingerprint(tmp_path):
    run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path))
    golden = tmp_path / f"{ORDER_PLACED.event_type}.avsc"
    previous = add_required_field(golden, "gift_message")

    run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path), "--force")

    kept = tmp_path / f"{ORDER_PLACED.event_type}.{fingerprint(previous)}.avsc"
    assert json.loads(kept.read_text()) == previous
    assert json.loads(golden.read_text()) == ORDER_PLACED.serializer.schema


# --- check_avro_schemas ---------------------------------------------------------------------


def test_check_passes_right_after_generate(tmp_path):
    run("generate_avro_schemas", "--dir", str(tmp_path))

    out, err = run("check_avro_schemas", "--dir", str(tmp_path))

    for signal in registry.all():
        assert f"{signal.event_type}: compatible" in out
    assert err == ""


def test_check_fails_naming_the_event_type_and_the_field(tmp_path):
    run("generate_avro_schemas", "--dir", str(tmp_path))
    add_required_field(tmp_path / f"{ORDER_PLACED.event_type}.avsc", "gift_message")

    with pytest.raises(CommandError) as excinfo:
        run("check_avro_schemas", "--dir", str(tmp_path))

    message = str(excinfo.value)
    assert "incompatible with stored schemas" in message
    assert f"{ORDER_PLACED.event_type}: field 'order.gift_message'" in message
    assert PING.event_type not in message


def test_check_of_other_event_types_ignores_the_broken_one(tmp_path):
    run("generate_avro_schemas", "--dir", str(tmp_path))
    add_required_field(tmp_path / f"{ORDER_PLACED.event_type}.avsc", "gift_message")

    out, _ = run("check_avro_schemas", PING.event_type, "--dir", str(tmp_path))

    assert out.strip() == f"{PING.event_type}: compatible"


def test_check_still_fails_after_regenerating_over_an_incompatible_schema(tmp_path):
    run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path))
    add_required_field(tmp_path / f"{ORDER_PLACED.event_type}.avsc", "gift_message")
    run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path), "--force")

    with pytest.raises(CommandError, match=r"order\.gift_message"):
        run("check_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path))


def test_check_without_stored_schema_fails_and_says_to_generate(tmp_path):
    with pytest.raises(CommandError) as raised:
        run("check_avro_schemas", PING.event_type, "--dir", str(tmp_path))

    assert f"{PING.event_type}: no stored schema yet; run generate_avro_schemas" in str(
        raised.value
    )


# --- show_event_bus --offline ---------------------------------------------------------------


@pytest.fixture
def routed(settings):
    settings.EVENT_BUS_SERVICE_NAME = "shop"
    settings.EVENT_BUS_TOPIC_PREFIX = "prod."
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": "order.id"}},
        PING.event_type: {"pings": {"enabled": False}},
    }
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"event_types": [ORDER_PLACED.event_type]},
        "pings": {},
    }
    return settings


@pytest.mark.django_db
def test_show_event_bus_offline_prints_what_is_published_and_consumed(routed):
    now = timezone.now()
    for service in ("shop", "another-service"):
        DeadLetter.objects.create(
            service=service, reason="poison", body=b"", first_failed_at=now, last_failed_at=now
        )

    out, _ = run("show_event_bus", "--offline")
    lines = out.splitlines()

    assert lines[0] == "service: shop"
    assert "publish mode: outbox" in lines
    assert "outbox: 0 unpublished" in lines
    assert (
        f"  {ORDER_PLACED.event_type} -> topic orders (exchange prod.orders key=order.id; "
        "unrouted parked: ?)"
    ) in lines
    assert not any(line.startswith(f"  {PING.event_type} -> topic") for line in lines)
    assert (
        f"  topic orders -> queue shop.orders [quorum] ({ORDER_PLACED.event_type}; ready: ?)"
    ) in lines
    assert "  topic pings -> queue shop.pings [quorum] (all event types (#); ready: ?)" in lines
    assert "receiver tasks: shop.events_celery.tasks (ready: ?)" in lines
    assert (
        "dead letters: 1 pending, 0 replaying (manage.py event_dead_letters list); broker queue "
        "shop.events_celery.dead_letters (ready: ?; manage.py event_dead_letters import moves "
        "them in)"
    ) in lines
    assert f"events defined here: {len(registry)}" in lines
    assert f"  {ORDER_PLACED.event_type} (0 receiver(s))" in lines


@pytest.mark.django_db
def test_show_event_bus_never_prints_the_broker_password(routed):
    routed.CELERY_BROKER_URL = "amqp://shop:s3cret-pass@rabbit.internal:5672/prod"

    out, _ = run("show_event_bus", "--offline")

    assert "s3cret-pass" not in out
    assert "rabbit.internal" in out


@pytest.mark.django_db
def test_show_event_bus_with_nothing_routed(settings):
    out, _ = run("show_event_bus", "--offline")

    assert "publishes:\nconsumes:\nevents defined here:" in out
    assert "dead letters" not in out


def test_show_event_bus_refuses_broken_settings(settings):
    settings.EVENT_BUS_QUEUE_TYPE = "mirrored"

    with pytest.raises(ConfigurationError, match="E010"):
        run("show_event_bus", "--offline")


def test_generate_refuses_to_overwrite_an_incompatible_stored_schema(tmp_path):
    run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path))
    golden = tmp_path / f"{ORDER_PLACED.event_type}.avsc"
    stored = add_required_field(golden, "gift_message")

    with pytest.raises(CommandError, match=r"(?s)order\.gift_message.*--force"):
        run("generate_avro_schemas", ORDER_PLACED.event_type, "--dir", str(tmp_path))

    assert json.loads(golden.read_text()) == stored


@pytest.mark.parametrize("command", ["generate_avro_schemas", "check_avro_schemas"])
def test_an_unknown_event_type_is_a_command_error_naming_it(command, tmp_path):
    with pytest.raises(CommandError, match=r"org\.example\.shop\.order\.plaaced\.v1"):
        run(command, "org.example.shop.order.plaaced.v1", "--dir", str(tmp_path))


def test_declare_topology_of_a_publish_only_service_declares_no_consumer_queues(settings):
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}

    out, _ = run("declare_event_topology")

    assert out.splitlines() == [
        "declared exchange pings (topic)",
        "declared queue pings.unrouted",
    ]


def test_declare_topology_of_a_consuming_service_declares_its_queues(settings):
    settings.CELERY_BROKER_URL = "memory://"
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}

    out, _ = run("declare_event_topology")

    assert "declared queue tests.pings" in out
    assert "declared queue tests.events_celery.tasks" in out
    assert "declared queue tests.events_celery.dead_letters" in out


@pytest.mark.django_db
def test_show_event_bus_names_rows_refused_for_permissions_apart_from_other_refusals(routed):
    now = timezone.now()
    fields = {"event_type": PING.event_type, "topic": "pings", "headers": "{}", "body": b""}
    rows = [
        OutboxMessage.objects.create(
            event_id=uuid.uuid4(), created_at=now, locked_until=now, locked_by="x", **fields
        )
        for _ in range(4)
    ]
    settings = bus_settings()
    topic = "403 ACCESS_REFUSED - access to topic 'k' in exchange 'x' in vhost '/' refused"
    exchange = "403 ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused"
    claims.set_aside(settings, {rows[0].id: topic, rows[1].id: exchange, rows[2].id: topic})
    OutboxMessage.objects.filter(id=rows[3].id).update(
        attempts=outbox.MAX_REFUSALS, last_error="the broker refused it (basic.nack)"
    )

    out, _ = run("show_event_bus", "--offline")

    line = next(x for x in out.splitlines() if x.startswith("outbox:"))
    assert line.startswith("outbox: 4 unpublished, oldest ")
    assert line.endswith(
        f"s old, 1 refused by the broker; 3 row(s) set aside: the broker refused them for "
        f"permissions: {topic} (2 row(s)); {exchange} (1 row(s)). Once the permissions are "
        "fixed, manage.py relay_events --retry-refused publishes them"
    )
