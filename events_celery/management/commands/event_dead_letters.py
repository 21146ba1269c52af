"""``manage.py event_dead_letters list|show|replay|discard|import``: the dead-letter table."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from events_celery.bus.dead_letters.broker_import import import_dead_letters
from events_celery.bus.dead_letters.replay import (
    STALE_REPLAY,
    decode_dead_letter,
    discard_dead_letters,
    replay_dead_letters,
)
from events_celery.conf import bus_settings
from events_celery.exceptions import BrokerTLSError
from events_celery.models import DeadLetter

#: How many rows ``list`` prints unless ``--limit`` says otherwise.
LIST_LIMIT = 50
#: Replays or imports of at least this many rows draw a progress bar on stderr.
PROGRESS_FROM = 20

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> datetime:
    """``2h``, ``3d``, ``45m``, ``1w`` back from now, or an ISO 8601 date or date and time.

    Raises:
        CommandError: neither form.
    """
    match = _DURATION.fullmatch(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    parsed = parse_datetime(text)
    if parsed is None and (day := parse_date(text)) is not None:
        parsed = datetime(day.year, day.month, day.day)
    if parsed is None:
        raise CommandError(
            f"--since {text!r} is neither a duration (30m, 2h, 3d, 1w) nor an ISO 8601 date or "
            "date and time (2026-11-29, 2026-11-29T06:00:00Z)"
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """A duration such as ``15m``.

    Raises:
        CommandError: not a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise CommandError(f"{text!r} is not a duration (30s, 15m, 2h, 1d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Progress:
    """A text progress bar on the command's stderr, redrawn in place."""

    def __init__(self, stream: OutputWrapper, what: str, width: int = 30) -> None:
        self.stream, self.what, self.width = stream, what, width

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        filled = self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if done == total else ""
        self.stream.write(f"\r{self.what} [{bar}] {done}/{total}{end}", ending="")
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "List, show, replay or discard this service's dead letters, or import the broker's "
        "dead-letter queue into the table."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        described = {
            "list": "one line per dead letter, newest failure first",
            "show": "everything about each dead letter, with its decoded payload",
            "replay": "replay dead letters: only the receiver that failed, with fresh attempts; "
            "a whole event (a poison message) decoded again with today's schemas",
            "discard": "mark pending dead letters discarded (the rows stay)",
        }
        for name, text in described.items():
            sub = actions.add_parser(name, help=text, description=text)
            self._filters(sub)
            if name == "list":
                sub.add_argument(
                    "--limit", type=int, default=LIST_LIMIT, help="most rows to print (50)"
                )
            if name in ("replay", "discard"):
                sub.add_argument(
                    "--all",
                    action="store_true",
                    help="act on every row the filters leave (required when there is no filter)",
                )
            if name == "replay":
                sub.add_argument(
                    "--force",
                    nargs="?",
                    const=f"{int(STALE_REPLAY.total_seconds() // 60)}m",
                    metavar="DURATION",
                    help="also replay rows that have been replaying for longer than DURATION "
                    f"(default {int(STALE_REPLAY.total_seconds() // 60)}m): a replay whose "
                    "worker died",
                )
        importer = actions.add_parser(
            "import",
            help="move the messages of <service>.events_celery.dead_letters into the table",
        )
        importer.add_argument(
            "--limit", type=int, default=None, help="most messages to import (default: all)"
        )

    def _filters(self, parser: CommandParser) -> None:
        parser.add_argument("--event-type", help="exactly this event type")
        parser.add_argument("--receiver", help="exactly this receiver name ('' for whole events)")
        parser.add_argument("--reason", help=f"one of: {', '.join(DeadLetter.Reason.values)}")
        parser.add_argument(
            "--status",
            help=f"one of: {', '.join(DeadLetter.Status.values)} (replay and discard: pending)",
        )
        parser.add_argument(
            "--since",
            help="last failed at or after: a duration back from now (30m, 2h, 3d, 1w) or an "
            "ISO 8601 date or date and time",
        )
        parser.add_argument(
            "--id", type=int, action="append", dest="ids", metavar="ID", help="repeatable"
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        settings = bus_settings()
        if action == "import":
            self._import(options["limit"])
            return
        service = settings.require_service_name()
        rows = self._select(service, action, options)
        if action == "list":
            self._list(rows, options["limit"])
        elif action == "show":
            self._show(rows)
        elif action == "replay":
            force = options.get("force")
            result = replay_dead_letters(
                rows,
                force_stale_after=parse_duration(force) if force else None,
                progress=Progress(self.stderr, "replaying"),
            )
            self.stdout.write(f"replay started for {len(result.started)} dead letter(s)")
            for pk, why in result.skipped.items():
                self.stdout.write(f"skipped {pk}: {why}")
        else:
            count = discard_dead_letters(rows)
            self.stdout.write(f"discarded {count} dead letter(s)")

    def _select(self, service: str, action: str, options: dict[str, Any]) -> QuerySet[DeadLetter]:
        rows = DeadLetter.objects.using(bus_settings().db_alias).filter(service=service)
        filters = {
            "event_type": options["event_type"],
            "receiver": options["receiver"],
            "reason": options["reason"],
            "status": options["status"],
        }
        if options["reason"] is not None and options["reason"] not in DeadLetter.Reason.values:
            raise CommandError(
                f"--reason {options['reason']!r} is not a reason; use one of: "
                f"{', '.join(DeadLetter.Reason.values)}"
            )
        if options["status"] is not None and options["status"] not in DeadLetter.Status.values:
            raise CommandError(
                f"--status {options['status']!r} is not a status; use one of: "
                f"{', '.join(DeadLetter.Status.values)}"
            )
        chosen = {k: v for k, v in filters.items() if v is not None}
        if options["since"] is not None:
            chosen["last_failed_at__gte"] = parse_since(options["since"])
        if options["ids"]:
            chosen["pk__in"] = options["ids"]
        if action in ("replay", "discard"):
            if not chosen and not options["all"]:
                raise CommandError(
                    f"{action} needs a filter (--id, --event-type, --receiver, --reason, "
                    "--since, --status) or --all"
                )
            if "status" not in chosen:
                statuses = [DeadLetter.Status.PENDING]
                if action == "replay" and options.get("force"):
                    statuses.append(DeadLetter.Status.REPLAYING)
                chosen["status__in"] = statuses
        rows = rows.filter(**chosen).order_by("-last_failed_at", "-id")
        if action != "list" and not rows.exists():
            described = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "no filter"
            raise CommandError(f"no dead letters of service {service!r} match ({described})")
        return rows

    def _list(self, rows: QuerySet[DeadLetter], limit: int) -> None:
        total = rows.count()
        if not total:
            self.stdout.write("no dead letters match")
            return
        for row in rows[:limit].iterator():
            first_line = row.error.splitlines()[0] if row.error else ""
            self.stdout.write(
                f"{row.pk}  {row.last_failed_at:%Y-%m-%d %H:%M:%S}  {row.status:<9}  "
                f"{row.reason:<15}  {row.event_type or '-'}  {row.receiver or '(whole event)'}  "
                f"x{row.failures}  {first_line[:120]}"
            )
        if total > limit:
            self.stdout.write(f"... and {total - limit} more (--limit)")

    def _show(self, rows: QuerySet[DeadLetter]) -> None:
        for row in rows.iterator():
            decoded = decode_dead_letter(row)
            lines = [
                f"dead letter {row.pk}",
                f"  service:       {row.service}",
                f"  event:         {row.event_type or '-'} {row.event_id or '(no valid id)'}",
                f"  receiver:      {row.receiver or '(whole event)'}",
                f"  reason:        {row.reason} ({DeadLetter.Reason(row.reason).label})",
                f"  status:        {row.status} since {row.status_changed_at or '-'}",
                f"  failures:      {row.failures} (first {row.first_failed_at}, "
                f"last {row.last_failed_at}); attempts {row.attempts}; replays {row.replays}",
                f"  origin:        {row.origin or '-'}",
                f"  content type:  {row.content_type or '-'}; body {len(row.body)} bytes"
                + (" (truncated)" if row.body_truncated else ""),
                f"  error:         {row.error}",
                "  headers" + (" (truncated):" if row.headers_truncated else ":"),
                *(f"    {k}: {v}" for k, v in sorted(row.headers.items())),
            ]
            if decoded.error is None:
                lines.append("  payload:")
                text = json.dumps(decoded.payload, indent=2, ensure_ascii=False)
                lines += [f"    {line}" for line in text.splitlines()]
            else:
                lines.append(f"  payload:       not decodable: {decoded.error}")
            if row.traceback:
                lines.append("  traceback" + (" (its end):" if row.traceback_truncated else ":"))
                lines += [f"    {line}" for line in row.traceback.splitlines()]
            self.stdout.write("\n".join(lines) + "\n")

    def _import(self, limit: int | None) -> None:
        settings = bus_settings()
        service = settings.require_service_name()
        if limit is not None and limit < 1:
            raise CommandError(f"--limit {limit} must be 1 or more")
        try:
            count = import_dead_letters(
                settings, limit=limit, progress=Progress(self.stderr, "importing")
            )
        except BrokerTLSError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"imported {count} message(s) from {service}.events_celery.dead_letters")
