"""The outbox with real worker processes: delivery after commit, sweepers, competing relays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from events_celery.bus.publish import background
from events_celery.models import OutboxMessage
from tests.integration.conftest import ROOT, Bus, wait_for
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"
ROUTE = {PING.event_type: {TOPIC: {"enabled": True}}}
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


def delivered(bus: Bus, service: str) -> Counter[str]:
    """How often each event id reached ``service``'s PING receiver through the bus."""
    return Counter(r["event_id"] for r in bus.records(service=service, from_event_bus=True))


def test_committed_events_reach_another_service_once_and_rolled_back_ones_never(
    bus: Bus, settings: Any
) -> None:
    consumer = bus.service_name("billing")
    bus.start(consumer, {TOPIC: {"event_types": [PING.event_type]}})
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = ROUTE

    committed, rolled_back = [], []
    for n in range(40):
        with transaction.atomic():
            sent = PING.send_event(n=n)
            if n % 4 == 3:
                rolled_back.append(str(sent.metadata.id))
                transaction.set_rollback(True)
            else:
                committed.append(str(sent.metadata.id))

    wait_for(lambda: len(delivered(bus, consumer)) >= len(committed), "the committed events")
    background.background_publisher().flush(timeout=10)
    counts = delivered(bus, consumer)
    assert set(counts) == set(committed)
    assert set(counts.values()) == {1}
    assert not set(rolled_back) & set(counts)
    assert not OutboxMessage.objects.exists()


def test_events_of_a_publisher_killed_after_commit_are_relayed_by_a_worker_sweeper(
    bus: Bus,
) -> None:
    consumer = bus.service_name("billing")
    publisher = bus.service_name("orders")
    bus.start(consumer, {TOPIC: {"event_types": [PING.event_type]}})
    outbox_env = {
        "TEST_SERVICE": publisher,
        "TEST_PUBLISH_MODE": "outbox",
        "TEST_PRODUCER_CONFIG": json.dumps(ROUTE),
        "TEST_OUTBOX_LEASE": "6",
        "TEST_PUBLISH_TIMEOUT": "1.5",
    }
    # The publisher commits 25 events but cannot reach the broker, then dies by SIGKILL.
    dying = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.publish_and_wait", "25"],
        cwd=ROOT,
        env={**bus.env(), **outbox_env, "TEST_BROKER_URL": UNREACHABLE},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert dying.stdout is not None
    sent = json.loads(dying.stdout.readline())
    os.killpg(dying.pid, signal.SIGKILL)
    dying.wait()
    assert OutboxMessage.objects.count() == 25

    # A worker of the publishing service (it consumes nothing) sweeps once the lease is over.
    bus.start(publisher, {}, producer_config=ROUTE, env=outbox_env)

    wait_for(lambda: len(delivered(bus, consumer)) >= 25, "the sweeper to relay the events")
    counts = delivered(bus, consumer)
    assert set(counts) == set(sent)
    assert set(counts.values()) == {1}
    wait_for(lambda: not OutboxMessage.objects.exists(), "the relayed rows to be deleted")


def test_a_worker_sweeper_and_relay_events_drain_one_backlog_without_publishing_twice(
    bus: Bus, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = ROUTE
    settings.EVENT_BUS_OUTBOX_BATCH_SIZE = 100  # many small claims: the relays interleave
    bus.topics.add(TOPIC)
    PING.send_event(n=-1)  # declares the topic exchange
    background.background_publisher().flush(timeout=10)
    probe = bus.probe()
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    with transaction.atomic():
        for n in range(5000):
            PING.send_event(n=n)
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    publisher = bus.service_name("orders")
    outbox_env = {
        "TEST_PUBLISH_MODE": "outbox",
        "TEST_PRODUCER_CONFIG": json.dumps(ROUTE),
        "TEST_SWEEP_INTERVAL": "0.05",
    }
    log = bus.tmp_path / "relay_events.log"
    with log.open("w") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "django", "relay_events", "--loop"],
            cwd=ROOT,
            env={**bus.env(), **outbox_env, "TEST_SERVICE": publisher},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Started (its SIGTERM handler set) before the worker, so the two relays race.
        wait_for(
            lambda: command.poll() is not None or "relaying the outbox" in log.read_text(),
            "relay_events --loop to start",
        )
        bus.start(publisher, {}, producer_config=ROUTE, env=outbox_env)
        wait_for(lambda: bus.depth(probe) >= 5000, "the two relays to drain the backlog")
        wait_for(lambda: not OutboxMessage.objects.exists(), "the published rows to be deleted")
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=30)
    output = log.read_text()

    ids = []
    while (message := bus.get(probe)) is not None:
        ids.append(message.properties["message_id"])
    assert len(ids) == 5000
    assert len(set(ids)) == 5000, "an event was published twice"
    assert "relayed" in output
    assert any(r["node"] == publisher for r in [{"node": w.node} for w in bus.workers])
