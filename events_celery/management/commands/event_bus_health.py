"""``manage.py event_bus_health``: a probe for containers; exit 0 when the bus is healthy.

Four checks, each of which can be skipped with ``--skip``:

* ``broker``: the broker accepts a connection within ``--timeout`` seconds;
* ``topology``: the exchanges and queues of this service exist (passive declarations);
* ``outbox``: no outbox row has waited longer than ``--max-outbox-age`` seconds;
* ``dead-letters``: at most ``--max-new-dead-letters`` of this service's pending dead letters
  failed within the last ``--window`` seconds.

It prints one line (``OK: ...`` or ``FAIL: ...`` naming every failed check) or, with
``--json``, one JSON object, and exits 1 when any check failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events_celery.bus.dead_letters.health import CHECKS, check_health
from events_celery.conf import bus_settings


class Command(BaseCommand):
    # Invalid settings are one of its answers (``FAIL: settings: ...``), not a reason to stop
    # before answering: a probe must always print its one line.
    requires_system_checks: list[str] = []

    help = (
        "Check the event bus for a container probe: the broker is reachable, this service's "
        "topology exists, the outbox is not stuck, and dead letters are not piling up. Prints "
        "one line and exits 1 when a check fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=seconds,
            default=5.0,
            help="seconds to wait for the broker's connection and answers (default: 5)",
        )
        parser.add_argument(
            "--max-outbox-age",
            type=seconds,
            default=None,
            help="seconds the oldest outbox row may wait (default: EVENT_BUS_OUTBOX_WARN_AFTER)",
        )
        parser.add_argument(
            "--window",
            type=seconds,
            default=600.0,
            help="seconds back to count new dead letters in (default: 600)",
        )
        parser.add_argument(
            "--max-new-dead-letters",
            type=count,
            default=0,
            help="pending dead letters allowed within --window (default: 0)",
        )
        parser.add_argument(
            "--skip",
            action="append",
            choices=CHECKS,
            default=[],
            help="leave a check out (repeatable)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object instead")

    def handle(self, *args: Any, **options: Any) -> None:
        results = check_health(bus_settings(), **_check_options(options))
        failed = [r for r in results if not r.ok]
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": not failed,
                        "reason": "; ".join(f"{r.check}: {r.detail}" for r in failed) or None,
                        "checks": {r.check: {"ok": r.ok, "detail": r.detail} for r in results},
                    }
                )
            )
        elif failed:
            self.stdout.write("FAIL: " + "; ".join(f"{r.check}: {r.detail}" for r in failed))
        else:
            self.stdout.write("OK: " + "; ".join(f"{r.check}: {r.detail}" for r in results))
        if failed:
            self.stdout.flush()
            sys.exit(1)


def seconds(text: str) -> float:
    """A positive number of seconds (argparse names the type in its error: 'invalid seconds')."""
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def count(text: str) -> int:
    """A whole number, 0 or more."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "timeout": options["timeout"],
        "max_outbox_age": options["max_outbox_age"],
        "window": options["window"],
        "max_new_dead_letters": options["max_new_dead_letters"],
        "skip": frozenset(options["skip"]),
    }
