"""The bus over TLS with certificate login (EXTERNAL), on a private RabbitMQ node.

The node verifies every client's certificate (``verify_peer``, ``fail_if_no_peer_cert``) and
logs a client in as the broker user its certificate's common name names. The certificates are
made for this run (:mod:`tests.faults.tls`). Publishing (direct and outbox), the relay, a real
Celery worker and every command that talks to the broker work over it; consume_events exits
when the broker's certificate cannot be verified instead of retrying for good; a certificate for
another name, an unknown CA and an unknown client are refused with a ``BrokerTLSError`` that
names the fix, and are not retried as if the broker were down.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from kombu import Connection, Queue

from events_celery import PublishError
from events_celery.bus.broker.retrying import retrying_publisher
from events_celery.bus.publish import background, direct
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.contrib.openedx import require_openedx_events
from tests.faults.node import RabbitMQNode
from tests.faults.tls import TLSFiles, make_tls_files
from tests.integration.conftest import open_bus, wait_for
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A private node with a TLS listener and a broker user for the client certificate."""
    files = make_tls_files(tmp_path_factory.mktemp("tls-certs"))
    node = RabbitMQNode(tmp_path_factory.mktemp("rabbitmq-tls"), tls=files)
    try:
        node.start()
    except (RuntimeError, OSError) as exc:
        node.shutdown()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot start a private RabbitMQ node with TLS: {exc}")
        pytest.skip(f"cannot start a private RabbitMQ node with TLS: {exc}")
    try:
        user = files.client_user
        node.ctl("add_user", user, secrets.token_hex(8))
        node.ctl("clear_password", user)  # it logs in by its certificate only
        node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield node
    finally:
        node.shutdown()


def client_options(files: TLSFiles, **changes: Any) -> dict[str, Any]:
    options = {
        "ca_certs": str(files.ca),
        "certfile": str(files.client.cert),
        "keyfile": str(files.client.key),
    }
    options.update(changes)
    return options


@pytest.fixture
def over_tls(tls_node: RabbitMQNode, settings: Any) -> Iterator[Any]:
    """This process's settings: Celery's broker is the node's TLS listener, EXTERNAL login."""
    assert tls_node.tls is not None
    settings.CELERY_BROKER_URL = tls_node.tls_url()
    settings.CELERY_BROKER_USE_SSL = client_options(tls_node.tls)
    settings.CELERY_BROKER_LOGIN_METHOD = "EXTERNAL"
    settings.EVENT_BUS_SERVICE_NAME = f"tls-{secrets.token_hex(4)}"
    settings.EVENT_BUS_TOPIC_PREFIX = f"tls-{secrets.token_hex(4)}."
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 2.0
    settings.EVENT_BUS_OUTBOX_LEASE = 8.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 3, "interval_step": 0.1}
    yield settings
    background.stop_background_publisher()
    retrying_publisher(bus_settings()).close()
    current = direct._publishers.peek()
    if current is not None:
        current.close()


@pytest.fixture
def probe(tls_node: RabbitMQNode, over_tls: Any) -> Iterator[Queue]:
    """A queue bound to the test's topic exchange, read over the node's plain listener."""
    exchange = f"{over_tls.EVENT_BUS_TOPIC_PREFIX}pings"
    queue = Queue(f"probe-{secrets.token_hex(4)}", routing_key="#")
    with Connection(tls_node.url) as plain:
        call_command("declare_event_topology", stdout=io.StringIO())  # over TLS
        channel = plain.default_channel
        channel.queue_declare(queue.name)
        channel.queue_bind(queue.name, exchange, routing_key="#")
        yield queue
        channel.queue_delete(queue.name)
        channel.exchange_delete(exchange)
        channel.exchange_delete(f"{exchange}.unrouted")
        channel.queue_delete(f"{exchange}.unrouted")


def taken(node: RabbitMQNode, queue: Queue, count: int) -> list[dict[str, Any]]:
    """The headers of ``count`` messages of ``queue`` (waits for them)."""
    found: list[dict[str, Any]] = []
    with Connection(node.url) as plain:
        bound = queue(plain.default_channel)

        def more() -> bool:
            while (message := bound.get(no_ack=True)) is not None:
                found.append(dict(message.headers))
            return len(found) >= count

        wait_for(more, f"{count} message(s) in {queue.name}")
    return found


def tls_connections(node: RabbitMQNode) -> set[tuple[str, str, str]]:
    """(user, ssl, auth mechanism) of the node's client connections."""
    output = node.ctl(
        "list_connections", "user", "ssl", "auth_mechanism", "--no-table-headers", "--quiet"
    )
    return {tuple(line.split()) for line in output.splitlines() if line.strip()}  # type: ignore[misc]


def test_direct_publish_goes_over_tls_with_certificate_login(
    tls_node: RabbitMQNode, over_tls: Any, probe: Queue
) -> None:
    over_tls.EVENT_BUS_PUBLISH_MODE = "direct"

    sent = PING.send_event(n=1).metadata.id

    assert [h["ce_id"] for h in taken(tls_node, probe, 1)] == [str(sent)]
    assert tls_node.tls is not None
    assert (tls_node.tls.client_user, "true", "EXTERNAL") in tls_connections(tls_node)


def test_the_outbox_publishes_in_the_background_over_tls(
    tls_node: RabbitMQNode, over_tls: Any, probe: Queue
) -> None:
    over_tls.EVENT_BUS_PUBLISH_MODE = "outbox"

    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in range(5)]

    assert [h["ce_id"] for h in taken(tls_node, probe, 5)] == sent
    wait_for(lambda: not OutboxMessage.objects.exists(), "the outbox to be empty")


def test_relay_events_relays_over_tls(
    tls_node: RabbitMQNode, over_tls: Any, probe: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    over_tls.EVENT_BUS_PUBLISH_MODE = "outbox"
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in range(3)]
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    out = io.StringIO()
    call_command("relay_events", stdout=out)

    assert "relayed 3 event message(s); 0 wait in the outbox" in out.getvalue()
    assert [h["ce_id"] for h in taken(tls_node, probe, 3)] == sent


def test_the_commands_talk_to_the_broker_over_tls(tls_node: RabbitMQNode, over_tls: Any) -> None:
    over_tls.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"event_types": [PING.event_type]}}
    service = over_tls.EVENT_BUS_SERVICE_NAME
    out = io.StringIO()
    try:
        call_command("declare_event_topology", stdout=out)
        assert f"declared queue {service}.pings" in out.getvalue()

        out = io.StringIO()
        call_command("show_event_bus", stdout=out)
        assert f"{service}.pings" in out.getvalue()
        assert "n/a" not in out.getvalue()

        out = io.StringIO()
        call_command("event_bus_health", "--skip", "outbox", "--skip", "dead-letters", stdout=out)
        assert out.getvalue().startswith("OK: ")
        assert "reachable" in out.getvalue()

        out = io.StringIO()
        call_command("event_dead_letters", "import", stdout=out)
        assert f"imported 0 message(s) from {service}.events_celery.dead_letters" in out.getvalue()
    finally:
        with Connection(tls_node.url) as plain:
            channel = plain.default_channel
            for queue in ("pings", "events_celery.tasks", "events_celery.dead_letters"):
                channel.queue_delete(f"{service}.{queue}")


def test_a_celery_worker_consumes_over_tls(
    tls_node: RabbitMQNode, over_tls: Any, tmp_path: Path
) -> None:
    assert tls_node.tls is not None
    tls_env = {
        "TEST_BROKER_URL": tls_node.tls_url(),
        # Celery's own connections check the broker's name only when told which.
        "TEST_BROKER_USE_SSL": json.dumps(
            client_options(tls_node.tls, server_hostname="localhost")
        ),
        "TEST_BROKER_LOGIN_METHOD": "EXTERNAL",
    }
    # The harness's own client and Celery remote control use the node's plain listener.
    with open_bus(tls_node.url, tmp_path, over_tls, "direct") as bus:
        over_tls.CELERY_BROKER_URL = tls_node.tls_url()
        service = bus.service_name("tls-consumer")
        bus.start(service, {"pings": {"event_types": [PING.event_type]}}, env=tls_env)

        sent = PING.send_event(n=7).metadata.id

        (record,) = wait_for(lambda: bus.records(service=service), "the ping at the worker")
        assert record["event_id"] == str(sent)
        assert record["n"] == 7


@pytest.mark.parametrize(
    ("host", "changes", "expected"),
    [
        pytest.param(
            "127.0.0.1",
            {},
            "TLS: the broker's certificate is not valid for '127.0.0.1'",
            id="hostname-mismatch",
        ),
        pytest.param(
            "localhost",
            {"ca_certs": "other_ca"},
            "could not be verified",
            id="unknown-ca",
        ),
        pytest.param(
            "localhost",
            {"certfile": "other_client.cert", "keyfile": "other_client.key"},
            "accept this service's client certificate",
            id="unknown-client",
        ),
        pytest.param(
            "localhost",
            {"certfile": "stranger.cert", "keyfile": "stranger.key"},
            "refused the certificate login (EXTERNAL",
            id="no-broker-user",
        ),
    ],
)
def test_a_refused_tls_connection_fails_at_once_naming_the_fix(
    tls_node: RabbitMQNode, over_tls: Any, host: str, changes: dict[str, str], expected: str
) -> None:
    files = tls_node.tls
    assert files is not None
    resolved = {}
    for key, attribute in changes.items():
        value: Any = files
        for part in attribute.split("."):
            value = getattr(value, part)
        resolved[key] = str(value)
    over_tls.CELERY_BROKER_URL = tls_node.tls_url(host)
    over_tls.CELERY_BROKER_USE_SSL = client_options(files, **resolved)
    over_tls.EVENT_BUS_PUBLISH_MODE = "direct"

    with pytest.raises(CommandError) as command:
        call_command("declare_event_topology", stdout=io.StringIO())
    with pytest.raises(PublishError) as publish:
        PING.send_event(n=1)

    print(f"\n{command.value}\n{publish.value}")
    assert expected in str(command.value)
    assert "CELERY_BROKER_USE_SSL" in str(command.value)
    assert expected in str(publish.value)
    assert "(2s, 1 attempt(s))" in str(publish.value)  # not retried
    assert publish.value.may_be_delivered is False


def test_consume_events_exits_when_the_broker_refuses_its_certificate_check(
    tls_node: RabbitMQNode, over_tls: Any
) -> None:
    require_openedx_events()
    from events_celery.contrib.openedx.consumer import EventsCeleryConsumer
    from events_celery.exceptions import BrokerTLSError

    assert tls_node.tls is not None
    over_tls.CELERY_BROKER_USE_SSL = client_options(
        tls_node.tls, ca_certs=str(tls_node.tls.other_ca)
    )
    consumer = EventsCeleryConsumer(topic="pings", group_id=over_tls.EVENT_BUS_SERVICE_NAME)

    with pytest.raises(BrokerTLSError) as refused:
        consumer.consume_indefinitely()  # without the check it would retry for good

    assert "could not be verified" in str(refused.value)
    assert "'ca_certs' in CELERY_BROKER_USE_SSL" in str(refused.value)
