"""System checks: ``manage.py check`` reports every misconfiguration at once."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import attrs
import django
import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from events_celery import EventSignal
from events_celery.checks import check_settings
from events_celery.conf import SETTINGS
from events_celery.testing import isolated_registry
from tests.testapp.events import ORDER_PLACED, PING

UNKNOWN = "org.example.shop.order.cancelled.v1"


def by_id(messages):
    return {message.id: message for message in messages}


@pytest.fixture
def broken(settings):
    """Settings with one problem of each kind the checks report."""
    settings.EVENT_BUS_SERVICE_NAME = None
    settings.EVENT_BUS_QUEUE_TYPE = "mirrored"
    settings.EVENT_BUS_RETRY_POLICY = {"max_attempts": 0}
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        UNKNOWN: {"orders": {}},
        ORDER_PLACED.event_type: {
            "bad topic!": {},
            "orders": {"event_key_field": "order.customer.phone"},
        },
    }
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"event_types": [PING.event_type, UNKNOWN]}}
    return settings


def test_valid_configuration_has_no_errors(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": "order.customer.id"}},
        PING.event_type: {"pings": {"event_key_field": "n", "enabled": True}},
    }
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"event_types": [ORDER_PLACED.event_type]},
        "pings": {},
    }
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    settings.EVENT_BUS_RETRY_POLICY = {"max_attempts": 3, "backoff": 1.0, "backoff_max": 60}

    assert check_settings() == []


def test_check_command_passes_with_a_valid_configuration():
    call_command("check")


def test_check_reports_every_problem_at_once(broken):
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    output = str(excinfo.value)
    for problem_id in ("E001", "E006", "E010", "E022", "E030", "E031", "E032"):
        assert f"events_celery.{problem_id}" in output
    assert output.count("HINT:") >= 7


def test_every_problem_is_an_error_with_a_hint(broken):
    messages = check_settings()

    assert sorted(by_id(messages)) == [
        f"events_celery.{problem_id}"
        for problem_id in ("E001", "E006", "E010", "E022", "E030", "E031", "E032")
    ]
    assert all(message.level == checks.ERROR for message in messages)
    assert all(message.hint for message in messages)


def test_unknown_produced_event_type_is_e030(broken):
    error = by_id(check_settings())["events_celery.E030"]

    assert UNKNOWN in error.msg
    assert "INSTALLED_APPS" in error.hint


def test_event_key_field_that_is_not_a_payload_field_is_e031(broken):
    error = by_id(check_settings())["events_celery.E031"]

    assert "'order.customer.phone'" in error.msg
    assert "'phone'" in error.msg
    assert "['order']" in error.hint


@pytest.mark.parametrize("key_field", ["order.nope", "customer.id", "order.total.cents", ""])
def test_event_key_field_paths_that_lead_nowhere_are_e031(settings, key_field):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": key_field}}
    }

    assert list(by_id(check_settings())) == ["events_celery.E031"]


def test_bad_topic_name_is_e006(broken):
    error = by_id(check_settings())["events_celery.E006"]

    assert "'bad topic!'" in error.msg
    assert "letters, digits" in error.hint


def test_bad_queue_type_is_e010(broken):
    error = by_id(check_settings())["events_celery.E010"]

    assert "'mirrored'" in error.msg
    assert "quorum" in error.hint


def test_bad_retry_policy_is_e022(broken):
    error = by_id(check_settings())["events_celery.E022"]

    assert "max_attempts" in error.msg
    assert ">= 1" in error.hint


def test_missing_service_name_is_e001(broken):
    error = by_id(check_settings())["events_celery.E001"]

    assert "EVENT_BUS_SERVICE_NAME" in error.msg
    assert "EVENT_BUS_SERVICE_NAME = 'orders'" in error.hint


def test_unknown_consumed_event_type_is_e032(broken):
    [error] = [m for m in check_settings() if m.id == "events_celery.E032"]

    assert "'pings'" in error.msg
    assert UNKNOWN in error.msg
    assert PING.event_type not in error.msg
    assert "install the app" in error.hint


def test_reserved_topic_name_is_e033(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {"events_celery.tasks": {}}

    error = by_id(check_settings())["events_celery.E033"]

    assert "events_celery." in error.msg


def test_publishing_without_a_broker_url_is_a_warning(settings):
    settings.CELERY_BROKER_URL = None
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {}}}

    [warning] = check_settings()

    assert warning.id == "events_celery.W001"
    assert warning.level == checks.WARNING
    assert "CELERY_BROKER_URL" in warning.hint


def test_no_broker_url_is_fine_when_nothing_is_published(settings):
    settings.CELERY_BROKER_URL = None

    assert check_settings() == []


def test_disabled_route_of_an_unknown_event_is_still_reported(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {UNKNOWN: {"orders": {"enabled": False}}}

    assert list(by_id(check_settings())) == ["events_celery.E030"]


def test_checks_are_registered_with_django():
    assert check_settings in checks.registry.registry.get_checks()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_ACCEPT_CONTENT", ["json", "pickle"]),
        ("CELERY_TASK_SERIALIZER", "pickle"),
        ("CELERY_RESULT_ACCEPT_CONTENT", ["application/x-python-serialize", "pickle"]),
    ],
)
def test_pickle_in_celery_serialization_settings_is_an_error(settings, name, value):
    setattr(settings, name, value)

    errors = [m for m in check_settings() if m.id == "events_celery.E040"]

    assert len(errors) == 1
    assert name in errors[0].msg
    assert "JSON" in errors[0].hint


def test_json_only_celery_serialization_passes(settings):
    settings.CELERY_ACCEPT_CONTENT = ["json"]
    settings.CELERY_TASK_SERIALIZER = "json"

    assert not [m for m in check_settings() if m.id == "events_celery.E040"]


def test_every_problem_of_one_route_is_reported_at_once(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        PING.event_type: {"pings": {"event_key": "n", "enabled": "yes", "event_key_field": 3}}
    }

    messages = [m.msg for m in check_settings() if m.id == "events_celery.E005"]

    assert len(messages) == 3
    assert any("unknown key(s) ['event_key']" in m for m in messages)
    assert any("enabled is 'yes'" in m for m in messages)
    assert any("event_key_field is not a string" in m for m in messages)


def test_unknown_retry_policy_keys_are_named_and_the_rest_still_checked(settings):
    settings.EVENT_BUS_RETRY_POLICY = {"bakoff": 1, "max_attempts": 0}

    messages = [m.msg for m in check_settings() if m.id == "events_celery.E022"]

    assert any("unknown key(s) ['bakoff']" in m for m in messages)
    assert any("max_attempts" in m for m in messages)


def test_a_bad_event_key_field_names_the_fields_where_the_path_went_wrong(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": "order.customer.mail"}}
    }

    (message,) = [m.msg for m in check_settings() if m.id == "events_celery.E031"]

    assert "'mail'" in message
    assert "fields there: id, email" in message


def test_a_worker_refuses_to_start_with_what_check_reports(settings):
    from events_celery.bus.consume.step import refuse_misconfiguration
    from events_celery.exceptions import ConfigurationError

    settings.EVENT_BUS_CONSUMER_CONFIG = {"orders": {"event_types": ["org.example.typo.v1"]}}

    with pytest.raises(ConfigurationError, match=r"E032.*org\.example\.typo\.v1"):
        refuse_misconfiguration()


def test_a_consumer_with_its_own_event_broker_url_is_an_error(settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@rabbit-a:5672//"
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@rabbit-b:5672//"
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}

    (error,) = [m for m in check_settings() if m.id == "events_celery.E041"]

    assert "EVENT_BUS_BROKER_URL" in error.msg
    assert "unset" in error.hint


def test_outbox_mode_on_a_database_that_is_not_configured_is_e012(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {}}}
    settings.EVENT_BUS_DB_ALIAS = "events"

    error = by_id(check_settings())["events_celery.E012"]

    assert "'events'" in error.msg
    assert "direct" in error.hint


def test_direct_mode_needs_no_database(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {}}}
    settings.EVENT_BUS_DB_ALIAS = "events"
    settings.EVENT_BUS_PUBLISH_MODE = "direct"

    assert "events_celery.E012" not in by_id(check_settings())


def test_one_run_reports_a_bad_route_option_and_a_bad_key_field_together(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {
            "orders": {"enabled": "yes", "event_key_field": "order.custmer.id"}
        }
    }

    found = by_id(check_settings())

    assert "events_celery.E005" in found
    assert "custmer" in found["events_celery.E031"].msg


def test_an_event_key_field_naming_a_whole_record_is_e031(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": "order.customer"}}
    }

    error = by_id(check_settings())["events_celery.E031"]

    assert "names a whole record (CustomerData)" in error.msg
    assert "'order.customer.id'" in error.msg


def test_a_consuming_service_on_celerys_shared_default_queue_is_warned(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}

    settings.CELERY_TASK_DEFAULT_QUEUE = "celery"
    assert "events_celery.W002" in by_id(check_settings())
    settings.CELERY_TASK_DEFAULT_QUEUE = "tests.celery"
    assert "events_celery.W002" not in by_id(check_settings())


def test_the_outbox_on_sqlite_in_deferred_mode_is_warned(settings, monkeypatch):
    from django.db import connections

    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {}}}
    database = connections.settings["default"]
    monkeypatch.setitem(database, "OPTIONS", {"timeout": 20})  # no transaction_mode

    found = by_id(check_settings())

    if "sqlite" in database["ENGINE"] and django.VERSION >= (5, 1):
        assert "database is locked" in found["events_celery.W003"].msg
    else:
        assert "events_celery.W003" not in found


def test_one_run_reports_a_bad_topic_name_and_the_rest_of_its_route(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {
            "bad topic!": {"event_key_field": "order.custmer.id", "enabled": "yes", "typo": 1}
        }
    }

    found = [m.id for m in check_settings()]

    assert sorted(found) == [
        "events_celery.E005",
        "events_celery.E005",
        "events_celery.E006",
        "events_celery.E031",
    ]


def test_one_run_reports_a_bad_consumer_topic_and_its_unknown_event_type(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {"bad topic!": {"event_types": [UNKNOWN]}}

    found = by_id(check_settings())

    assert sorted(found) == ["events_celery.E007", "events_celery.E032"]
    assert UNKNOWN in found["events_celery.E032"].msg


def test_one_run_reports_unknown_consumer_keys_and_bad_event_types_of_one_topic(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "pings": {"event_type": PING.event_type, "event_types": []}
    }

    messages = [m.msg for m in check_settings() if m.id == "events_celery.E007"]

    assert len(messages) == 2
    assert any("'event_type'" in m for m in messages)
    assert any("non-empty list" in m for m in messages)


def test_one_run_reports_a_reserved_topic_and_its_unknown_keys(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "events_celery.tasks": {"typo": 1, "event_types": [UNKNOWN]}
    }

    found = sorted(m.id for m in check_settings())

    assert found == ["events_celery.E007", "events_celery.E032", "events_celery.E033"]


def test_a_consumer_topic_with_a_problem_is_not_consumed(settings):
    from events_celery.conf import bus_settings

    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"typo": 1}}

    assert bus_settings().subscriptions == ()
    assert not bus_settings().subscribes_to(PING.event_type)


def test_a_misspelled_setting_is_warned_with_the_name_it_is_close_to(settings):
    settings.EVENT_BUS_PUBLISH_TIMOUT = 2.0
    settings.EVENT_BUS_RETRY_POLCY = {"max_attempts": 2}

    warnings = [m for m in check_settings() if m.id == "events_celery.W004"]

    assert [(w.level, w.msg) for w in warnings] == [
        (
            checks.WARNING,
            "EVENT_BUS_PUBLISH_TIMOUT is not a setting of events_celery; did you mean "
            "EVENT_BUS_PUBLISH_TIMEOUT?",
        ),
        (
            checks.WARNING,
            "EVENT_BUS_RETRY_POLCY is not a setting of events_celery; did you mean "
            "EVENT_BUS_RETRY_POLICY?",
        ),
    ]
    assert "rename it to EVENT_BUS_PUBLISH_TIMEOUT" in warnings[0].hint


def test_the_settings_of_openedx_events_and_its_buses_are_not_warned_about(settings):
    settings.EVENT_BUS_PRODUCER = "events_celery.contrib.openedx.create_producer"
    settings.EVENT_BUS_CONSUMER = "events_celery.contrib.openedx.EventsCeleryConsumer"
    settings.EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS = "localhost:9092"
    settings.EVENT_BUS_REDIS_CONNECTION_URL = "redis://localhost:6379/0"
    settings.EVENT_BUS_REDIS_TOPIC_PREFIX = "dev"
    settings.EVENT_BUS_DASHBOARD_URL = "https://example.org/"  # far from every setting

    assert check_settings() == []


def test_the_documented_check_ids_are_the_ones_the_code_reports():
    root = Path(__file__).resolve().parent.parent
    commands = (root / "docs" / "reference" / "commands.rst").read_text()
    table = commands[commands.index(".. _check-ids:") :]
    documented = re.findall(r"[EW]\d{3}", "".join(re.findall(r"^   \* - (.*)$", table, re.M)))
    source = "".join(path.read_text() for path in (root / "events_celery").rglob("*.py"))

    reported = set(re.findall(r"\"(?:events_celery\.)?([EW]\d{3})\"", source))

    assert len(documented) == len(set(documented))
    assert set(documented) == reported
    declared = {check_id for setting in SETTINGS for check_id in setting.check_ids}
    # Only the checks of Celery's own settings, and of EVENT_BUS_* names that are no setting,
    # belong to no declared setting.
    assert reported - declared == {"E040", "W002", "W004"}


def test_a_route_with_a_problem_does_not_hide_the_checks_of_a_publishing_service(settings):
    settings.CELERY_BROKER_URL = None
    settings.EVENT_BUS_DB_ALIAS = "events"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": "yes"}}}

    found = sorted(by_id(check_settings()))

    assert found == ["events_celery.E005", "events_celery.E012", "events_celery.W001"]


def test_a_disabled_route_is_not_publishing(settings):
    settings.CELERY_BROKER_URL = None
    settings.EVENT_BUS_DB_ALIAS = "events"
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"enabled": False}}}

    assert check_settings() == []


def test_a_consumer_topic_with_a_problem_does_not_hide_the_checks_of_a_consuming_service(
    settings,
):
    settings.CELERY_TASK_DEFAULT_QUEUE = "celery"
    settings.CELERY_BROKER_URL = "amqp://guest:guest@rabbit-a:5672//"
    settings.EVENT_BUS_BROKER_URL = "amqp://guest:guest@rabbit-b:5672//"
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {"typo": 1}}

    found = sorted(by_id(check_settings()))

    assert found == [
        "events_celery.E007",
        "events_celery.E041",
        "events_celery.W002",
        "events_celery.W007",  # rabbit-b, plain AMQP off this machine
    ]


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672//",
        "amqp://rabbit.example",
        "amqp://a.example:5672/staging;amqp://b.example:5672//",
    ],
)
def test_a_topic_prefix_on_the_default_virtual_host_of_a_consumer_is_w005(settings, url):
    settings.CELERY_BROKER_URL = url
    settings.CELERY_TASK_DEFAULT_QUEUE = "tests.celery"
    settings.EVENT_BUS_TOPIC_PREFIX = "staging."
    settings.EVENT_BUS_CONSUMER_CONFIG = {"pings": {}}

    warning = by_id(check_settings())["events_celery.W005"]

    assert "'staging.'" in warning.msg
    assert "tests.events_celery.tasks" in warning.msg
    assert "virtual host of its own" in warning.hint


@pytest.mark.parametrize(
    ("prefix", "url", "consumer_config"),
    [
        ("staging.", "amqp://guest:guest@127.0.0.1:5672/staging", {"pings": {}}),
        ("staging.", "amqp://guest:guest@127.0.0.1:5672/%2Fstaging", {"pings": {}}),
        ("", "amqp://guest:guest@127.0.0.1:5672//", {"pings": {}}),
        ("staging.", "amqp://guest:guest@127.0.0.1:5672//", {}),  # no queue of its own
        ("staging.", "memory://localhost/", {"pings": {}}),
    ],
)
def test_a_topic_prefix_is_not_warned_where_no_environment_can_share_its_queues(
    settings, prefix, url, consumer_config
):
    settings.CELERY_BROKER_URL = url
    settings.CELERY_TASK_DEFAULT_QUEUE = "tests.celery"
    settings.EVENT_BUS_TOPIC_PREFIX = prefix
    settings.EVENT_BUS_CONSUMER_CONFIG = consumer_config

    assert "events_celery.W005" not in by_id(check_settings())


@attrs.frozen
class _Customer:
    customer_id: UUID


@attrs.frozen
class _Order:
    customer: _Customer
    order_id: UUID


def test_the_e031_hint_gives_an_example_from_the_payload_of_the_event(settings):
    with isolated_registry():
        placed = EventSignal("org.example.hint.order.placed.v1", data={"order": _Order})
        settings.EVENT_BUS_PRODUCER_CONFIG = {
            placed.event_type: {"orders": {"event_key_field": "order.id"}}
        }

        error = by_id(check_settings())["events_celery.E031"]

    assert "'order.id'" in error.msg
    assert "'id'" in error.msg
    assert error.hint.endswith("e.g. 'order.customer.customer_id'")


def test_the_e031_hint_example_of_a_plain_payload_is_the_argument(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {"pings": {"event_key_field": "n.id"}}}

    assert by_id(check_settings())["events_celery.E031"].hint.endswith("e.g. 'n'")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"order_by_key": "yes"}, "['order_by_key'] is 'yes'"),
        ({"order_by_key": True, "partitions": 0}, "['partitions'] is 0"),
        ({"order_by_key": True, "partitions": True}, "['partitions'] is True"),
        ({"order_by_key": True, "partitions": 257}, "['partitions'] is 257"),
        ({"order_by_key": True, "when_exhausted": "halt"}, "['when_exhausted'] is 'halt'"),
        ({"partitions": 4}, "sets partitions without 'order_by_key': True"),
    ],
)
def test_a_wrong_ordering_option_is_e034_and_the_topic_is_not_consumed(settings, options, fragment):
    settings.EVENT_BUS_CONSUMER_CONFIG = {"orders": options}

    (error,) = [m for m in check_settings() if m.id == "events_celery.E034"]
    assert fragment in error.msg
    from events_celery.conf import bus_settings

    assert bus_settings().subscriptions == ()


def test_an_ordered_topic_is_parsed_with_its_partitions_and_policy(settings):
    settings.EVENT_BUS_CONSUMER_CONFIG = {
        "orders": {"order_by_key": True, "partitions": 8, "when_exhausted": "stop"}
    }
    from events_celery.conf import bus_settings

    (subscription,) = bus_settings().subscriptions
    assert (subscription.order_by_key, subscription.partitions) == (True, 8)
    assert subscription.when_exhausted == "stop"
    assert not [m for m in check_settings() if m.id.startswith("events_celery.E03")]


def test_an_ordered_topic_this_service_publishes_without_a_key_is_e035(settings):
    settings.EVENT_BUS_PRODUCER_CONFIG = {ORDER_PLACED.event_type: {"orders": {}}}
    settings.EVENT_BUS_CONSUMER_CONFIG = {"orders": {"order_by_key": True}}

    (error,) = [m for m in check_settings() if m.id == "events_celery.E035"]
    assert repr(ORDER_PLACED.event_type) in error.msg
    assert "event_key_field" in error.hint

    settings.EVENT_BUS_PRODUCER_CONFIG = {
        ORDER_PLACED.event_type: {"orders": {"event_key_field": "order.id"}}
    }
    assert not [m for m in check_settings() if m.id == "events_celery.E035"]


def test_an_event_key_field_that_is_a_list_is_e031():
    with isolated_registry():
        listed = EventSignal("org.example.test.listed.v1", data={"tags": list[str]})
        from events_celery.bus.publish.routes import key_getter

        with pytest.raises(AttributeError, match="not a scalar"):
            key_getter(listed, "tags")
