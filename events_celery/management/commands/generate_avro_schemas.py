"""``manage.py generate_avro_schemas``: write the golden ``.avsc`` schema of every event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events_celery import schema_store
from events_celery.management.selection import selected_events


class Command(BaseCommand):
    help = (
        "Write one golden Avro schema (<event_type>.avsc) per event type, by default into "
        "avro_schemas/ of the app that defines the event. Commit them: check_avro_schemas "
        "compares later definitions with them. A definition that cannot exchange data with its "
        "stored schema is refused (define a new .vN event type instead, or pass --force)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("event_types", nargs="*", help="only these event types")
        parser.add_argument(
            "--dir", dest="directory", help="write every schema into this directory"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="write even when the definition breaks compatibility with the stored schema",
        )

    def handle(
        self,
        *args: Any,
        event_types: list[str],
        directory: str | None,
        force: bool,
        **options: Any,
    ) -> None:
        signals = selected_events(event_types)
        problems = [p for s in signals for p in schema_store.check_against_stored(s, directory)]
        if problems and not force:
            raise CommandError(
                "not written: the current definitions break compatibility with stored schemas "
                "(consumers and producers still running them could not exchange events):\n"
                + "\n".join(f"- {p}" for p in problems)
                + "\nDefine a new event type (.v2) for an incompatible payload, or pass --force "
                "if no service runs the stored schema any more."
            )
        for signal in signals:
            path, changed = schema_store.write_golden(signal, directory)
            self.stdout.write(f"{'wrote' if changed else 'unchanged'} {path}")
