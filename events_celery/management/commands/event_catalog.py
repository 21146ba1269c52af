"""``manage.py event_catalog``: this service's events as an AsyncAPI 3.0 document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events_celery.bus.broker.connection import broker_url
from events_celery.catalog import (
    ServiceRouting,
    asyncapi_document,
    build_catalog,
    catalog_table,
)
from events_celery.conf import bus_settings
from events_celery.event_registry import registry
from events_celery.exceptions import ConfigurationError

FORMATS = ("yaml", "json", "rst")


class Command(BaseCommand):
    help = (
        "Write the AsyncAPI 3.0 document of this service: its broker, one channel per topic "
        "exchange, the Avro schema and headers of each event, and the send and receive "
        "operations of its routing settings. --format rst writes the catalog as a table "
        "instead, for Sphinx."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            dest="output_format",
            choices=FORMATS,
            default="yaml",
            help="yaml (default) or json for AsyncAPI, rst for a reStructuredText table",
        )
        parser.add_argument("--output", "-o", help="write to this file instead of stdout")
        parser.add_argument(
            "--api-version", default="1.0.0", help="info.version of the document (1.0.0)"
        )

    def handle(
        self,
        *args: Any,
        output_format: str,
        output: str | None,
        api_version: str,
        **options: Any,
    ) -> None:
        settings = bus_settings()
        try:
            service = ServiceRouting.from_bus_settings(settings)
            entries = build_catalog([service], registry.all())
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if output_format == "rst":
            text = catalog_table(entries, title=f"Events of {service.name}")
        else:
            document = asyncapi_document(
                service, entries, broker_url(settings), api_version=api_version
            )
            text = _dump(document, output_format)
        if output:
            try:
                Path(output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc}") from exc
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")


def _dump(document: dict[str, Any], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(document, indent=2) + "\n"
    try:
        import yaml
    except ImportError as exc:
        raise CommandError(
            "YAML output needs PyYAML: pip install 'events_celery[catalog]', or use --format json"
        ) from exc
    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
