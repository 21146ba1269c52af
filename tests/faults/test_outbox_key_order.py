"""One partition key, a writer that died, and a live writer: the broker gets the key in order.

A process writes events of one key and is SIGKILLed before it could publish them (its broker is
unreachable). While a relay (``relay_events --loop``) waits for their lease to run out and then
publishes them, this process writes newer events of the same key, and of another key. A
consumer reads the queue at the end; the scenario counts inversions (an event of the key that
arrived after a later one), lost events and duplicates.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection as db_connection
from django.db import transaction
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.bus.publish import background
from events_celery.conf import bus_settings
from events_celery.models import OutboxMessage
from tests.faults.node import RabbitMQNode
from tests.faults.report import report
from tests.integration.conftest import ROOT
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "orders"
ROUTE = {PING.event_type: {TOPIC: {"event_key_field": "n", "enabled": True}}}
LEASE = 3.0

#: Sends ``count`` events of key 7, one transaction each, prints their ids, then waits.
WRITER = """
import sys, time, django
django.setup()
from django.db import transaction
from tests.testapp.events import PING
for _ in range(int(sys.argv[1])):
    with transaction.atomic():
        print(PING.send_event(n=7).metadata.id, flush=True)
print("written", flush=True)
time.sleep(120)
"""


@pytest.fixture
def probe(rabbitmq_node: RabbitMQNode, settings: Any) -> Iterator[str]:
    """This test's topic on the private node, and a queue that sees everything sent to it."""
    service = f"keyorder-{uuid.uuid4().hex[:8]}"
    prefix = f"{service}."
    settings.CELERY_BROKER_URL = rabbitmq_node.url
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_SERVICE_NAME = service
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_OUTBOX_LEASE = LEASE
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.5
    settings.EVENT_BUS_PRODUCER_CONFIG = ROUTE
    queue = f"{prefix}probe"
    with Connection(rabbitmq_node.url) as connection:
        declaring.declare(connection, topology.producer_topology(bus_settings(), [TOPIC]))
        channel: Any = connection.default_channel
        channel.queue_declare(queue, auto_delete=False)
        channel.queue_bind(queue, f"{prefix}{TOPIC}", routing_key="#")
    try:
        yield queue
    finally:
        background.stop_background_publisher()
        with Connection(rabbitmq_node.url) as connection:
            channel = connection.default_channel
            for name in (queue, f"{prefix}{TOPIC}.unrouted"):
                channel.queue_delete(name)
            for name in (f"{prefix}{TOPIC}", f"{prefix}{TOPIC}.unrouted"):
                channel.exchange_delete(name)


def process_env(broker_url: str) -> dict[str, str]:
    settings = bus_settings()
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.integration.service_settings",
        "TEST_DB_NAME": str(db_connection.settings_dict["NAME"]),
        "TEST_SERVICE": settings.service_name,
        "TEST_PREFIX": settings.topic_prefix,
        "TEST_PUBLISH_MODE": "outbox",
        "TEST_PRODUCER_CONFIG": json.dumps(ROUTE),
        "TEST_OUTBOX_LEASE": str(LEASE),
        "TEST_PUBLISH_TIMEOUT": "0.5",
        "TEST_SWEEP_INTERVAL": "0.2",
        "TEST_BROKER_URL": broker_url,
        "TEST_RESULTS": os.devnull,  # the local receivers of the writer record nothing here
    }


def write_and_die(count: int) -> list[str]:
    """A process writes ``count`` events of key 7 and is SIGKILLed before publishing any."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(count)],
        env=process_env("amqp://guest:guest@127.0.0.1:1//"),  # nothing listens there
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    written = []
    try:
        for line in writer.stdout:
            if line.strip() == "written":
                break
            written.append(line.strip())
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
    assert len(written) == count, f"the writer wrote {len(written)} of {count} events"
    return written


def consume(broker_url: str, queue: str) -> list[tuple[str, str]]:
    """(partition key, event id) of every message in ``queue``, in order; the queue is emptied."""
    with Connection(broker_url) as connection:
        channel: Any = connection.default_channel
        found = []
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            found.append((message.headers["ce_partitionkey"], message.headers["ce_id"]))
        return found


def inversions(sent: list[str], arrived: list[str]) -> int:
    """Arrivals (first ones) of a key that came after an event sent later."""
    position = {event: n for n, event in enumerate(sent)}
    firsts = list(dict.fromkeys(e for e in arrived if e in position))
    return sum(1 for a, b in itertools.pairwise(firsts) if position[a] > position[b])


def test_rows_of_a_key_whose_writer_died_are_relayed_in_order_with_newer_rows_of_that_key(
    rabbitmq_node: RabbitMQNode, probe: str
) -> None:
    orphaned = write_and_die(40)
    assert OutboxMessage.objects.count() == 40
    relay = subprocess.Popen(
        [sys.executable, "-m", "django", "relay_events", "--loop"],
        env=process_env(rabbitmq_node.url),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    live: dict[str, list[str]] = {"7": [], "8": []}
    try:
        # This process writes newer events of key 7 (and of key 8) for twice the dead writer's
        # lease: before its rows are relayed, while they are, and after.
        until = time.monotonic() + 2 * LEASE
        while time.monotonic() < until:
            for n in (7, 8):
                with transaction.atomic():
                    live[str(n)].append(str(PING.send_event(n=n).metadata.id))
            time.sleep(0.02)
        assert background.background_publisher().flush(timeout=30)
        deadline = time.monotonic() + 60
        while OutboxMessage.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(20)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait(10)

    waiting = OutboxMessage.objects.count()
    arrived = consume(rabbitmq_node.url, probe)
    sent = {"7": orphaned + live["7"], "8": live["8"]}
    by_key = {key: [event for k, event in arrived if k == key] for key in sent}
    every = [event for events in sent.values() for event in events]
    row = report(
        "rows of one key: writer killed, relayed while newer ones are written",
        every,
        Counter(event for _, event in arrived),
        [],
    )
    counted = {key: inversions(sent[key], by_key[key]) for key in sent}
    print(f"inversions by key: {counted}; {len(orphaned)} orphaned, {len(live['7'])} live")
    assert waiting == 0
    assert counted == {"7": 0, "8": 0}
    assert row.lost == 0
    assert row.duplicates == 0  # nothing crashed between a confirm and a delete
    assert live["7"]
    assert live["8"]
