"""Retry timing and task arguments of the receiver tasks (no broker)."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from events_celery.bus.tasks import envelope, retry_delay
from events_celery.conf import RetryPolicy


def test_backoff_doubles_from_the_second_attempt_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=2.0, backoff_max=10.0, jitter=False)
    assert [retry_delay(policy, attempt) for attempt in range(2, 7)] == [2, 4, 8, 10, 10]


@given(attempt=st.integers(min_value=2, max_value=60))
def test_jitter_keeps_each_delay_between_half_and_the_full_backoff(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=100, backoff=1.0, backoff_max=300.0, jitter=True)
    full = min(1.0 * 2 ** (attempt - 2), 300.0)
    assert full / 2 <= retry_delay(policy, attempt) <= full


@given(body=st.binary(max_size=256), value=st.text(max_size=20))
def test_an_envelope_carries_body_and_headers_as_json_safe_values(body: bytes, value: str) -> None:
    packed = envelope({"ce_id": value}, body)
    assert packed["headers"] == {"ce_id": value}
    assert isinstance(packed["body"], str)
    assert base64.b64decode(packed["body"]) == body
