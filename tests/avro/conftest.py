"""Fixtures for the Avro tests."""

from __future__ import annotations

import pytest

from events_celery.avro import CodecRegistry

from .payloads import CourseKey


@pytest.fixture
def registry() -> CodecRegistry:
    """A fresh codec registry that knows CourseKey (carried as an Avro string)."""
    fresh = CodecRegistry()
    fresh.register(CourseKey, "string", to_avro=str, from_avro=CourseKey.from_string)
    return fresh
