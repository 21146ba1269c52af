"""The producer: routed events become outbox rows in the caller's transaction, within limits."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import transaction

from events_celery import PayloadValidationError, PublishError
from events_celery.models import OutboxMessage
from tests.testapp.events import PING


@pytest.mark.django_db(transaction=True)
def test_outbox_mode_never_raises_publish_error_nor_touches_the_broker_in_the_caller(
    unreachable_broker: None, broker_calls: list[str]
) -> None:
    with transaction.atomic():
        sent = PING.send_event(n=1)

    assert OutboxMessage.objects.filter(event_id=sent.metadata.id).count() == 2  # two topics
    assert threading.current_thread().name not in broker_calls


def test_a_payload_above_the_size_limit_is_refused_before_publishing(
    unreachable_broker: None, settings: Any
) -> None:
    settings.EVENT_BUS_MAX_MESSAGE_SIZE = 1

    with pytest.raises(PayloadValidationError, match="EVENT_BUS_MAX_MESSAGE_SIZE"):
        PING.send_event(n=1_000_000)


def test_publish_error_keeps_the_single_event_id_of_older_callers() -> None:
    error = PublishError("x", event_ids=("a", "b"), topic="t", may_be_delivered=True)

    assert error.event_id == "a"
    assert error.event_ids == ("a", "b")
    assert error.may_be_delivered is True
