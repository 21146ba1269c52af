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
import logging
import secrets
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import amqp
import attrs
import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from events_celery.bus.publish import background
from events_celery.models import DeadLetter, OutboxMessage
from tests.contrib.openedx import require_openedx_events
from tests.faults.node import HOST, RabbitMQNode
from tests.integration.conftest import open_bus, wait_for
from tests.testapp.events import ORDER_PLACED, PING

pytestmark = pytest.mark.rabbitmq

TOPIC = "shop"
OTHER_TOPIC = "audit"
ENROLLMENTS = "enrollments"  # the Open edX adapter's topic
#: The ledger's subscription: ordered by key, partition queues <ledger>.shop.ordered.<n>.
ORDERED = {TOPIC: {"event_types": [PING.event_type], "order_by_key": True, "partitions": 2}}


@attrs.frozen
class Setup:
    """The virtual host, its services and their broker users."""

    node: RabbitMQNode
    vhost: str
    prefix: str
    publisher: str  # routes PING to TOPIC, consumes nothing
    consumer: str  # subscribes to PING on TOPIC, publishes nothing
    bystander: str  # another consumer of TOPIC, whose queue others must not read
    ledger: str  # consumes PING on TOPIC ordered by key
    catalog: str  # an Open edX service: consume_events of ENROLLMENTS, its group named after it
    password: str

    @property
    def services(self) -> tuple[str, ...]:
        """Every service of the virtual host, the publisher first."""
        return (self.publisher, self.consumer, self.bystander, self.ledger, self.catalog)

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
    routes = {PING.event_type: {TOPIC: {"event_key_field": "n", "enabled": True}}}
    subscriptions = {
        setup.publisher: {},
        setup.consumer: {TOPIC: {"event_types": [PING.event_type]}},
        setup.bystander: {TOPIC: {}},
        setup.ledger: ORDERED,
        setup.catalog: {ENROLLMENTS: {}},  # consume_events binds every event type
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
        ledger=f"ledger-{run}",
        catalog=f"catalog-{run}",
        password=secrets.token_hex(16),
    )
    node = rabbitmq_node
    node.ctl("add_vhost", setup.vhost)
    try:
        node.ctl("set_permissions", "-p", setup.vhost, "guest", ".*", ".*", ".*")
        for service in setup.services:
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
        for service in setup.services[1:]:
            for line in permissions_of(setup, service, "rabbitmqctl").splitlines():
                program, *args = shlex.split(line)
                assert program == "rabbitmqctl"
                node.ctl(*args)
        yield setup
    finally:
        for service in setup.services:
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
            producer_config={PING.event_type: {TOPIC: {"event_key_field": "n"}}},
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


@contextmanager
def as_service(setup: Setup, service: str, **extra: Any) -> Iterator[None]:
    """This process runs with ``service``'s settings, connected as its broker user."""
    url = setup.url(service)
    with override_settings(
        **{**service_settings(setup, service, url), "CELERY_BROKER_URL": url, **extra}
    ):
        yield


def command(name: str, *args: str) -> str:
    """Run a management command of the bus; what it printed on standard output."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except SystemExit as exc:  # event_bus_health's answer when a check failed
        pytest.fail(f"{name} {' '.join(args)} exited {exc.code}: {out.getvalue()}{err.getvalue()}")
    return out.getvalue()


def admin_channel(setup: Setup) -> Iterator[amqp.Channel]:
    connection = amqp.Connection(
        f"{HOST}:{setup.node.amqp_port}", virtual_host=setup.vhost, connect_timeout=5
    )
    connection.connect()
    try:
        yield connection.channel()
    finally:
        connection.collect()


admin = pytest.fixture(admin_channel)


def no_refusal(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing this process logged (INFO and above) speaks of a refusal by the broker."""
    refusals = [r.getMessage() for r in caplog.records if "ACCESS_REFUSED" in r.getMessage()]
    assert not refusals, refusals


@pytest.mark.django_db(transaction=True)
def test_a_publisher_publishes_directly_relays_its_outbox_and_runs_its_commands(
    setup: Setup,
    admin: amqp.Channel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    probe = f"probe-{setup.publisher}"
    admin.queue_declare(probe, auto_delete=False)
    admin.queue_bind(probe, f"{setup.prefix}{TOPIC}", PING.event_type)
    try:
        with as_service(setup, setup.publisher, EVENT_BUS_PUBLISH_MODE="direct"):
            direct = PING.send_event(n=1).metadata.id
        # Rows a writer left behind (it died before publishing them) wait for the relay.
        monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
        with as_service(setup, setup.publisher, EVENT_BUS_PUBLISH_MODE="outbox"):
            with transaction.atomic():
                relayed = PING.send_event(n=2).metadata.id
            OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
            assert "relayed 1 event message(s); 0 wait" in command("relay_events")
            assert "outbox" in command("show_event_bus")
            assert command("declare_event_topology")
            health = json.loads(command("event_bus_health", "--json"))
            assert health["ok"], health

        got = [admin.basic_get(probe, no_ack=True) for _ in range(3)]
        ids = [m.headers["ce_id"] for m in got if m is not None]
        assert ids == [str(direct), str(relayed)]
    finally:
        admin.queue_delete(probe)
    no_refusal(caplog)


@pytest.mark.django_db(transaction=True)
def test_a_consumer_declares_shows_checks_imports_and_replays_its_dead_letters(
    setup: Setup, admin: amqp.Channel, as_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    queue = f"{setup.consumer}.{TOPIC}"
    tasks = f"{setup.consumer}.events_celery.tasks"
    admin.queue_purge(queue)
    with as_service(setup, setup.publisher, EVENT_BUS_PUBLISH_MODE="direct"):
        sent = PING.send_event(n=3).metadata.id
    with as_service(setup, setup.consumer):
        assert command("declare_event_topology")
        shown = command("show_event_bus")
        assert queue in shown
        health = json.loads(command("event_bus_health", "--json"))
        assert health["ok"], health
        # The event is rejected from the service's queue, as when the database was away: the
        # broker dead-letters it to the service's dead-letter queue.
        channel = as_user(setup.consumer)
        message = wait_for(lambda: channel.basic_get(queue), "the event in the service's queue")
        channel.basic_reject(message.delivery_tag, requeue=False)
        wait_for(
            lambda: (
                admin.queue_declare(
                    f"{setup.consumer}.events_celery.dead_letters", passive=True
                ).message_count
            ),
            "the event in the broker's dead-letter queue",
        )
        assert "imported 1" in command("event_dead_letters", "import").lower()
        [row] = DeadLetter.objects.filter(service=setup.consumer)
        assert row.event_id == sent
        admin.queue_purge(tasks)
        replayed = command("event_dead_letters", "replay", "--id", str(row.pk))
        assert "1" in replayed, replayed
        assert DeadLetter.objects.get(pk=row.pk).status == "replaying"
        assert admin.queue_declare(tasks, passive=True).message_count == 1
    admin.queue_purge(tasks)
    no_refusal(caplog)


@pytest.mark.django_db(transaction=True)
def test_an_ordered_subscription_runs_and_repartitions_with_these_rights(
    setup: Setup, tmp_path: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker declares its intake, partition exchange and queues and presence queue, routes
    an event to its partition, and runs it; then ``event_bus_partitions --apply`` moves them."""
    caplog.set_level(logging.INFO)
    with open_bus(setup.admin_url, tmp_path, settings, "direct", delete=False) as bus:
        bus.prefix = setup.prefix
        worker = bus.start(
            setup.ledger,
            ORDERED,
            env={"TEST_BROKER_URL": setup.url(setup.ledger), "TEST_PREFIX": setup.prefix},
        )
        with as_service(setup, setup.publisher, EVENT_BUS_PUBLISH_MODE="direct"):
            PING.send_event(n=11)
        wait_for(lambda: bus.records(service=setup.ledger), f"the ping in {setup.ledger}")
        worker.stop()
        log = worker.log.read_text()
        assert "ACCESS_REFUSED" not in log, log[-4000:]

    ordered = f"{setup.ledger}.{TOPIC}.ordered"
    queues = setup.node.ctl("list_queues", "-p", setup.vhost, "name").split()
    assert {ordered, f"{ordered}.0", f"{ordered}.1", f"{ordered}.workers"} <= set(queues)
    with as_service(setup, setup.ledger):
        assert "2 partition(s) on the broker, 2 in the settings" in command("event_bus_partitions")
    more = {TOPIC: {**ORDERED[TOPIC], "partitions": 3}}
    with as_service(setup, setup.ledger, EVENT_BUS_CONSUMER_CONFIG=more):
        assert "now 3 partition(s)" in command("event_bus_partitions", TOPIC, "--apply")
    no_refusal(caplog)


@pytest.mark.django_db(transaction=True)
def test_consume_events_of_a_group_named_after_the_service_runs_and_retries(
    setup: Setup, admin: amqp.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """The Open edX adapter's consumer: its queues are named after the group, so the group is
    the service (``consume_events -g <EVENT_BUS_SERVICE_NAME>``); a failing receiver sends the
    event through the group's retry queue (by the group's put-back exchange)."""
    require_openedx_events()
    from events_celery.contrib.openedx import EventsCeleryConsumer
    from tests.contrib.openedx.enrollments import COURSE_ENROLLMENT_CREATED
    from tests.contrib.openedx.test_consumer import consume_one, enrollment_message

    caplog.set_level(logging.INFO)
    calls: list[str] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(str(kwargs["metadata"].id))
        if len(calls) == 1:
            raise RuntimeError("the first attempt fails")

    COURSE_ENROLLMENT_CREATED.connect(receiver, dispatch_uid="test_least_privilege")
    policy = {"max_attempts": 3, "backoff": 0.1, "backoff_max": 0.2, "jitter": False}
    try:
        with as_service(setup, setup.catalog, EVENT_BUS_RETRY_POLICY=policy):
            consumer = EventsCeleryConsumer(topic=ENROLLMENTS, group_id=setup.catalog)
            message, metadata = enrollment_message()
            admin.basic_publish(
                amqp.Message(
                    message.body,
                    application_headers=message.headers,
                    **{k: v for k, v in message.properties.items() if k != "content_encoding"},
                ),
                exchange=f"{setup.prefix}{ENROLLMENTS}",
                routing_key=COURSE_ENROLLMENT_CREATED.event_type,
            )
            consume_one(consumer)  # the first attempt: to the retry queue
            consume_one(consumer)  # back from it: runs again
            consumer.connection.release()
    finally:
        COURSE_ENROLLMENT_CREATED.disconnect(dispatch_uid="test_least_privilege")
    assert calls == [str(metadata.id)] * 2
    assert not DeadLetter.objects.filter(service=setup.catalog).exists()
    no_refusal(caplog)
