"""``manage.py event_bus_health`` against the real RabbitMQ: each failure, and the healthy bus."""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.utils import timezone
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.bus.publish import claims
from events_celery.conf import bus_settings
from events_celery.models import DeadLetter, OutboxMessage
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


def health(*args: str) -> tuple[int, str]:
    """Run the command; its exit status and its output."""
    out = io.StringIO()
    try:
        call_command("event_bus_health", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def service(rabbitmq_url: str, settings: Any) -> Iterator[str]:
    """A service of this test that publishes and consumes PING on a topic of its own."""
    name = f"health-{uuid.uuid4().hex[:8]}"
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.EVENT_BUS_SERVICE_NAME = name
    settings.EVENT_BUS_TOPIC_PREFIX = f"{name}."
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"event_types": [PING.event_type]}}
    try:
        yield name
    finally:
        wanted = topology.service_topology(bus_settings())
        with Connection(rabbitmq_url) as connection:
            channel: Any = connection.default_channel
            for queue in wanted.queues:
                channel.queue_delete(queue.name)
                if queue.exchange is not None and queue.exchange.name:
                    channel.exchange_delete(queue.exchange.name)
            for exchange in wanted.exchanges:
                channel.exchange_delete(exchange.name)


def declare_topology(rabbitmq_url: str) -> None:
    with Connection(rabbitmq_url) as connection:
        declaring.declare(connection, topology.service_topology(bus_settings()))


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_healthy_bus_exits_0_with_one_ok_line(service: str, rabbitmq_url: str) -> None:
    declare_topology(rabbitmq_url)

    status, out = health()

    assert status == 0
    assert out.startswith("OK: broker: ")
    assert "topology: " in out
    assert "outbox: empty" in out
    assert "dead-letters: 0 pending" in out
    assert out.count("\n") == 1


def test_an_unreachable_broker_fails_within_the_timeout(service: str, settings: Any) -> None:
    settings.CELERY_BROKER_URL = f"amqp://guest:secret@127.0.0.1:{closed_port()}//"

    status, out = health("--timeout", "2", "--skip", "outbox", "--skip", "dead-letters")

    assert status == 1
    assert out.startswith("FAIL: broker: amqp://guest:**@127.0.0.1:")
    assert "unreachable" in out
    assert "secret" not in out
    assert "topology: not checked: the broker is unreachable" in out


def test_a_missing_topology_names_what_is_missing(service: str) -> None:
    status, out = health("--skip", "outbox", "--skip", "dead-letters")

    assert status == 1
    assert out.startswith("FAIL: topology: missing ")
    assert f"exchange '{service}.pings'" in out
    assert f"queue '{service}.pings'" in out
    assert "declare_event_topology" in out
    assert "broker:" not in out  # the broker check passed


def test_a_partly_declared_topology_names_only_the_missing_queue(
    service: str, rabbitmq_url: str
) -> None:
    declare_topology(rabbitmq_url)
    with Connection(rabbitmq_url) as connection:
        connection.default_channel.queue_delete(f"{service}.pings")

    status, out = health("--skip", "outbox", "--skip", "dead-letters")

    assert status == 1
    assert out.strip() == (
        f"FAIL: topology: missing queue '{service}.pings' (run manage.py "
        "declare_event_topology, or start a worker of this service)"
    )


def add_outbox_row(age: float) -> None:
    OutboxMessage.objects.create(
        event_id=uuid.uuid4(),
        event_type=PING.event_type,
        topic="pings",
        headers="{}",
        body=b"\x02",
        created_at=timezone.now() - timedelta(seconds=age),
        locked_until=timezone.now() + timedelta(hours=1),
        locked_by="a test",
    )


def test_an_outbox_row_older_than_the_limit_fails(service: str, rabbitmq_url: str) -> None:
    declare_topology(rabbitmq_url)
    add_outbox_row(age=120)

    status, out = health("--max-outbox-age", "60")

    assert status == 1
    assert out.startswith("FAIL: outbox: 1 row(s) unpublished, the oldest for 12")
    assert "(limit 60s)" in out


def test_a_young_outbox_row_passes(service: str, rabbitmq_url: str) -> None:
    declare_topology(rabbitmq_url)
    add_outbox_row(age=10)

    status, out = health("--max-outbox-age", "60")

    assert status == 0
    assert "outbox: 1 row(s), the oldest 1" in out


def add_dead_letter(service: str, *, age: float, status: str = "pending") -> None:
    when = timezone.now() - timedelta(seconds=age)
    DeadLetter.objects.create(
        service=service,
        event_id=uuid.uuid4(),
        event_type=PING.event_type,
        reason=DeadLetter.Reason.RECEIVER_FAILED,
        body=b"\x02",
        first_failed_at=when,
        last_failed_at=when,
        status=status,
    )


def test_new_dead_letters_above_the_limit_fail(service: str, rabbitmq_url: str) -> None:
    declare_topology(rabbitmq_url)
    for _ in range(3):
        add_dead_letter(service, age=30)
    add_dead_letter(service, age=30, status="discarded")  # handled: not counted
    add_dead_letter(service, age=3600)  # before the window
    add_dead_letter("another-service", age=30)

    failing, out = health("--window", "300", "--max-new-dead-letters", "2")
    passing, _ = health("--window", "300", "--max-new-dead-letters", "3")

    assert failing == 1
    assert out.strip() == (
        "FAIL: dead-letters: 3 pending dead letter(s) in the last 300s (limit 2); see them "
        "with manage.py event_dead_letters list --status pending"
    )
    assert passing == 0


def test_dead_letters_waiting_in_the_broker_queue_fail_and_name_the_import(
    service: str, rabbitmq_url: str
) -> None:
    declare_topology(rabbitmq_url)
    queue = topology.dead_letter_queue(service)
    with Connection(rabbitmq_url) as connection:
        producer = connection.Producer()
        for _ in range(2):
            producer.publish(b"x", routing_key=queue.name, declare=[queue], retry=False)
    try:
        status, out = health()
    finally:
        with Connection(rabbitmq_url) as connection:
            connection.default_channel.queue_delete(queue.name)
            connection.default_channel.exchange_delete(queue.exchange.name)

    assert status == 1
    assert (
        f"2 more wait in the broker queue {queue.name!r} (written while the database was "
        "unavailable): run manage.py event_dead_letters import"
    ) in out


def test_json_gives_every_check_and_the_reason(service: str) -> None:
    add_dead_letter(service, age=1)

    status, out = health("--json")

    report = json.loads(out)
    assert status == 1
    assert report["ok"] is False
    assert set(report["checks"]) == {"broker", "topology", "outbox", "dead-letters"}
    assert report["checks"]["broker"]["ok"] is True
    assert report["checks"]["topology"]["ok"] is False
    assert report["checks"]["outbox"] == {"ok": True, "detail": "empty"}
    assert report["reason"].startswith("topology: missing ")
    assert "; dead-letters: 1 pending dead letter(s)" in report["reason"]


def test_json_of_a_healthy_bus_has_no_reason(service: str, rabbitmq_url: str) -> None:
    declare_topology(rabbitmq_url)

    status, out = health("--json")

    assert status == 0
    assert json.loads(out)["ok"] is True
    assert json.loads(out)["reason"] is None


def test_invalid_settings_fail_naming_the_check_ids(service: str, settings: Any) -> None:
    settings.EVENT_BUS_QUEUE_TYPE = "lazy"

    status, out = health()

    assert status == 1
    assert out.startswith("FAIL: settings: invalid (E")


def test_invalid_settings_give_the_one_line_from_the_command_line_too(
    service: str, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # manage.py runs the system checks before a command, unless the command opts out: a probe
    # must print its one line, not Django's report of the checks.
    settings.EVENT_BUS_QUEUE_TYPE = "lazy"

    with pytest.raises(SystemExit) as exit:
        execute_from_command_line(["manage.py", "event_bus_health", "--json"])

    assert exit.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["reason"].startswith("settings: invalid (E")


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("--timeout", "0", "seconds"),
        ("--window", "-5", "seconds"),
        ("--max-new-dead-letters", "-1", "count"),
    ],
)
def test_a_bad_option_value_is_refused_naming_it(option: str, value: str, kind: str) -> None:
    with pytest.raises(CommandError, match=f"argument {option}: invalid {kind} value: '{value}'"):
        call_command("event_bus_health", option, value)


def test_rows_refused_for_permissions_fail_naming_their_reason(service: str) -> None:
    add_outbox_row(age=1)
    add_outbox_row(age=1)
    add_outbox_row(age=1)
    first, second, third = OutboxMessage.objects.order_by("id").values_list("id", flat=True)
    reason = "403 ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'u'"
    claims.set_aside(bus_settings(), {first: reason, second: reason})
    claims.release(bus_settings(), [third], retry_in=0, refused={third: "basic.nack"})

    status, out = health("--skip", "broker", "--skip", "topology", "--skip", "dead-letters")

    assert status == 1
    assert out.splitlines()[0] == (
        f"FAIL: outbox: 2 row(s) set aside: the broker refused them for permissions: {reason} "
        "(2 row(s)). Once the permissions are fixed, manage.py relay_events --retry-refused "
        "publishes them"
    )
