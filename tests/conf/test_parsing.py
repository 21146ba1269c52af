"""Reading the settings once (conf/parsing.py): defaults, problems collected, not raised."""

from __future__ import annotations

import pytest

from events_celery.conf import (
    PublishRetryPolicy,
    bus_settings,
)
from events_celery.exceptions import ConfigurationError

ORDER_PLACED = "org.example.shop.order.placed.v1"


def problem_ids():
    return [problem.id for problem in bus_settings().problems]


def test_defaults_of_a_minimal_configuration():
    settings = bus_settings()

    assert settings.service_name == "tests"
    assert settings.topic_prefix == ""
    assert settings.broker_url == "memory://"
    assert dict(settings.routes) == {}
    assert settings.subscriptions == ()
    assert settings.queue_type == "classic"
    assert settings.publish_mode == "outbox"
    assert settings.db_alias == "default"
    assert settings.publish_timeout == 5.0
    assert settings.publish_retry_policy == PublishRetryPolicy(
        max_attempts=4, interval_start=0.0, interval_step=0.5, interval_max=2.0
    )
    assert settings.publish_window == 1024
    assert settings.outbox_batch_size == 2000
    assert settings.outbox_lease == 30.0
    assert settings.outbox_sweep_interval == 2.0
    assert settings.outbox_warn_after == 60.0
    assert settings.retry_policy.max_attempts == 5
    assert settings.retry_policy.backoff == 2.0
    assert settings.retry_policy.backoff_max == 300.0
    assert settings.retry_policy.jitter is True
    assert settings.max_message_size == 1048576
    assert settings.unrouted_max_length == 10000
    assert settings.consumer_batch_size == 32
    assert settings.consumer_flush_interval == 0.005
    assert settings.max_redeliveries == 3
    assert settings.strict_receivers is False
    assert settings.schema_dir is None
    assert settings.problems == ()


def test_settings_are_read_again_after_a_change(settings):
    assert bus_settings().topic_prefix == ""

    settings.EVENT_BUS_TOPIC_PREFIX = "prod."

    assert bus_settings().topic_prefix == "prod."


def test_broker_url_falls_back_to_celery_and_can_be_overridden(settings):
    settings.CELERY_BROKER_URL = "amqp://celery-host//"
    assert bus_settings().broker_url == "amqp://celery-host//"

    settings.EVENT_BUS_BROKER_URL = "amqp://bus-host//"
    assert bus_settings().broker_url == "amqp://bus-host//"


def test_strict_receivers_and_schema_dir_are_read(settings, tmp_path):
    settings.EVENT_BUS_STRICT_RECEIVERS = True
    settings.EVENT_BUS_SCHEMA_DIR = tmp_path

    assert bus_settings().strict_receivers is True
    assert bus_settings().schema_dir == str(tmp_path)


@pytest.mark.parametrize(
    ("name", "value", "problem_id"),
    [
        ("EVENT_BUS_SERVICE_NAME", None, "E001"),
        ("EVENT_BUS_SERVICE_NAME", "Orders Service", "E002"),
        ("EVENT_BUS_TOPIC_PREFIX", "bad prefix!", "E003"),
        ("EVENT_BUS_BROKER_URL", 42, "E004"),
        ("EVENT_BUS_PRODUCER_CONFIG", ["not", "a", "dict"], "E005"),
        ("EVENT_BUS_PRODUCER_CONFIG", {ORDER_PLACED: {"orders": {"key": "x"}}}, "E005"),
        ("EVENT_BUS_PRODUCER_CONFIG", {ORDER_PLACED: {"orders": {"enabled": "yes"}}}, "E005"),
        ("EVENT_BUS_PRODUCER_CONFIG", {ORDER_PLACED: {"bad topic": {}}}, "E006"),
        ("EVENT_BUS_CONSUMER_CONFIG", {"bad topic": {}}, "E007"),
        ("EVENT_BUS_CONSUMER_CONFIG", {"orders": {"event_types": ORDER_PLACED}}, "E007"),
        ("EVENT_BUS_CONSUMER_CONFIG", {"orders": {"event_types": []}}, "E007"),
        ("EVENT_BUS_QUEUE_TYPE", "mirrored", "E010"),
        ("EVENT_BUS_PUBLISH_MODE", "later", "E011"),
        ("EVENT_BUS_PUBLISH_WINDOW", 0, "E020"),
        ("EVENT_BUS_MAX_REDELIVERIES", -1, "E020"),
        ("EVENT_BUS_OUTBOX_BATCH_SIZE", "500", "E020"),
        ("EVENT_BUS_OUTBOX_LEASE", 1.0, "E023"),
        ("EVENT_BUS_OUTBOX_SWEEP_INTERVAL", 0, "E020"),
        ("EVENT_BUS_OUTBOX_WARN_AFTER", None, "E020"),
        ("EVENT_BUS_PUBLISH_TIMEOUT", 0, "E020"),
        ("EVENT_BUS_MAX_MESSAGE_SIZE", "1MB", "E020"),
        ("EVENT_BUS_PUBLISH_RETRY_POLICY", {"retries": 3}, "E021"),
        ("EVENT_BUS_RETRY_POLICY", {"attempts": 3}, "E022"),
        ("EVENT_BUS_RETRY_POLICY", {"max_attempts": 0}, "E022"),
        ("EVENT_BUS_RETRY_POLICY", {"backoff": 10, "backoff_max": 5}, "E022"),
        ("EVENT_BUS_RETRY_POLICY", {"jitter": "yes"}, "E022"),
    ],
)
def test_misconfiguration_is_collected_not_raised(settings, name, value, problem_id):
    setattr(settings, name, value)

    problems = bus_settings().problems

    assert problem_id in [problem.id for problem in problems]
    assert all(problem.message and problem.hint for problem in problems)


def test_every_problem_is_collected_at_once(settings):
    settings.EVENT_BUS_SERVICE_NAME = None
    settings.EVENT_BUS_QUEUE_TYPE = "mirrored"
    settings.EVENT_BUS_PUBLISH_MODE = "later"

    assert problem_ids() == ["E001", "E010", "E011"]


def test_broken_values_fall_back_to_defaults(settings):
    settings.EVENT_BUS_QUEUE_TYPE = "mirrored"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = -1

    assert bus_settings().queue_type == "classic"
    assert bus_settings().publish_timeout == 5.0


def test_raise_for_problems_lists_every_problem_with_its_hint(settings):
    settings.EVENT_BUS_SERVICE_NAME = None
    settings.EVENT_BUS_QUEUE_TYPE = "mirrored"

    with pytest.raises(ConfigurationError) as excinfo:
        bus_settings().raise_for_problems()

    message = str(excinfo.value)
    assert "E001: EVENT_BUS_SERVICE_NAME is not set" in message
    assert "EVENT_BUS_SERVICE_NAME = 'orders'" in message
    assert "E010: EVENT_BUS_QUEUE_TYPE is 'mirrored'" in message
    assert "quorum" in message


def test_raise_for_problems_is_silent_for_valid_settings():
    bus_settings().raise_for_problems()


def test_require_service_name_returns_it():
    assert bus_settings().require_service_name() == "tests"


@pytest.mark.parametrize("value", [None, "", "Orders Service"])
def test_require_service_name_says_how_to_set_it(settings, value):
    settings.EVENT_BUS_SERVICE_NAME = value

    with pytest.raises(ConfigurationError) as excinfo:
        bus_settings().require_service_name()

    assert "EVENT_BUS_SERVICE_NAME = 'orders'" in str(excinfo.value)


def test_infinite_count_setting_is_a_problem_not_a_crash(settings):
    settings.EVENT_BUS_MAX_MESSAGE_SIZE = float("inf")

    assert "E020" in problem_ids()


def test_nan_timeout_is_reported(settings):
    settings.EVENT_BUS_PUBLISH_TIMEOUT = float("nan")

    assert "E020" in problem_ids()


def test_celery_and_database_settings_the_checks_compare_are_read(settings, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://from-env//")
    settings.CELERY_ACCEPT_CONTENT = ["json", "pickle"]
    settings.CELERY_TASK_SERIALIZER = "json"
    settings.CELERY_TASK_DEFAULT_QUEUE = "tests.tasks"

    parsed = bus_settings()

    assert parsed.celery_broker_url == "amqp://from-env//"
    assert parsed.broker_url == "amqp://from-env//"
    assert parsed.celery_task_default_queue == "tests.tasks"
    assert parsed.celery_serializers == {
        "CELERY_ACCEPT_CONTENT": ("json", "pickle"),
        "CELERY_TASK_SERIALIZER": ("json",),
    }
    assert parsed.db_engine is not None
    settings.EVENT_BUS_DB_ALIAS = "missing"
    assert bus_settings().db_engine is None


def test_a_misspelled_setting_is_read_with_the_declared_name_it_is_close_to(settings):
    settings.EVENT_BUS_PUBLISH_TIMOUT = 2.0
    settings.EVENT_BUS_RETRY_POLCY = {"max_attempts": 2}

    parsed = bus_settings()

    assert parsed.misspelled_settings == {
        "EVENT_BUS_PUBLISH_TIMOUT": "EVENT_BUS_PUBLISH_TIMEOUT",
        "EVENT_BUS_RETRY_POLCY": "EVENT_BUS_RETRY_POLICY",
    }
    # Ignored: the declared settings keep their defaults, and reading them finds no problem.
    assert parsed.publish_timeout == 5.0
    assert parsed.problems == ()


@pytest.mark.parametrize(
    "name",
    [
        # openedx-events (docs/reference/event-bus-configurations, from openedx_events/event_bus)
        "EVENT_BUS_PRODUCER",
        "EVENT_BUS_CONSUMER",
        # edx-event-bus-kafka
        "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS",
        "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL",
        "EVENT_BUS_KAFKA_POLL_INTERVAL_SEC",
        "EVENT_BUS_KAFKA_CONSUMER_POLL_FAILURE_SLEEP",
        # edx-event-bus-redis
        "EVENT_BUS_REDIS_CONNECTION_URL",
        "EVENT_BUS_REDIS_STREAM_MAX_LEN",
        "EVENT_BUS_REDIS_CONSUMER_CONSECUTIVE_ERRORS_LIMIT",
        # a bus's name under its own prefix, even one as close to ours as this
        "EVENT_BUS_REDIS_TOPIC_PREFIX",
        "EVENT_BUS_KAFKA_TOPIC_PREFIX",
    ],
)
def test_a_setting_another_library_reads_is_not_taken_for_a_misspelling(settings, name):
    setattr(settings, name, "x")

    assert bus_settings().misspelled_settings == {}


def test_a_setting_far_from_every_declared_name_is_not_taken_for_a_misspelling(settings):
    settings.EVENT_BUS_DASHBOARD_URL = "https://example.org/"
    settings.EVENT_BUS_BROKER = "amqp://"  # a word short of EVENT_BUS_BROKER_URL: not close

    assert bus_settings().misspelled_settings == {}
