"""Quorum queues, on the private node: retries wait on the broker, sub-second waits included.

They run here rather than on the shared broker because Celery parks quorum retries in shared
``celery_delayed_*`` queues, which the ``quorum_bus`` fixture clears after each test.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Bus, wait_for
from tests.integration.test_bus import TOPIC, check_receivers_retry_by_their_own_options, route
from tests.testapp.events import DOOMED, PING

pytestmark = pytest.mark.rabbitmq


@pytest.mark.django_db(transaction=True)  # the dead letter is a row of this test's database
def test_receivers_retry_by_their_own_options_with_sub_second_waits(
    quorum_bus: Bus, settings: Any
) -> None:
    check_receivers_retry_by_their_own_options(quorum_bus, settings, "quorum")


def test_with_quorum_queues_pending_retries_do_not_hold_back_new_events(
    quorum_bus: Bus, settings: Any
) -> None:
    billing = quorum_bus.service_name("billing")
    # Each failing event's retry waits 15-30 s: Celery must park it on the broker, not hold
    # it in the worker, or a dozen of them fill the prefetch window and stall new events.
    quorum_bus.start(billing, {TOPIC: {}}, queue_type="quorum", backoff=30.0)
    settings.EVENT_BUS_PRODUCER_CONFIG = route(DOOMED, PING)

    for n in range(12):
        DOOMED.send_event(n=n)
    wait_for(
        lambda: len(quorum_bus.records(service=billing, receiver="doomed")) == 12, "first attempts"
    )
    for n in range(20):
        PING.send_event(n=n)

    wait_for(
        lambda: len(quorum_bus.records(service=billing, receiver="on_ping")) == 20, "the pings"
    )
    assert len(quorum_bus.records(service=billing, receiver="doomed")) == 12, (
        "no retry ran before them"
    )
