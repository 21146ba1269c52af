"""``manage.py generate_avro_schemas``: write the golden ``.avsc`` schema of every event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events_celery import schema_store
from events_celery.registry import registry


class Command(BaseCommand):
    help = (
        "Write one golden Avro schema (<event_type>.avsc) per event type, by default into "
        "avro_schemas/ of the app that defines the event. Commit them: check_avro_schemas "
        "compares later definitions with them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("event_types", nargs="*", help="only these event types")
        parser.add_argument(
            "--dir", dest="directory", help="write every schema into this directory"
        )

    def handle(
        self, *args: Any, event_types: list[str], directory: str | None, **options: Any
    ) -> None:
        signals = [registry.get(t) for t in event_types] if event_types else registry.all()
        if not signals:
            raise CommandError("no events are defined; add apps with events.py to INSTALLED_APPS")
        for signal in signals:
            path, changed = schema_store.write_golden(signal, directory)
            self.stdout.write(f"{'wrote' if changed else 'unchanged'} {path}")
