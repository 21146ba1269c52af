"""Relay passes on the real RabbitMQ: ``relay_events`` and ``show_event_bus``."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from events_celery.bus.publish import background
from events_celery.models import OutboxMessage
from tests.bus.conftest import received
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]


def test_relay_events_publishes_rows_left_by_a_dead_writer_in_write_order(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    with transaction.atomic():
        sent = [str(PING.send_event(n=n).metadata.id) for n in range(1200)]  # > one batch
    OutboxMessage.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    out = io.StringIO()
    call_command("relay_events", stdout=out)

    assert [m["ce_id"] for m in received(rabbitmq_url, probe)] == sent
    assert "relayed 1200 event message(s); 0 wait in the outbox" in out.getvalue()
    assert not OutboxMessage.objects.exists()


def test_relay_events_leaves_rows_their_writer_still_holds(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    PING.send_event(n=1)

    out = io.StringIO()
    call_command("relay_events", stdout=out)

    assert received(rabbitmq_url, probe) == []
    assert "relayed 0 event message(s); 1 wait in the outbox" in out.getvalue()


def test_show_event_bus_prints_the_backlog(
    rabbitmq_url: str, probe: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(background.BackgroundPublisher, "submit", lambda self, rows: None)
    settings.EVENT_BUS_OUTBOX_WARN_AFTER = 10
    late = PING.send_event(n=1)
    PING.send_event(n=2)
    OutboxMessage.objects.filter(event_id=late.metadata.id).update(
        created_at=timezone.now() - timedelta(seconds=90)
    )

    out = io.StringIO()
    call_command("show_event_bus", stdout=out)

    line = next(x for x in out.getvalue().splitlines() if x.startswith("outbox:"))
    assert line.startswith("outbox: 2 unpublished, oldest 9")
    assert str(late.metadata.id) in line
