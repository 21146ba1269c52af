"""Idempotent receivers with once_per_event."""

from __future__ import annotations

import pytest

from events_celery import EventMetadata, once_per_event
from tests.testapp.events import PING


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.cache import caches

    caches["default"].clear()


def metadata():
    return EventMetadata.create(PING.event_type, source="tests")


def test_a_receiver_runs_once_for_two_deliveries_of_one_event():
    calls = []

    @once_per_event
    def handle(metadata, n, **kwargs):
        calls.append(n)
        return "done"

    event = metadata()
    first = handle(signal=PING, sender=None, metadata=event, from_event_bus=True, n=1)
    second = handle(signal=PING, sender=None, metadata=event, from_event_bus=True, n=1)

    assert (first, second, calls) == ("done", None, [1])


def test_another_event_runs_again():
    calls = []

    @once_per_event
    def handle(metadata, n, **kwargs):
        calls.append(n)

    handle(metadata=metadata(), n=1)
    handle(metadata=metadata(), n=2)

    assert calls == [1, 2]


def test_a_receiver_that_raised_runs_again_on_the_retry():
    calls = []

    @once_per_event(timeout=60)
    def handle(metadata, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    event = metadata()
    with pytest.raises(RuntimeError):
        handle(metadata=event)
    handle(metadata=event)
    handle(metadata=event)

    assert len(calls) == 2


def test_the_wrapped_receiver_keeps_its_receiver_name_and_connects():
    @once_per_event
    def handle(metadata, **kwargs):
        return None

    PING.connect(handle)
    try:
        assert PING.receiver_name(handle).endswith(
            "test_the_wrapped_receiver_keeps_its_receiver_name_and_connects.<locals>.handle"
        )
    finally:
        PING.disconnect(handle)
