"""Publishing failures and limits that need no broker (the broker URL points nowhere)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from events_celery import PayloadValidationError, PublishError
from tests.testapp.events import PING

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def unreachable_broker(settings: Any) -> None:
    settings.EVENT_BUS_BROKER_URL = UNREACHABLE
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 0.2
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_retries": 0}
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": True}}}


def test_an_immediate_publish_that_fails_raises_from_send_event(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_PUBLISH_MODE = "immediate"

    with pytest.raises(PublishError) as raised:
        PING.send_event(n=1)

    assert raised.value.topic == "pings"
    assert str(raised.value.event_id) in str(raised.value)


@pytest.mark.django_db(transaction=True)
def test_a_publish_failing_at_commit_says_later_events_were_lost_too(
    unreachable_broker: None,
) -> None:
    def send_two_in_a_transaction() -> None:
        with transaction.atomic():
            PING.send_event(n=1)  # nothing is published (nor fails) before the commit
            PING.send_event(n=2)

    with pytest.raises(PublishError) as raised:
        send_two_in_a_transaction()

    assert any("events sent after this one" in note for note in raised.value.__notes__)


def test_a_payload_above_the_size_limit_is_refused_before_publishing(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_MAX_MESSAGE_SIZE = 1

    with pytest.raises(PayloadValidationError, match="EVENT_BUS_MAX_MESSAGE_SIZE"):
        PING.send_event(n=1_000_000)
