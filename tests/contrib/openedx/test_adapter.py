"""How openedx-events finds the adapter, and what the adapter refuses before it connects."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from django.core.checks import Error  # noqa: E402
from openedx_events.event_bus import get_producer, make_single_consumer  # noqa: E402

from events_celery.checks import check_settings, define_events_elsewhere  # noqa: E402
from events_celery.contrib.openedx import (  # noqa: E402
    EventsCeleryConsumer,
    EventsCeleryProducer,
    wire,
)
from events_celery.exceptions import ConfigurationError  # noqa: E402
from tests.contrib.openedx.enrollments import COURSE_ENROLLMENT_CREATED, TOPIC  # noqa: E402


def test_openedx_events_loads_the_producer_and_consumer_the_settings_name(settings: Any) -> None:
    settings.EVENT_BUS_PRODUCER = "events_celery.contrib.openedx.create_producer"
    settings.EVENT_BUS_CONSUMER = "events_celery.contrib.openedx.EventsCeleryConsumer"
    assert isinstance(get_producer(), EventsCeleryProducer)
    consumer = make_single_consumer(topic=TOPIC, group_id="course-catalog")
    assert isinstance(consumer, EventsCeleryConsumer)
    assert consumer.queue.name == "course-catalog.enrollments"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"topic": TOPIC, "group_id": "Course Catalog"}, "group id 'Course Catalog'"),
        ({"topic": "bad topic", "group_id": "catalog"}, "'bad topic' is not a valid topic"),
        ({"topic": TOPIC, "group_id": "catalog", "check_backlog": True}, "['check_backlog']"),
    ],
)
def test_a_consumer_refuses_what_cannot_name_its_queues(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        EventsCeleryConsumer(**options)


def test_routes_to_open_edx_events_pass_the_checks_the_adapter_app_tells(settings: Any) -> None:
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        COURSE_ENROLLMENT_CREATED.event_type: {TOPIC: {"event_key_field": "x", "enabled": True}},
        "org.example.nobody.defines.v1": {TOPIC: {"enabled": True}},
    }

    def unknown() -> list[str]:
        return [str(m.msg) for m in check_settings() if isinstance(m, Error) and "E030" in m.id]

    assert len(unknown()) == 2
    remove = define_events_elsewhere(wire.is_open_edx_event)  # what the app's ready() does
    try:
        (message,) = unknown()
    finally:
        remove()
    assert "org.example.nobody.defines.v1" in message
    assert len(unknown()) == 2
