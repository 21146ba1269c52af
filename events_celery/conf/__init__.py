"""Settings of events_celery, read from Django settings.

Each setting is declared once, in :mod:`events_celery.conf.declarations`, with its name, type,
default, summary and check ids; :doc:`/reference/settings` documents each one.
:func:`bus_settings` returns them parsed and cached (the cache is cleared when Django's
``setting_changed`` fires, so ``override_settings`` works in tests). Parsing never raises:
problems are collected, and ``manage.py check`` reports all of them at once (see
:mod:`events_celery.checks`); code that cannot work with broken settings calls
:meth:`BusSettings.raise_for_problems`.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from events_celery.conf.declarations import SETTINGS, Setting
from events_celery.conf.parsing import BusSettings, parse
from events_celery.conf.policies import PublishRetryPolicy, RetryPolicy, parse_retry_policy
from events_celery.conf.problems import Problem, Problems
from events_celery.conf.routing import Route, Subscription

__all__ = [
    "SETTINGS",
    "BusSettings",
    "Problem",
    "Problems",
    "PublishRetryPolicy",
    "RetryPolicy",
    "Route",
    "Setting",
    "Subscription",
    "bus_settings",
    "parse_retry_policy",
]

_cache: BusSettings | None = None


def bus_settings() -> BusSettings:
    """Return the parsed settings (cached until a setting changes)."""
    global _cache
    if _cache is None:
        _cache = parse()
    return _cache


@receiver(setting_changed)
def _clear_cache(**kwargs: Any) -> None:
    global _cache
    _cache = None
