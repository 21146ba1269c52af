"""Services run with the permissions ``manage.py event_bus_permissions`` prints, and no more.

On the private node, in a virtual host of this module: an administrator (``guest``) declares
the topology with ``declare_event_topology``; the publishing service's user gets its
permissions from the definitions JSON (``rabbitmqctl import_definitions``), the consuming
service's user from the ``rabbitmqctl`` lines. Each thing the permissions forbid is then tried
with a plain AMQP client and refused, and real workers deliver an event end to end.
"""

from __future__ import annotations

import io
import json
import secrets
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import attrs
import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.faults.node import HOST, RabbitMQNode
from tests.integration.conftest import open_bus, wait_for
from tests.testapp.events import ORDER_PLACED, PING

pytestmark = pytest.mark.rabbitmq

TOPIC = "shop"
OTHER_TOPIC = "audit"


@attrs.frozen
class Setup:
    """The virtual host, its services and their broker users."""

    node: RabbitMQNode
    vhost: str
    prefix: str
    publisher: str  # routes PING to TOPIC, consumes nothing
    consumer: str  # subscribes to PING on TOPIC, publishes nothing
    bystander: str  # another consumer of TOPIC, whose queue others must not read
    password: str

    def url(self, user: str) -> str:
        return f"amqp://{user}:{self.password}@{HOST}:{self.node.amqp_port}/{self.vhost}"

    @property
    def admin_url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.node.amqp_port}/{self.vhost}"

    def connect(self, user: str) -> amqp.Connection:
        connection = amqp.Connection(
            f"{HOST}:{self.node.amqp_port}",
            userid=user,
            password=self.password,
            virtual_host=self.vhost,
            connect_timeout=5,
            confirm_publish=True,  # a publish waits for its confirm, or the channel's error
        )
        connection.connect()
        return connection


def service_settings(setup: Setup, service: str, url: str) -> dict[str, Any]:
    routes = {PING.event_type: {TOPIC: {"event_key_field": None, "enabled": True}}}
    subscriptions = {
        setup.publisher: {},
        setup.consumer: {TOPIC: {"event_types": [PING.event_type]}},
        setup.bystander: {TOPIC: {}},
    }[service]
    # The consumer's workers use Celery names of the service's own; the others Celery's defaults.
    own_celery_names = (
        {
            "CELERY_CONTROL_EXCHANGE": service,
            "CELERY_EVENT_EXCHANGE": f"{service}.celeryev",
            "CELERY_EVENT_QUEUE_PREFIX": f"{service}.celeryev",
        }
        if service == setup.consumer
        else {}
    )
    return {
        **own_celery_names,
        "EVENT_BUS_SERVICE_NAME": service,
        "EVENT_BUS_TOPIC_PREFIX": setup.prefix,
        "EVENT_BUS_BROKER_URL": url,
        "EVENT_BUS_PRODUCER_CONFIG": routes if service == setup.publisher else {},
        "EVENT_BUS_CONSUMER_CONFIG": subscriptions,
        "CELERY_TASK_DEFAULT_QUEUE": f"{service}.celery",  # as the workers' settings
    }


def permissions_of(setup: Setup, service: str, output: str) -> str:
    out = io.StringIO()
    with override_settings(**service_settings(setup, service, setup.url(service))):
        call_command("event_bus_permissions", "--format", output, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture(scope="module")
def setup(rabbitmq_node: RabbitMQNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    run = secrets.token_hex(4)
    setup = Setup(
        node=rabbitmq_node,
        vhost=f"least-privilege-{run}",
        prefix=f"t{run}.",
        publisher=f"orders-{run}",
        consumer=f"billing-{run}",
        bystander=f"audit-{run}",
        password=secrets.token_hex(16),
    )
    node = rabbitmq_node
    node.ctl("add_vhost", setup.vhost)
    try:
        node.ctl("set_permissions", "-p", setup.vhost, "guest", ".*", ".*", ".*")
        for service in (setup.publisher, setup.consumer, setup.bystander):
            # Users must exist before their permissions are imported.
            node.ctl("add_user", service, setup.password)
            with override_settings(**service_settings(setup, service, setup.admin_url)):
                call_command("declare_event_topology", stdout=io.StringIO())
        other_topic = {ORDER_PLACED.event_type: {OTHER_TOPIC: {"event_key_field": None}}}
        with override_settings(
            **{
                **service_settings(setup, setup.publisher, setup.admin_url),
                "EVENT_BUS_PRODUCER_CONFIG": other_topic,
            }
        ):
            call_command("declare_event_topology", stdout=io.StringIO())
        # The publisher's permissions: imported from the definitions JSON.
        definitions = tmp_path_factory.mktemp("definitions") / "permissions.json"
        definitions.write_text(permissions_of(setup, setup.publisher, "definitions"))
        node.ctl("import_definitions", str(definitions))
        # The consumers': the rabbitmqctl lines, run as they are printed.
        for service in (setup.consumer, setup.bystander):
            for line in permissions_of(setup, service, "rabbitmqctl").splitlines():
                program, *args = shlex.split(line)
                assert program == "rabbitmqctl"
                node.ctl(*args)
        yield setup
    finally:
        for service in (setup.publisher, setup.consumer, setup.bystander):
            node._cli("rabbitmqctl", "delete_user", service, check=False)
        node.ctl("delete_vhost", setup.vhost)


def refused(attempt: Callable[[], object]) -> str:
    """The broker's 403 for ``attempt``, which must be refused."""
    with pytest.raises(amqp.exceptions.AccessRefused) as refusal:
        attempt()
    return str(refusal.value)


@pytest.fixture
def as_user(setup: Setup) -> Iterator[Callable[[str], amqp.Channel]]:
    """Open a channel as a service's broker user; its connections are closed after the test."""
    connections: list[amqp.Connection] = []

    def open_channel(user: str) -> amqp.Channel:
        connection = setup.connect(user)
        connections.append(connection)
        return connection.channel()

    yield open_channel
    for connection in connections:
        connection.collect()


def ping() -> amqp.Message:
    return amqp.Message(b"", content_type="application/avro")


def test_the_definitions_name_only_the_users_and_vhost_they_were_made_for(setup: Setup) -> None:
    definitions = json.loads(permissions_of(setup, setup.publisher, "definitions"))
    assert set(definitions) == {"permissions", "topic_permissions"}
    rows = definitions["permissions"] + definitions["topic_permissions"]
    assert {(row["user"], row["vhost"]) for row in rows} == {(setup.publisher, setup.vhost)}
    listed = setup.node.ctl("list_topic_permissions", "-p", setup.vhost, "--quiet")
    assert f"{setup.publisher}\t{setup.prefix}{TOPIC}\t" in listed
    assert f"{setup.consumer}\t{setup.prefix}{TOPIC}\t" in listed


def test_the_publisher_may_publish_the_types_it_routes(setup: Setup, as_user: Any) -> None:
    channel = as_user(setup.publisher)
    channel.basic_publish(ping(), exchange=f"{setup.prefix}{TOPIC}", routing_key=PING.event_type)


def test_a_forged_event_type_is_refused(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.publisher)
    text = refused(
        lambda: c.basic_publish(
            ping(), exchange=f"{setup.prefix}{TOPIC}", routing_key=ORDER_PLACED.event_type
        )
    )
    assert f"access to topic '{ORDER_PLACED.event_type}'" in text


def test_another_topics_exchange_is_refused(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.publisher)
    text = refused(
        lambda: c.basic_publish(
            ping(), exchange=f"{setup.prefix}{OTHER_TOPIC}", routing_key=ORDER_PLACED.event_type
        )
    )
    assert f"access to exchange '{setup.prefix}{OTHER_TOPIC}'" in text


def test_a_consumer_only_service_may_not_publish(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.consumer)
    refused(
        lambda: c.basic_publish(
            ping(), exchange=f"{setup.prefix}{TOPIC}", routing_key=PING.event_type
        )
    )


def test_a_consumer_may_bind_the_types_it_subscribes_to(setup: Setup, as_user: Any) -> None:
    channel = as_user(setup.consumer)
    channel.queue_bind(f"{setup.consumer}.{TOPIC}", f"{setup.prefix}{TOPIC}", PING.event_type)


def test_binding_everything_is_refused(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.consumer)
    text = refused(lambda: c.queue_bind(f"{setup.consumer}.{TOPIC}", f"{setup.prefix}{TOPIC}", "#"))
    assert "access to topic '#'" in text


def test_binding_an_unsubscribed_type_is_refused(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.consumer)
    refused(
        lambda: c.queue_bind(
            f"{setup.consumer}.{TOPIC}", f"{setup.prefix}{TOPIC}", ORDER_PLACED.event_type
        )
    )


def test_a_service_reads_its_own_queue_and_no_other(setup: Setup, as_user: Any) -> None:
    c = as_user(setup.consumer)
    c.basic_get(f"{setup.consumer}.{TOPIC}")
    text = refused(lambda: c.basic_get(f"{setup.bystander}.{TOPIC}"))
    assert f"queue '{setup.bystander}.{TOPIC}'" in text
    c = as_user(setup.publisher)
    refused(lambda: c.basic_get(f"{setup.consumer}.{TOPIC}"))


@pytest.mark.django_db(transaction=True)
def test_workers_and_a_publisher_deliver_an_event_with_these_rights(
    setup: Setup, tmp_path: Path, settings: Any
) -> None:
    """Workers started as the docs say (``celery -A proj worker``: gossip, mingle, heartbeats),
    the consumer's with Celery names of its own, the publisher's with Celery's defaults."""
    with open_bus(setup.admin_url, tmp_path, settings, "outbox", delete=False) as bus:
        bus.prefix = setup.prefix  # the topology the administrator declared
        bus.start(
            setup.consumer,
            {TOPIC: {"event_types": [PING.event_type]}},
            env={
                "TEST_BROKER_URL": setup.url(setup.consumer),
                "TEST_PREFIX": setup.prefix,
                "TEST_OWN_CELERY_NAMES": "1",
            },
            options=(),
            wait=False,
        )
        bus.start(
            setup.publisher,
            {},
            producer_config={PING.event_type: {TOPIC: {"event_key_field": None}}},
            env={
                "TEST_BROKER_URL": setup.url(setup.publisher),
                "TEST_PREFIX": setup.prefix,
                "TEST_PUBLISH_MODE": "outbox",
            },
            options=(),
            wait=False,
        )
        for worker in bus.workers:
            worker.wait_ready()
        exchanges = set(setup.node.ctl("list_exchanges", "-p", setup.vhost, "name").split())
        assert {f"{setup.consumer}.pidbox", "celery.pidbox"} <= exchanges  # both kinds ran
        for name, value in service_settings(
            setup, setup.publisher, setup.url(setup.publisher)
        ).items():
            setattr(settings, name, value)

        PING.send_event(n=7)

        wait_for(lambda: bus.records(service=setup.consumer), f"the ping in {setup.consumer}")
        [record] = bus.records(service=setup.consumer)
        assert record["n"] == 7
        assert record["from_event_bus"]
        for worker in bus.workers:
            assert "ACCESS_REFUSED" not in worker.log.read_text(), worker.log.read_text()[-4000:]
