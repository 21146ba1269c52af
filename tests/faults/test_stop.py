"""Long-running loops stop when asked, even while the broker blocks publishers.

A broker with a resource alarm (``connection.blocked``) holds what a relay sent, and the relay
waits for it to let go (up to ten minutes) rather than send the rows again. A stop asked for
meanwhile (SIGTERM to ``relay_events --loop``, a worker shutting down its sweeper) ends that
wait: the rows go back to the outbox for a later pass.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone
from kombu import Connection

from events_celery.bus.publish import background
from events_celery.bus.publish.relay import Sweeper
from events_celery.models import OutboxMessage
from tests.faults.node import RabbitMQNode
from tests.integration.conftest import ROOT, wait_for
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

#: How long a stopped relay may take before the test calls it stuck. The wait it must cut
#: short is ten minutes (rows.BLOCKED_PATIENCE).
STUCK = 60.0


@pytest.fixture
def waiting_rows(
    rabbitmq_node: RabbitMQNode, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Outbox rows whose writer died (leases run out), for a topic declared on the node."""
    prefix = f"stop-{uuid.uuid4().hex[:8]}."
    settings.CELERY_BROKER_URL = rabbitmq_node.url
    settings.EVENT_BUS_SERVICE_NAME = f"stop-{uuid.uuid4().hex[:8]}"
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 2.0
    settings.EVENT_BUS_OUTBOX_LEASE = 8.0
    call_command("declare_event_topology", stdout=io.StringIO())
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in range(20)]
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
    try:
        yield sent
    finally:
        rabbitmq_node.set_memory_alarm(False)
        with Connection(rabbitmq_node.url) as plain:
            channel = plain.default_channel
            channel.queue_delete(f"{prefix}pings.unrouted")
            channel.exchange_delete(f"{prefix}pings")
            channel.exchange_delete(f"{prefix}pings.unrouted")


def blocked_connections(node: RabbitMQNode) -> int:
    """How many of the node's client connections it is blocking (they published meanwhile)."""
    output = node.ctl("list_connections", "state", "--no-table-headers", "--quiet")
    return sum(1 for line in output.splitlines() if line.strip() == "blocked")


def test_relay_events_loop_stops_on_sigterm_while_the_broker_blocks_publishers(
    rabbitmq_node: RabbitMQNode, waiting_rows: list[str], settings: Any, tmp_path: Path
) -> None:
    rabbitmq_node.set_memory_alarm(True)
    env = {
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.integration.service_settings",
        "TEST_DB_NAME": str(db_connection.settings_dict["NAME"]),
        "TEST_SERVICE": settings.EVENT_BUS_SERVICE_NAME,
        "TEST_PREFIX": settings.EVENT_BUS_TOPIC_PREFIX,
        "TEST_RESULTS": str(tmp_path / "results.jsonl"),
        "TEST_BROKER_URL": rabbitmq_node.url,
        "TEST_PUBLISH_MODE": "outbox",
        "TEST_PUBLISH_TIMEOUT": "2",
        "TEST_OUTBOX_LEASE": "8",
        "TEST_PRODUCER_CONFIG": json.dumps(settings.EVENT_BUS_PRODUCER_CONFIG),
    }
    log = tmp_path / "relay.log"
    with log.open("w") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "django", "relay_events", "--loop"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: blocked_connections(rabbitmq_node), "the broker to block the relay")
        wait_for(lambda: relay.poll() is None, "the relay to be running")  # not crashed
        time.sleep(1.0)  # well into its wait for the broker, past any pause between passes

        began = time.monotonic()
        relay.send_signal(signal.SIGTERM)
        try:
            code = relay.wait(timeout=STUCK)
        except subprocess.TimeoutExpired:
            pytest.fail(f"relay_events ignored SIGTERM while blocked:\n{log.read_text()[-3000:]}")
        print(f"\nrelay_events stopped {time.monotonic() - began:.2f}s after SIGTERM")
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()

    output = log.read_text()
    assert code == 0, output
    assert "relayed 0 event message(s); 20 wait in the outbox" in output
    assert OutboxMessage.objects.count() == len(waiting_rows)


def test_the_workers_sweeper_stops_while_the_broker_blocks_publishers(
    rabbitmq_node: RabbitMQNode, waiting_rows: list[str]
) -> None:
    rabbitmq_node.set_memory_alarm(True)
    sweeper = Sweeper()
    sweeper.start()
    try:
        wait_for(lambda: blocked_connections(rabbitmq_node), "the broker to block the sweeper")
        time.sleep(1.0)
    finally:
        began = time.monotonic()
        sweeper.stop(timeout=STUCK)
    print(f"\nthe sweeper stopped {time.monotonic() - began:.2f}s after stop()")

    sweeping = [t for t in threading.enumerate() if t.name == "events_celery-sweeper"]
    assert sweeping == [], "the sweeper is still waiting for the broker"
    assert OutboxMessage.objects.count() == len(waiting_rows)
