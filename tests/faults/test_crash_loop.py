"""A receiver that kills its worker process, among a stream of events (private RabbitMQ node).

Each event whose receiver crashes comes back at most ``EVENT_BUS_MAX_REDELIVERIES`` times and is
then dead-lettered with that reason; the events sent alongside it are all delivered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import transaction

from events_celery.models import OutboxMessage
from tests.faults.report import report
from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import CRASHING, PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"
MAX_REDELIVERIES = 2
EVENTS = 200
CRASH_EVERY = 50  # 4 crashing events among 200
ROLLBACK_EVERY = 10


def test_a_receiver_crash_loop_is_dead_lettered_and_the_events_alongside_all_arrive(
    fault_bus: Bus, settings: Any
) -> None:
    billing = fault_bus.service_name("billing")
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        s.event_type: {TOPIC: {"enabled": True}} for s in (PING, CRASHING)
    }
    fault_bus.start(billing, {TOPIC: {}}, env={"TEST_MAX_REDELIVERIES": str(MAX_REDELIVERIES)})

    committed, rolled_back, crashing = [], [], []
    for n in range(EVENTS):
        with transaction.atomic():
            sent = str(PING.send_event(n=n).metadata.id)
            if n % CRASH_EVERY == CRASH_EVERY // 2:  # in the same transaction, so one batch
                crashing.append(str(CRASHING.send_event(n=n).metadata.id))
            if n % ROLLBACK_EVERY == ROLLBACK_EVERY - 1:
                transaction.set_rollback(True)
                rolled_back.append(sent)
            else:
                committed.append(sent)

    wait_for(
        lambda: len(fault_bus.dead_letters(billing)) >= len(crashing),
        "a dead letter for every crashing event",
        timeout=120,
    )
    wait_for(
        lambda: set(committed) <= set(delivered(fault_bus, billing, "on_ping")),
        "every event sent alongside",
        timeout=120,
    )
    counts = delivered(fault_bus, billing, "on_ping")
    runs = delivered(fault_bus, billing, "crash")
    row = report(
        f"receiver crash loop ({len(crashing)} crashers run {1 + MAX_REDELIVERIES}x each, "
        "then dead-lettered)",
        committed,
        counts,
        rolled_back,
    )
    assert row.lost == 0, "an event sent alongside a crashing one was lost"
    assert row.phantom == 0, "a rolled-back event arrived"
    dead = fault_bus.dead_letters(billing)
    assert sorted(str(d.event_id) for d in dead) == sorted(crashing), (
        "each crashing event is dead-lettered once"
    )
    for letter in dead:
        assert letter.reason == "redelivered"
        assert f"came back unfinished {1 + MAX_REDELIVERIES} time(s)" in letter.error
        assert f"EVENT_BUS_MAX_REDELIVERIES is {MAX_REDELIVERIES}" in letter.error
    assert runs == dict.fromkeys(crashing, 1 + MAX_REDELIVERIES), "the first run, and no more"
    assert all(w.process.poll() is None for w in fault_bus.workers), "the worker is alive"
    assert not OutboxMessage.objects.exists()


def delivered(bus: Bus, service: str, receiver: str) -> Counter[str]:
    return Counter(r["event_id"] for r in bus.records(service=service, receiver=receiver))
