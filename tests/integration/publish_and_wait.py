"""A publishing service process for tests: commits events, prints their ids, then waits.

``python -m tests.integration.publish_and_wait COUNT`` sends ``COUNT`` PING events, one
transaction each, prints their ids as one JSON line, and sleeps until it is killed: the test
decides whether it dies before its background publisher could publish them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.service_settings")
django.setup()

from django.db import transaction  # noqa: E402

from tests.testapp.events import PING  # noqa: E402


def main(count: int) -> None:
    ids = []
    for n in range(count):
        with transaction.atomic():
            ids.append(str(PING.send_event(n=n).metadata.id))
    print(json.dumps(ids), flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]))
