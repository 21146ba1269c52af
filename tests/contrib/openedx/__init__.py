"""Tests of events_celery.contrib.openedx; they need openedx-events (the ``openedx`` extra).

Where it is not installed they are skipped, except where ``EVENTS_CELERY_REQUIRE_OPENEDX=1``
(the tox env ``py311-openedx`` that CI runs): there a missing package fails the run.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def require_openedx_events() -> None:
    """Skip the calling test module without openedx-events, or fail where it is required."""
    if importlib.util.find_spec("openedx_events") is not None:
        return
    reason = "openedx-events is not installed (pip install 'events_celery[openedx]')"
    if os.environ.get("EVENTS_CELERY_REQUIRE_OPENEDX") == "1":
        pytest.fail(f"{reason}, and EVENTS_CELERY_REQUIRE_OPENEDX=1 requires it")
    pytest.skip(reason, allow_module_level=True)
