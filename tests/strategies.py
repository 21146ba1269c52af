"""Hypothesis strategies shared by the tests of metadata and of the wire format."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from events_celery.metadata import EventMetadata
from events_celery.signals import EVENT_TYPE_PATTERN

texts = st.text(min_size=1, max_size=40)

#: Any valid metadata.
metadata_strategy = st.builds(
    EventMetadata,
    id=st.uuids(),
    event_type=st.from_regex(EVENT_TYPE_PATTERN, fullmatch=True),
    minor_version=st.integers(min_value=0, max_value=2**63),
    source=texts,
    source_host=texts,
    time=st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.just(UTC),
    ),
    spec_version=st.just("1.0"),
    source_lib=texts,
)
