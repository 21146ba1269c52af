"""Connects the recording receiver when the consuming service starts."""

from __future__ import annotations

import inspect
import json
import os
import signal
import time
import zlib
from typing import Any

from django.apps import AppConfig


def record_enrollment(**kwargs: Any) -> None:
    """Append what the receiver got to ``TEST_RESULTS``; fail as the username asks.

    ``flaky``: raises on the first two calls for an event id; ``broken``: always raises;
    ``crash``: kills its own process (SIGKILL), as an OOM kill would (a ``@run`` suffix of the
    username is not part of these names). With ``TEST_FAIL_FIRST_ONE_IN`` = ``n``, the first
    call for one event in ``n`` raises (chosen by the event id); each call then sleeps
    ``TEST_STEP_SLEEP`` seconds.
    """
    metadata = kwargs["metadata"]
    enrollment = kwargs["enrollment"]
    username = enrollment.user.pii.username
    name = username.partition("@")[0]
    path = os.environ["TEST_RESULTS"]
    with open(path) as results:
        earlier = sum(1 for line in results if str(metadata.id) in line)
    record = {
        "event_id": str(metadata.id),
        "event_type": metadata.event_type,
        "minorversion": metadata.minorversion,
        "source": metadata.source,
        "sourcehost": metadata.sourcehost,
        "sourcelib": list(metadata.sourcelib),
        "time": metadata.time.isoformat(),
        "from_event_bus": kwargs["from_event_bus"],
        "through": [frame.function for frame in inspect.stack()],
        "username": username,
        "course_key": str(enrollment.course.course_key),
        "creation_date": enrollment.creation_date.isoformat(),
        "call": earlier + 1,
        "pid": os.getpid(),
    }
    one_in = int(os.environ.get("TEST_FAIL_FIRST_ONE_IN", "0"))
    fails = (
        name == "broken"
        or (name == "flaky" and earlier < 2)
        or (one_in and earlier == 0 and zlib.crc32(str(metadata.id).encode()) % one_in == 0)
    )
    record["failed"] = bool(fails)
    with open(path, "a") as results:
        results.write(json.dumps(record) + "\n")  # one write: one whole line
    if name == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(os.environ.get("TEST_STEP_SLEEP", "0")))
    if fails:
        raise RuntimeError(f"{username} receiver failed on call {earlier + 1}")


class ReceiversConfig(AppConfig):
    name = "tests.contrib.openedx.receivers"
    label = "openedx_test_receivers"

    def ready(self) -> None:
        from openedx_events.learning.signals import COURSE_ENROLLMENT_CREATED

        COURSE_ENROLLMENT_CREATED.connect(record_enrollment, dispatch_uid="record_enrollment")
