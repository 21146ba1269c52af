"""Golden schemas: writing them, keeping older ones, and checking definitions against them."""

# No `from __future__ import annotations`: payload classes here are defined inside functions
# (two versions of one record name), so their annotations must be real types.

import json

import attrs
import pytest

from events_celery import EventSignal
from events_celery import schema_store as store
from events_celery.avro import fingerprint
from events_celery.exceptions import ConfigurationError
from events_celery.testing import isolated_registry
from tests.testapp.events import ORDER_PLACED

PARCEL = "org.example.test.store.parcel.shipped.v1"


def define_parcel(version):
    """Define the parcel event as it was at ``version``: 1 has ``id``, 2 adds ``weight = 0``."""
    if version == 1:

        @attrs.frozen
        class ParcelData:
            id: int

    else:

        @attrs.frozen
        class ParcelData:
            id: int
            weight: int = 0

    return EventSignal(PARCEL, data={"parcel": ParcelData})


def stored_names(directory):
    return sorted(path.name for path in directory.iterdir())


def test_golden_path_is_the_event_type_with_avsc_suffix(tmp_path):
    assert store.golden_path(ORDER_PLACED, tmp_path) == tmp_path / f"{ORDER_PLACED.event_type}.avsc"


def test_schema_dir_defaults_to_the_defining_apps_avro_schemas():
    assert store.schema_dir(ORDER_PLACED).parts[-3:] == ("tests", "testapp", "avro_schemas")


def test_schema_dir_setting_wins_over_the_app(settings, tmp_path):
    settings.EVENT_BUS_SCHEMA_DIR = str(tmp_path)

    assert store.schema_dir(ORDER_PLACED) == tmp_path


def test_schema_dir_of_an_event_outside_an_app_says_what_to_do():
    with isolated_registry():
        signal = define_parcel(1)

        with pytest.raises(ConfigurationError) as excinfo:
            store.schema_dir(signal)

    assert PARCEL in str(excinfo.value)
    assert "EVENT_BUS_SCHEMA_DIR" in str(excinfo.value)


def test_write_golden_writes_the_current_schema_as_json(tmp_path):
    path, changed = store.write_golden(ORDER_PLACED, tmp_path / "schemas")

    assert changed is True
    assert path == tmp_path / "schemas" / f"{ORDER_PLACED.event_type}.avsc"
    assert json.loads(path.read_text()) == ORDER_PLACED.serializer.schema


def test_write_golden_twice_changes_nothing(tmp_path):
    store.write_golden(ORDER_PLACED, tmp_path)

    path, changed = store.write_golden(ORDER_PLACED, tmp_path)

    assert changed is False
    assert stored_names(tmp_path) == [path.name]


def test_rewriting_after_a_change_keeps_the_previous_schema_by_fingerprint(tmp_path):
    with isolated_registry():
        old = define_parcel(1)
        store.write_golden(old, tmp_path)
    with isolated_registry():
        new = define_parcel(2)
        path, changed = store.write_golden(new, tmp_path)

    old_print = fingerprint(old.serializer.schema)
    assert changed is True
    assert set(stored_names(tmp_path)) == {f"{PARCEL}.avsc", f"{PARCEL}.{old_print}.avsc"}
    assert json.loads(path.read_text()) == new.serializer.schema
    kept = tmp_path / f"{PARCEL}.{old_print}.avsc"
    assert json.loads(kept.read_text()) == old.serializer.schema


def test_current_definition_is_compatible_with_its_own_golden_schema(tmp_path):
    store.write_golden(ORDER_PLACED, tmp_path)

    assert store.check_against_stored(ORDER_PLACED, tmp_path) == []


def test_no_stored_schema_means_nothing_to_check(tmp_path):
    assert store.check_against_stored(ORDER_PLACED, tmp_path / "missing") == []


def test_adding_a_field_with_a_default_stays_compatible(tmp_path):
    with isolated_registry():
        store.write_golden(define_parcel(1), tmp_path)
    with isolated_registry():
        new = define_parcel(2)
        store.write_golden(new, tmp_path)

        assert store.check_against_stored(new, tmp_path) == []


def test_stored_field_without_default_that_the_definition_lacks_is_named(tmp_path):
    path, _ = store.write_golden(ORDER_PLACED, tmp_path)
    schema = json.loads(path.read_text())
    schema["fields"][0]["type"]["fields"].append({"name": "gift_message", "type": "string"})
    path.write_text(json.dumps(schema))

    problems = store.check_against_stored(ORDER_PLACED, tmp_path)

    assert [(p.event_type, p.field, p.path) for p in problems] == [
        (ORDER_PLACED.event_type, "order.gift_message", path)
    ]
    text = str(problems[0])
    assert ORDER_PLACED.event_type in text
    assert "field 'order.gift_message'" in text
    assert "default" in text


def test_removing_a_required_payload_argument_is_named(tmp_path):
    with isolated_registry():
        store.write_golden(EventSignal(PARCEL, data={"n": int, "extra": str}), tmp_path)
    with isolated_registry():
        narrow = EventSignal(PARCEL, data={"n": int})

        problems = store.check_against_stored(narrow, tmp_path)

    assert {p.field for p in problems} == {"extra"}


def test_find_schema_returns_a_stored_schema_by_fingerprint(settings, tmp_path):
    settings.EVENT_BUS_SCHEMA_DIR = str(tmp_path)
    with isolated_registry():
        old = define_parcel(1)
        store.write_golden(old, tmp_path)
    with isolated_registry():
        new = define_parcel(2)
        store.write_golden(new, tmp_path)

        found = store.find_schema(new, fingerprint(old.serializer.schema))
        current = store.find_schema(new, new.serializer.fingerprint)
        unknown = store.find_schema(new, "0123456789abcdef")

    assert found == old.serializer.schema
    assert current == new.serializer.schema
    assert unknown is None


def test_schemas_of_an_event_type_with_a_longer_name_are_not_mixed_up(tmp_path):
    with isolated_registry():
        short = EventSignal("org.example.test.store.box.v1", data={"n": int})
        longer = EventSignal("org.example.test.store.box.v1.v2", data={"text": str})
        store.write_golden(short, tmp_path)
        store.write_golden(longer, tmp_path)

        assert store.check_against_stored(short, tmp_path) == []
