"""The settings declarations (conf/declarations.py): one description of each setting."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from events_celery.conf import (
    SETTINGS,
    BusSettings,
    bus_settings,
)
from events_celery.conf.declarations import OTHER_LIBRARIES_PREFIXES, OTHER_LIBRARIES_SETTINGS

ORDER_PLACED = "org.example.shop.order.placed.v1"


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("old", ["on_commit", "immediate"])
def test_an_old_publish_mode_name_says_what_it_is_called_now(settings, old):
    settings.EVENT_BUS_PUBLISH_MODE = old

    (problem,) = bus_settings().problems

    assert problem.id == "E011"
    assert f"{old!r} is now called 'direct'" in problem.hint


def test_every_declared_setting_is_an_attribute_of_the_parsed_settings():
    fields = {field.name for field in attrs.fields(BusSettings)}

    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.name.startswith("EVENT_BUS_")
        assert setting.attr in fields
        assert setting.doc.endswith(".")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_each_declared_default_is_accepted_and_is_what_the_parsed_settings_hold(settings, setting):
    if setting.default is None:
        return  # required (the service name), or a default computed elsewhere
    setattr(settings, setting.name, setting.default)

    parsed = bus_settings()

    assert parsed.problems == ()
    value = getattr(parsed, setting.attr)
    if attrs.has(type(value)):  # a retry policy: its defaults are the declared dict
        value = attrs.asdict(value)
    if setting.name in ("EVENT_BUS_PRODUCER_CONFIG", "EVENT_BUS_CONSUMER_CONFIG"):
        assert not setting.default
        assert not value  # nothing routed, nothing consumed
    else:
        assert value == setting.default


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENT_BUS_SERVICE_NAME", None),
        ("EVENT_BUS_SERVICE_NAME", "Orders Service"),
        ("EVENT_BUS_TOPIC_PREFIX", "bad prefix!"),
        ("EVENT_BUS_BROKER_URL", 42),
        ("EVENT_BUS_PRODUCER_CONFIG", {ORDER_PLACED: {"bad topic": {"enabled": 1}}}),
        ("EVENT_BUS_CONSUMER_CONFIG", {"bad topic": {"event_types": []}}),
        ("EVENT_BUS_QUEUE_TYPE", "mirrored"),
        ("EVENT_BUS_PUBLISH_MODE", "on_commit"),
        ("EVENT_BUS_DB_ALIAS", ["default"]),
        ("EVENT_BUS_PUBLISH_TIMEOUT", 100.0),
        ("EVENT_BUS_PUBLISH_RETRY_POLICY", {"max_retries": -1}),
        ("EVENT_BUS_PUBLISH_WINDOW", 0),
        ("EVENT_BUS_MAX_MESSAGE_SIZE", True),
        ("EVENT_BUS_OUTBOX_BATCH_SIZE", 1.5),
        ("EVENT_BUS_OUTBOX_LEASE", 0),
        ("EVENT_BUS_OUTBOX_SWEEP_INTERVAL", "2"),
        ("EVENT_BUS_OUTBOX_WARN_AFTER", -1),
        ("EVENT_BUS_RETRY_POLICY", {"max_attempts": 0, "jitter": 1}),
        ("EVENT_BUS_CONSUMER_BATCH_SIZE", 0),
        ("EVENT_BUS_CONSUMER_FLUSH_INTERVAL", 0),
        ("EVENT_BUS_MAX_REDELIVERIES", -1),
        ("EVENT_BUS_UNROUTED_MAX_LENGTH", None),
    ],
)
def test_a_problem_carries_a_check_id_its_setting_declares(settings, name, value):
    setattr(settings, name, value)
    declared = {setting.name: setting.check_ids for setting in SETTINGS}

    problems = bus_settings().problems

    assert problems
    assert {problem.id for problem in problems} <= set(declared[name])


def test_the_settings_reference_documents_each_declared_setting_once():
    reference = (ROOT / "docs" / "reference" / "settings.rst").read_text()

    documented = re.findall(r"^\.\. event-bus-setting:: (\S+)$", reference, re.MULTILINE)

    assert sorted(documented) == sorted(setting.name for setting in SETTINGS)
    # Types and defaults come from the declarations; the page states none of its own.
    assert ".. confval::" not in reference


def test_the_settings_reference_names_the_settings_of_other_libraries():
    reference = (ROOT / "docs" / "reference" / "settings.rst").read_text()

    for name in OTHER_LIBRARIES_SETTINGS:
        assert f"``{name}``" in reference
    for prefix in OTHER_LIBRARIES_PREFIXES:
        assert f"``{prefix}*``" in reference


def test_every_check_id_the_settings_readers_report_is_declared_by_a_setting():
    declared = {check_id for setting in SETTINGS for check_id in setting.check_ids}
    source = "".join(path.read_text() for path in (ROOT / "events_celery" / "conf").glob("*.py"))

    reported = set(re.findall(r"\"([EW]\d{3})\"", source))

    assert reported
    assert reported <= declared
