"""``manage.py check_avro_schemas``: fail when a definition breaks its stored schemas."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events_celery import schema_store
from events_celery.management.selection import selected_events


class Command(BaseCommand):
    help = (
        "Check every event definition against its stored golden schemas, both ways: the "
        "definition must read data written with them, and they must read data it writes. "
        "Exits non-zero naming each event type and field that breaks compatibility, and each "
        "event that has no stored schema yet."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("event_types", nargs="*", help="only these event types")
        parser.add_argument("--dir", dest="directory", help="read the schemas from this directory")

    def handle(
        self, *args: Any, event_types: list[str], directory: str | None, **options: Any
    ) -> None:
        signals = selected_events(event_types)
        problems: list[object] = []
        for signal in signals:
            if not schema_store.golden_path(signal, directory).exists():
                problems.append(
                    f"{signal.event_type}: no stored schema yet; run generate_avro_schemas and "
                    "commit the file"
                )
                continue
            found = schema_store.check_against_stored(signal, directory)
            problems.extend(found)
            if not found:
                self.stdout.write(f"{signal.event_type}: compatible")
        if problems:
            raise CommandError(
                "incompatible with stored schemas:\n" + "\n".join(f"- {p}" for p in problems)
            )
