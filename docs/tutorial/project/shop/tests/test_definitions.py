from events_celery import EventSignal
from events_celery.testing import capture_events, isolated_registry


def test_falsy_values_are_not_missing():
    with isolated_registry():
        PINGED = EventSignal("org.example.test.pinged.v1", data={"count": int})
        with capture_events(PINGED) as events:
            PINGED.send_event(count=0)

    assert events[0].payload == {"count": 0}
