"""EventRegistry: event definitions by event type."""

from __future__ import annotations

import pytest

from events_celery import EventRegistry, EventSignal, registry
from events_celery.exceptions import DuplicateEventTypeError, EventNotFoundError
from tests.testapp.events import ORDER_PLACED, PING

FIRST = "org.example.test.registry.first.v1"
SECOND = "org.example.test.registry.second.v1"


@pytest.fixture
def own_registry():
    """A registry of its own, holding two events (defined in a fixed, unsorted order)."""
    events = EventRegistry()
    EventSignal(SECOND, data={"n": int}, event_registry=events)
    EventSignal(FIRST, data={"n": int}, event_registry=events)
    return events


def test_get_returns_the_definition(own_registry):
    signal = own_registry.get(FIRST)

    assert isinstance(signal, EventSignal)
    assert signal.event_type == FIRST


def test_get_of_an_unknown_type_says_what_to_check(own_registry):
    with pytest.raises(EventNotFoundError) as excinfo:
        own_registry.get("org.example.test.registry.missing.v1")

    message = str(excinfo.value)
    assert "org.example.test.registry.missing.v1" in message
    assert "no event is defined" in message
    assert "INSTALLED_APPS" in message
    assert "events.py" in message


def test_event_not_found_is_a_lookup_error(own_registry):
    with pytest.raises(LookupError):
        own_registry.get("org.example.test.registry.missing.v1")


def test_find_returns_none_for_an_unknown_type(own_registry):
    assert own_registry.find("org.example.test.registry.missing.v1") is None
    assert own_registry.find(FIRST) is own_registry.get(FIRST)


def test_all_lists_definitions_sorted_by_event_type(own_registry):
    assert [signal.event_type for signal in own_registry.all()] == [FIRST, SECOND]


def test_contains_and_len(own_registry):
    assert FIRST in own_registry
    assert "org.example.test.registry.missing.v1" not in own_registry
    assert 42 not in own_registry
    assert len(own_registry) == 2


def test_unregister_forgets_the_definition(own_registry):
    own_registry.unregister(FIRST)

    assert FIRST not in own_registry
    assert own_registry.find(FIRST) is None
    assert [signal.event_type for signal in own_registry.all()] == [SECOND]


def test_unregister_of_an_unknown_type_is_not_an_error(own_registry):
    own_registry.unregister("org.example.test.registry.missing.v1")

    assert len(own_registry) == 2


def test_type_can_be_defined_again_after_unregister(own_registry):
    own_registry.unregister(FIRST)

    again = EventSignal(FIRST, data={"text": str}, event_registry=own_registry)

    assert own_registry.get(FIRST) is again


def test_duplicate_in_a_registry_is_rejected_and_keeps_the_first(own_registry):
    first = own_registry.get(FIRST)

    with pytest.raises(DuplicateEventTypeError, match=FIRST):
        EventSignal(FIRST, data={"n": int}, event_registry=own_registry)

    assert own_registry.get(FIRST) is first


def test_a_registry_of_its_own_does_not_touch_the_global_one(own_registry):
    assert FIRST not in registry
    assert registry.find(SECOND) is None


def test_same_type_can_live_in_two_registries():
    one, two = EventRegistry(), EventRegistry()

    a = EventSignal(FIRST, data={"n": int}, event_registry=one)
    b = EventSignal(FIRST, data={"n": int}, event_registry=two)

    assert one.get(FIRST) is a
    assert two.get(FIRST) is b


def test_global_registry_holds_the_installed_apps_events():
    assert registry.get(ORDER_PLACED.event_type) is ORDER_PLACED
    assert registry.get(PING.event_type) is PING


def test_isolated_block_forgets_its_definitions(own_registry):
    with own_registry.isolated():
        EventSignal(
            "org.example.test.registry.third.v1", data={"n": int}, event_registry=own_registry
        )
        assert "org.example.test.registry.third.v1" in own_registry

    assert "org.example.test.registry.third.v1" not in own_registry
    assert len(own_registry) == 2


def test_isolated_block_sees_earlier_definitions(own_registry):
    with own_registry.isolated() as inside:
        assert inside.get(FIRST).event_type == FIRST


def test_isolated_block_restores_definitions_it_removed(own_registry):
    with own_registry.isolated():
        own_registry.unregister(FIRST)

    assert FIRST in own_registry


def test_isolated_block_restores_even_when_it_raises(own_registry):
    def failing_test():
        with own_registry.isolated():
            EventSignal(
                "org.example.test.registry.third.v1", data={"n": int}, event_registry=own_registry
            )
            raise RuntimeError("test failed")

    with pytest.raises(RuntimeError, match="test failed"):
        failing_test()

    assert "org.example.test.registry.third.v1" not in own_registry
    assert [signal.event_type for signal in own_registry.all()] == [FIRST, SECOND]
