"""An operator discards and replays dead letters in the admin; a real worker runs the replay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.worker import WorkController

from events_celery.models import DeadLetter
from tests.admin_browser.conftest import AdminPages
from tests.admin_rows import RECEIVER, TOPIC, order_dead_letter
from tests.memory_worker import run_memory_worker, wait_until
from tests.testapp.events import ORDER_PLACED

pytestmark = pytest.mark.browser

SERVICE = "admin-browser"
WORKER_SETTINGS: dict[str, Any] = {
    "CELERY_BROKER_URL": "memory://",
    "EVENT_BUS_SERVICE_NAME": SERVICE,
    "EVENT_BUS_CONSUMER_FLUSH_INTERVAL": 0.01,
    "EVENT_BUS_CONSUMER_CONFIG": {TOPIC: {"event_types": [ORDER_PLACED.event_type]}},
}


@pytest.fixture
def worker() -> Iterator[WorkController]:
    """A Celery worker of the service, in this process, on kombu's in-memory broker."""
    with run_memory_worker(SERVICE, WORKER_SETTINGS) as w:
        yield w


def test_an_operator_discards_one_dead_letter_and_replays_another(
    worker: WorkController, pages: AdminPages
) -> None:
    charged: list[tuple[str | None, bool]] = []

    def charge_order(order: Any, from_event_bus: bool, **kwargs: Any) -> None:
        charged.append((order.note, from_event_bus))

    to_replay = order_dead_letter(note="replay me")
    to_discard = order_dead_letter(note="discard me")
    ORDER_PLACED.connect(charge_order, weak=False, dispatch_uid=RECEIVER)  # the fixed receiver
    try:
        pages.open_list()
        assert pages.run_action("Discard the selected dead letters", to_discard.pk) == [
            ("success", "Discarded 1 dead letter.")
        ]
        to_discard.refresh_from_db()
        assert to_discard.status == "discarded"

        assert pages.run_action("Replay the selected dead letters", to_replay.pk) == [
            ("success", f"Replay started for 1 dead letter: #{to_replay.pk}.")
        ]
        wait_until(
            lambda: DeadLetter.objects.get(pk=to_replay.pk).status == "replayed",
            "the worker to run the replayed receiver",
        )
        assert charged == [("replay me", True)]  # only the replayed event, once

        assert pages.run_action("Replay the selected dead letters", to_discard.pk) == [
            ("warning", f"Not replayed: 1 dead letter. already discarded (#{to_discard.pk}).")
        ]
    finally:
        ORDER_PLACED.disconnect(dispatch_uid=RECEIVER)
    pages.open_list()
    assert pages.status_of(to_replay.pk) == "replayed"
    assert pages.status_of(to_discard.pk) == "discarded"
