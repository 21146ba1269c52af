"""The public surface: what ``import events_celery`` promises."""

from __future__ import annotations

from importlib import metadata

import pytest

import events_celery
from events_celery import exceptions


@pytest.mark.parametrize("name", events_celery.__all__)
def test_every_name_in_all_is_importable(name):
    assert getattr(events_celery, name) is not None


def test_all_has_no_duplicates():
    assert len(set(events_celery.__all__)) == len(events_celery.__all__)


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from events_celery import *", namespace)

    assert set(namespace) - {"__builtins__"} == set(events_celery.__all__)


def test_version_is_the_installed_distribution_version():
    assert isinstance(events_celery.__version__, str)
    assert events_celery.__version__
    assert events_celery.__version__ == metadata.version("events_celery")


def test_the_names_a_user_needs_are_public():
    for name in ("EventSignal", "EventMetadata", "PayloadValidationError", "PublishError"):
        assert name in events_celery.__all__


def test_every_error_derives_from_the_one_base():
    errors = [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]

    assert len(errors) > 5
    assert all(issubclass(error, events_celery.EventsCeleryError) for error in errors)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (events_celery.PayloadValidationError, ValueError),
        (events_celery.DecodeError, ValueError),
        (exceptions.InvalidEventTypeError, ValueError),
        (exceptions.UnsupportedTypeError, TypeError),
        (exceptions.EventNotFoundError, LookupError),
        (exceptions.MetadataError, ValueError),
    ],
)
def test_errors_inherit_the_builtin_that_fits(error, builtin):
    assert issubclass(error, builtin)


def test_payload_validation_error_carries_event_type_and_field():
    error = events_celery.PayloadValidationError("org.example.a.v1", "order.total", "is bad")

    assert (error.event_type, error.field, error.problem) == (
        "org.example.a.v1",
        "order.total",
        "is bad",
    )
    assert str(error) == "org.example.a.v1: field 'order.total' is bad"


def test_publish_error_carries_the_event_id_and_topic():
    error = events_celery.PublishError("not confirmed", event_id="abc", topic="orders")

    assert (error.event_id, error.topic, str(error)) == ("abc", "orders", "not confirmed")


def test_no_module_is_hidden_by_an_object_of_the_same_name():
    import importlib
    import pkgutil
    import types

    for module in pkgutil.iter_modules(events_celery.__path__):
        value = getattr(events_celery, module.name, None)
        if value is not None:
            assert isinstance(value, types.ModuleType), f"events_celery.{module.name}"
        importlib.import_module(f"events_celery.{module.name}")
