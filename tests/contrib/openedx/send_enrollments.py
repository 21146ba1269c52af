"""An Open edX service that enrolls users: ``python -m tests.contrib.openedx.send_enrollments``.

Each username given on the command line is enrolled in its own transaction with
openedx-events' ``COURSE_ENROLLMENT_CREATED.send_event``; a name starting with ``rollback``
is rolled back, and ``name@run`` enrolls ``name@run`` in the course of that run (the
event's key). ``TEST_MINOR_VERSION`` sends the event as that minor version (as a newer
openedx-events would), and every event carries the time ``TEST_EVENT_TIME``. It prints one
JSON line (username → metadata) once its outbox publisher has published every row.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.contrib.openedx.service_settings")
django.setup()

from django.db import transaction  # noqa: E402

from events_celery.bus.publish.background import background_publisher  # noqa: E402
from events_celery.models import OutboxMessage  # noqa: E402
from tests.contrib.openedx.enrollments import COURSE_ENROLLMENT_CREATED, enrollment  # noqa: E402

#: username -> the metadata openedx-events generated for the enrollment event.
SENT: dict[str, dict[str, object]] = {}


def remember(**kwargs: Any) -> None:
    """A local receiver: what was sent, to compare with what the other service received."""
    metadata = kwargs["metadata"]
    SENT[kwargs["enrollment"].user.pii.username] = {
        "id": str(metadata.id),
        "minorversion": metadata.minorversion,
        "source": metadata.source,
        "time": metadata.time.isoformat(),
    }


def main(usernames: list[str]) -> None:
    COURSE_ENROLLMENT_CREATED.minor_version = int(os.environ.get("TEST_MINOR_VERSION", "0"))
    COURSE_ENROLLMENT_CREATED.connect(remember, dispatch_uid="remember")
    time = datetime.fromisoformat(os.environ["TEST_EVENT_TIME"])
    for username in usernames:
        with transaction.atomic():
            responses = COURSE_ENROLLMENT_CREATED.send_event(
                enrollment=enrollment(username, run=username.partition("@")[2] or "DemoX"),
                time=time,
            )
            errors = [repr(r) for _, r in responses if isinstance(r, BaseException)]
            if errors:  # the producer is a receiver too: its errors are responses
                raise SystemExit(f"sending failed: {errors}")
            if username.startswith("rollback"):
                transaction.set_rollback(True)
    if not background_publisher().flush(timeout=30) or OutboxMessage.objects.exists():
        raise SystemExit("the outbox was not emptied")
    print(json.dumps(SENT), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
