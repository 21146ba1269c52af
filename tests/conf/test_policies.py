"""The retry policies (conf/policies.py): publishing and receivers."""

from __future__ import annotations

import pytest
from django.core import checks

from events_celery.checks import check_settings
from events_celery.conf import PublishRetryPolicy, bus_settings


def test_retry_policy_is_read(settings):
    settings.EVENT_BUS_RETRY_POLICY = {"max_attempts": 2, "backoff": 1, "jitter": False}

    policy = bus_settings().retry_policy

    assert (policy.max_attempts, policy.backoff, policy.backoff_max, policy.jitter) == (
        2,
        1.0,
        300.0,
        False,
    )


def test_the_publish_retry_policy_counts_every_attempt(settings):
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_attempts": 2, "interval_step": 0.1}

    parsed = bus_settings()

    assert parsed.publish_retry_policy == PublishRetryPolicy(
        max_attempts=2, interval_start=0.0, interval_step=0.1, interval_max=2.0
    )
    assert parsed.problems == ()


def test_the_old_max_retries_key_still_counts_and_check_warns_it_is_deprecated(settings):
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_retries": 2}

    parsed = bus_settings()
    [message] = [m for m in check_settings() if m.id == "events_celery.W006"]

    assert parsed.publish_retry_policy.max_attempts == 3  # two retries after the first
    assert message.level == checks.WARNING
    assert message.msg == "EVENT_BUS_PUBLISH_RETRY_POLICY['max_retries'] is deprecated"
    assert "'max_attempts': 3" in message.hint
    parsed.raise_for_problems()  # a warning: the settings can be used


def test_max_attempts_wins_over_the_old_key(settings):
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"max_retries": 9, "max_attempts": 2}

    parsed = bus_settings()

    assert parsed.publish_retry_policy.max_attempts == 2
    assert [p.id for p in parsed.problems] == ["W006"]


@pytest.mark.parametrize("config", [{"max_attempts": 0}, {"max_retries": -1}])
def test_fewer_than_one_publish_attempt_is_an_error(settings, config):
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = config

    parsed = bus_settings()

    assert "E021" in [p.id for p in parsed.problems]
    assert parsed.publish_retry_policy.max_attempts == 4
