"""Benchmark: PayloadSerializer encode/decode against raw fastavro, measured in the same run.

Run with ``python bench/serialization.py``. The baselines are fastavro's
``schemaless_writer`` / ``schemaless_reader`` with a pre-parsed schema and a pre-built record
dict: the least any Avro encoding of this payload can cost. The target for the serializer is
at most 1.5x the baseline. Validation has no fastavro counterpart; it is printed for reference.
"""

from __future__ import annotations

import enum
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
from fastavro import schemaless_reader, schemaless_writer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events_celery.avro import PayloadSerializer  # after the path set-up

TARGET_RATIO = 1.5
NUMBER = 20_000
REPEAT = 7


class Mode(enum.Enum):
    AUDIT = "audit"
    VERIFIED = "verified"
    PROFESSIONAL = "professional"


@attrs.frozen
class UserData:
    id: int
    username: str
    email: str
    is_active: bool = True


@attrs.frozen
class CourseData:
    course_key: str
    display_name: str
    start: datetime | None = None


@attrs.frozen
class EnrollmentData:
    user: UserData
    course: CourseData
    mode: Mode
    created: datetime
    enrollment_id: UUID


def build_payload() -> dict[str, Any]:
    """A realistic enrollment payload: nested user and course, an enum, datetimes, a UUID."""
    created = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)
    return {
        "enrollment": EnrollmentData(
            user=UserData(id=123456, username="ada", email="ada@ex.org"),
            course=CourseData(
                course_key="course-v1:X+CS1+T1",
                display_name="Computing 101",
                start=datetime(2024, 6, 1, tzinfo=UTC),
            ),
            mode=Mode.VERIFIED,
            created=created,
            enrollment_id=UUID("6f1c9ad0-2f4b-4c8e-9a51-0d5a3c7e8b21"),
        )
    }


def build_record(payload: dict[str, Any]) -> dict[str, Any]:
    """The record dict fastavro writes for ``payload``, built by hand for the baseline."""
    enrollment = payload["enrollment"]
    return {
        "enrollment": {
            "user": attrs.asdict(enrollment.user),
            "course": attrs.asdict(enrollment.course),
            "mode": enrollment.mode.name,
            "created": enrollment.created,
            "enrollment_id": enrollment.enrollment_id,
        }
    }


def best_us(func: Callable[[], object]) -> float:
    """Best of :data:`REPEAT` runs of :data:`NUMBER` calls, in microseconds per call."""
    return min(timeit.repeat(func, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6


def main() -> int:
    serializer = PayloadSerializer(
        "org.example.learning.course.enrollment.created.v1", {"enrollment": EnrollmentData}
    )
    payload = build_payload()
    record = build_record(payload)
    parsed = serializer.parsed_schema

    def raw_encode() -> bytes:
        out = BytesIO()
        schemaless_writer(out, parsed, record)
        return out.getvalue()

    body = serializer.encode(payload)
    assert body == raw_encode(), "the serializer and the baseline must write the same bytes"
    assert serializer.decode(body) == payload, "the payload must round-trip"

    encode_us, raw_encode_us = best_us(lambda: serializer.encode(payload)), best_us(raw_encode)
    decode_us = best_us(lambda: serializer.decode(body))
    raw_decode_us = best_us(lambda: schemaless_reader(BytesIO(body), parsed, None))
    validate_us = best_us(lambda: serializer.validate(payload))

    print(f"payload: {len(body)} bytes of Avro; best of {REPEAT} x {NUMBER:,} calls")
    print(f"{'':<10}{'serializer':>12}{'fastavro':>12}{'ratio':>8}")
    failed = False
    for name, ours, raw in (
        ("encode", encode_us, raw_encode_us),
        ("decode", decode_us, raw_decode_us),
    ):
        ratio = ours / raw
        failed |= ratio > TARGET_RATIO
        verdict = "ok" if ratio <= TARGET_RATIO else f"over {TARGET_RATIO}x"
        print(f"{name:<10}{ours:>9.2f} µs{raw:>9.2f} µs{ratio:>7.2f}x  {verdict}")
    print(f"{'validate':<10}{validate_us:>9.2f} µs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
