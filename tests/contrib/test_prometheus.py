"""``events_celery.contrib.prometheus``: the outbox gauges and the Django view."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from events_celery.contrib.prometheus import metrics_registry
from events_celery.models import OutboxMessage
from tests.testapp.events import PING

pytestmark = pytest.mark.django_db


@pytest.fixture
def outbox_service(settings: Any) -> str:
    settings.EVENT_BUS_PUBLISH_MODE = "outbox"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}
    return str(settings.EVENT_BUS_SERVICE_NAME)


def add_outbox_row(age: float) -> None:
    OutboxMessage.objects.create(
        event_id=uuid.uuid4(),
        event_type=PING.event_type,
        topic="pings",
        headers="{}",
        body=b"\x02",
        created_at=timezone.now() - timedelta(seconds=age),
        locked_until=timezone.now() + timedelta(hours=1),
        locked_by="a test",
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_outbox_gauges_count_waiting_rows_and_the_oldest_age(outbox_service: str) -> None:
    add_outbox_row(age=90)
    add_outbox_row(age=5)

    found = {
        (s.name, s.labels["service"]): s.value
        for family in metrics_registry().collect()
        if family.name.startswith("events_celery_outbox")
        for s in family.samples
    }

    assert found[("events_celery_outbox_messages", outbox_service)] == 2
    assert 90 <= found[("events_celery_outbox_oldest_age_seconds", outbox_service)] < 3600


def test_an_empty_outbox_reports_zero(outbox_service: str) -> None:
    found = {
        s.name: s.value
        for family in metrics_registry().collect()
        if family.name.startswith("events_celery_outbox")
        for s in family.samples
    }

    assert found == {
        "events_celery_outbox_messages": 0,
        "events_celery_outbox_oldest_age_seconds": 0,
    }


def test_a_service_without_an_outbox_reports_no_outbox_gauges(settings: Any) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "direct"

    names = {family.name for family in metrics_registry().collect()}

    assert not any(name.startswith("events_celery_outbox") for name in names)


def test_the_view_serves_counters_and_gauges_in_the_text_format(
    outbox_service: str, settings: Any
) -> None:
    settings.ROOT_URLCONF = "events_celery.contrib.prometheus"
    add_outbox_row(age=1)

    response = Client().get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = samples(response.content.decode())
    assert found[("events_celery_outbox_messages", (("service", outbox_service),))] == 1
    # the counters of this process are there too (the default registry)
    assert any(name == "python_info" for name, _ in found)


def test_the_view_speaks_openmetrics_when_asked(outbox_service: str, settings: Any) -> None:
    settings.ROOT_URLCONF = "events_celery.contrib.prometheus"

    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text")

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().endswith("# EOF\n")
