"""Testing helpers: they change state for a block and always restore it."""

from __future__ import annotations

import pytest

from events_celery import EventMetadata, EventSignal, registry
from events_celery.testing import capture_events, events_disabled, isolated_registry
from tests.testapp.events import ORDER_PLACED, PING

LOCAL = "org.example.test.testing.local.v1"
OTHER = "org.example.test.testing.other.v1"


@pytest.fixture
def local():
    with isolated_registry():
        yield EventSignal(LOCAL, data={"n": int})


# --- isolated_registry ----------------------------------------------------------------------


def test_isolated_registry_forgets_events_defined_inside():
    before = len(registry)

    with isolated_registry() as inside:
        EventSignal(LOCAL, data={"n": int})
        assert LOCAL in inside
        assert LOCAL in registry

    assert LOCAL not in registry
    assert len(registry) == before


def test_isolated_registry_lets_the_next_block_define_the_same_type():
    with isolated_registry():
        first = EventSignal(LOCAL, data={"n": int})
    with isolated_registry():
        second = EventSignal(LOCAL, data={"text": str})

        assert registry.get(LOCAL) is second
        assert second is not first


def test_isolated_registry_keeps_installed_events_visible():
    with isolated_registry() as inside:
        assert inside.get(ORDER_PLACED.event_type) is ORDER_PLACED


def test_isolated_registry_restores_state_even_when_the_block_raises():
    before = [signal.event_type for signal in registry.all()]

    def failing_test():
        with isolated_registry():
            EventSignal(LOCAL, data={"n": int})
            registry.unregister(PING.event_type)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_test()

    assert [signal.event_type for signal in registry.all()] == before
    assert registry.get(PING.event_type) is PING
    assert LOCAL not in registry


# --- events_disabled ------------------------------------------------------------------------


def test_events_disabled_silences_the_events_for_the_block(local):
    seen = []
    local.connect(lambda **kwargs: seen.append(kwargs["n"]), weak=False)

    with events_disabled(local):
        assert local.send_event(n=1) == []
    local.send_event(n=2)

    assert seen == [2]


def test_events_disabled_restores_even_when_the_block_raises(local):
    with pytest.raises(RuntimeError), events_disabled(local):
        raise RuntimeError("boom")

    assert local.enabled is True


def test_events_disabled_keeps_an_already_disabled_event_disabled(local):
    with isolated_registry():
        other = EventSignal(OTHER, data={"n": int})
        other.disable()

        with events_disabled(local, other):
            assert not local.enabled
            assert not other.enabled

        assert local.enabled is True
        assert other.enabled is False


def test_events_disabled_still_validates(local):
    with events_disabled(local), pytest.raises(ValueError, match="field 'n'"):
        local.send_event(n="one")


# --- capture_events -------------------------------------------------------------------------


def test_capture_events_records_payload_metadata_and_origin(local, settings):
    settings.EVENT_BUS_SERVICE_NAME = "orders"

    with capture_events(local) as events:
        local.send_event(n=3)

    [event] = events
    assert event.signal is local
    assert event.payload == {"n": 3}
    assert event.from_event_bus is False
    assert event.metadata.event_type == LOCAL
    assert event.metadata.source == "orders"


def test_capture_events_records_events_from_the_bus(local):
    metadata = EventMetadata.create(LOCAL, source="billing")

    with capture_events(local) as events:
        local.send_event_with_metadata(metadata, n=4)

    [event] = events
    assert event.from_event_bus is True
    assert event.metadata is metadata


def test_capture_events_records_each_signal_in_order(local):
    with isolated_registry():
        other = EventSignal(OTHER, data={"text": str})

        with capture_events(local, other) as events:
            local.send_event(n=1)
            other.send_event(text="two")
            local.send_event(n=3)

    assert [(event.signal.event_type, event.payload) for event in events] == [
        (LOCAL, {"n": 1}),
        (OTHER, {"text": "two"}),
        (LOCAL, {"n": 3}),
    ]


def test_capture_events_stops_recording_after_the_block(local):
    with capture_events(local) as events:
        pass
    local.send_event(n=1)

    assert events == []
    assert local.receivers_for_dispatch() == []


def test_capture_events_disconnects_even_when_the_block_raises(local):
    with pytest.raises(RuntimeError), capture_events(local):
        raise RuntimeError("boom")

    assert local.receivers_for_dispatch() == []


def test_capture_events_leaves_other_receivers_connected(local):
    seen = []

    def receiver(**kwargs):
        seen.append(kwargs["n"])

    local.connect(receiver)
    with capture_events(local) as events:
        local.send_event(n=1)

    local.send_event(n=2)
    assert seen == [1, 2]
    assert len(events) == 1


def test_nested_captures_each_record_the_event(local):
    with capture_events(local) as outer, capture_events(local) as inner:
        local.send_event(n=1)

    assert len(outer) == len(inner) == 1
