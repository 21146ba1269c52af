"""Receivers: their bus names, their own retry options, and the attempt number."""

from __future__ import annotations

import pytest

from events_celery import EventSignal, current_attempt, receiver
from events_celery.conf import RetryPolicy
from events_celery.exceptions import EventDefinitionError
from events_celery.receivers import ReceiverOptions, attempt, names_of, options_for
from events_celery.testing import isolated_registry


@pytest.fixture
def ping():
    with isolated_registry():
        yield EventSignal("org.example.options.ping.v1", data={"n": int})


def test_the_decorator_connects_the_receiver_with_its_options(ping):
    @receiver(ping, retry={"max_attempts": 8, "backoff": 0.5}, give_up_on=(ValueError,))
    def handle(n, **kwargs):
        return n * 2

    assert ping.send_event(n=2) == [(handle, 4)]
    options = options_for(handle)
    assert options.retry == RetryPolicy(max_attempts=8, backoff=0.5)
    assert options.give_up_on == (ValueError,)


def test_a_receiver_connected_plainly_has_the_default_options(ping):
    def handle(**kwargs):
        pass

    ping.connect(handle)

    assert options_for(handle) == ReceiverOptions()


def test_invalid_retry_options_are_refused_naming_the_problem(ping):
    with pytest.raises(EventDefinitionError, match=r"max_attempts'\] is 0"):
        receiver(ping, retry={"max_attempts": 0})


def test_unknown_retry_keys_are_refused(ping):
    with pytest.raises(EventDefinitionError, match="unknown key"):
        receiver(ping, retry={"attempts": 3})


def test_give_up_on_must_be_exception_classes(ping):
    with pytest.raises(EventDefinitionError, match="tuple of exception classes"):
        receiver(ping, give_up_on=ValueError)  # type: ignore[arg-type]


def test_the_attempt_number_is_one_outside_a_workers_retries(ping):
    seen = []

    @receiver(ping)
    def handle(**kwargs):
        seen.append(current_attempt())

    ping.send_event(n=1)
    with attempt(3):
        ping.send_event(n=1)

    assert seen == [1, 3]
    assert current_attempt() == 1


def test_a_connected_receiver_is_found_by_its_bus_name(ping):
    def handle(**kwargs):
        pass

    def other(**kwargs):
        pass

    ping.connect(handle, weak=False)
    ping.connect(other, weak=False, dispatch_uid="the-other")
    names = names_of(ping)

    assert names.find(ping.receiver_name(handle)) is handle
    assert names.find("the-other") is other
    assert names.find("nobody") is None


def test_a_disconnected_receiver_is_not_found_by_its_name(ping):
    def handle(**kwargs):
        pass

    ping.connect(handle, weak=False, dispatch_uid="leaving")
    ping.disconnect(dispatch_uid="leaving")

    assert names_of(ping).find("leaving") is None


def test_a_receiver_still_connected_keeps_its_name(ping):
    """Django keeps a dispatch_uid receiver connected when disconnected without the uid."""

    def handle(**kwargs):
        pass

    ping.connect(handle, weak=False, dispatch_uid="staying")
    assert ping.disconnect(handle) is False

    assert handle in ping.receivers_for_dispatch()
    assert ping.receiver_name(handle) == "staying"
    assert names_of(ping).find("staying") is handle
