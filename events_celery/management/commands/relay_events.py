"""``manage.py relay_events``: publish outbox rows whose writer could not (for services without
Celery workers, whose workers otherwise run the same relay)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from events_celery.bus.publish import outbox
from events_celery.bus.publish.relay import RelayPass, relay_pass, warn_overdue
from events_celery.conf import bus_settings

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Publish the outbox rows whose lease has run out (their writer died or gave them back): "
        "one pass, or --loop until stopped. Celery workers of a publishing service run the "
        "same relay; several relays at once never publish one row twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            action="store_true",
            help="keep relaying every EVENT_BUS_OUTBOX_SWEEP_INTERVAL until SIGINT or SIGTERM",
        )
        parser.add_argument(
            "--retry-refused",
            action="store_true",
            help=(
                f"also offer rows the broker refused {outbox.MAX_REFUSALS} times, or refused "
                "for permissions (after fixing them), again"
            ),
        )

    def handle(self, *args: Any, loop: bool, retry_refused: bool, **options: Any) -> None:
        settings = bus_settings()
        settings.raise_for_problems()
        if settings.publish_mode != "outbox":
            raise CommandError(
                f"EVENT_BUS_PUBLISH_MODE is {settings.publish_mode!r}: this service writes no "
                "outbox rows, so there is nothing to relay"
            )
        stop = threading.Event()
        if loop:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            self.stdout.write(
                f"relaying the outbox every {settings.outbox_sweep_interval:g} s until SIGINT "
                "or SIGTERM"
            )
            self.stdout.flush()
        total = 0
        last_warning = 0.0
        while True:
            settings = bus_settings()
            try:
                result = relay_pass(settings, include_refused=retry_refused, stop=stop)
                if time.monotonic() - last_warning >= settings.outbox_warn_after or not loop:
                    last_warning = time.monotonic()
                    warn_overdue(settings)
            except DatabaseError as exc:
                if not loop:
                    raise CommandError(
                        f"the outbox table could not be read or updated ({exc}); is the "
                        f"database {settings.db_alias!r} reachable and migrated?"
                    ) from exc
                # A busy or restarting database: the rows wait; try again next pass.
                logger.warning("relaying failed: %s: %s; trying again", type(exc).__name__, exc)
                connections[settings.db_alias].close()
                result = RelayPass(0)
            total += result.published
            if result.published:
                self.stdout.write(f"published {result.published} event message(s)")
            if not loop and result.error is not None:
                raise CommandError(
                    f"relayed {total} event message(s), then the broker did not take more "
                    f"({type(result.error).__name__}: {result.error}); the rest wait in the "
                    "outbox for the next pass"
                )
            if not loop or stop.wait(settings.outbox_sweep_interval):
                break
        waiting = outbox.backlog(settings)
        self.stdout.write(
            f"relayed {total} event message(s); {waiting.count} wait in the outbox"
            + (f" ({waiting.refused} refused by the broker)" if waiting.refused else "")
        )
        if waiting.forbidden:
            self.stderr.write(outbox.describe_forbidden(waiting))
        if waiting.blocked_keys:
            self.stderr.write(outbox.describe_blocked(waiting))
