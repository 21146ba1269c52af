"""Open edX enrollment events built the way the LMS builds them, for the tests."""

from __future__ import annotations

from datetime import UTC, datetime

from opaque_keys.edx.keys import CourseKey
from openedx_events.learning.data import (
    CourseData,
    CourseEnrollmentData,
    UserData,
    UserPersonalData,
)
from openedx_events.learning.signals import COURSE_ENROLLMENT_CREATED

__all__ = ["COURSE_ENROLLMENT_CREATED", "TOPIC", "enrollment"]

TOPIC = "enrollments"
KEY_FIELD = "enrollment.course.course_key"


def enrollment(username: str, user_id: int = 7, run: str = "DemoX") -> CourseEnrollmentData:
    """An active audit enrollment of ``username`` in a demo course (``run``: its run)."""
    return CourseEnrollmentData(
        user=UserData(
            id=user_id,
            is_active=True,
            pii=UserPersonalData(username=username, email=f"{username}@example.org", name="Ada"),
        ),
        course=CourseData(
            course_key=CourseKey.from_string(f"course-v1:edX+{run}+2026"),
            display_name="Demonstration Course",
            start=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        ),
        mode="audit",
        is_active=True,
        creation_date=datetime(2026, 11, 2, 10, 30, 15, 123456, tzinfo=UTC),
    )
