"""Golden Avro schemas: the ``.avsc`` files committed beside event definitions.

``<dir>/<event_type>.avsc`` is the golden schema of an event type, written by
``manage.py generate_avro_schemas`` and checked by ``manage.py check_avro_schemas``. When the
golden schema is regenerated after a compatible change, the previous one is kept as
``<dir>/<event_type>.<fingerprint>.avsc``, so a consumer can still read messages written by
services that run the older definition. ``<dir>`` is ``EVENT_BUS_SCHEMA_DIR`` if set, else
``avro_schemas/`` inside the Django app that defines the event.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import attrs
from django.apps import apps

from events_celery.avro import check_compatibility, fingerprint
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError
from events_celery.signals import EventSignal

SUFFIX = ".avsc"
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def schema_dir(signal: EventSignal, directory: str | Path | None = None) -> Path:
    """Directory holding the golden schemas of ``signal``."""
    if directory is not None:
        return Path(directory)
    configured = bus_settings().schema_dir
    if configured:
        return Path(configured)
    app = apps.get_containing_app_config(signal.defined_in)
    if app is None:
        raise ConfigurationError(
            f"{signal.event_type}: defined in {signal.defined_in}, which is not inside an "
            "installed app; pass a directory or set EVENT_BUS_SCHEMA_DIR"
        )
    return Path(app.path) / "avro_schemas"


def golden_path(signal: EventSignal, directory: str | Path | None = None) -> Path:
    """Path of the golden schema file of ``signal``."""
    return schema_dir(signal, directory) / f"{signal.event_type}{SUFFIX}"


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_golden(signal: EventSignal, directory: str | Path | None = None) -> tuple[Path, bool]:
    """Write the current schema of ``signal`` as its golden schema.

    A different previous golden schema is kept as ``<event_type>.<fingerprint>.avsc``.

    Returns:
        The path written, and whether its content changed.
    """
    path = golden_path(signal, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _dump(signal.serializer.schema)
    if path.exists():
        old_text = path.read_text()
        if old_text == text:
            return path, False
        old_print = fingerprint(json.loads(old_text))
        if old_print != signal.serializer.fingerprint:
            path.with_name(f"{signal.event_type}.{old_print}{SUFFIX}").write_text(old_text)
    path.write_text(text)
    _load.cache_clear()
    return path, True


@attrs.frozen
class StoredSchemaProblem:
    """Why the current definition of an event cannot exchange data with a stored schema."""

    event_type: str
    path: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.event_type}: field '{self.field}' {self.message} (stored schema {self.path})"


def check_against_stored(
    signal: EventSignal, directory: str | Path | None = None
) -> list[StoredSchemaProblem]:
    """Compare the current definition with every stored schema of the event, both ways.

    Backward: the current definition must read data written with each stored schema.
    Forward: each stored schema must read data written with the current definition.
    """
    problems = []
    current = signal.serializer.schema
    for path, stored in _stored(signal, directory):
        for reader, writer, direction in (
            (current, stored, "cannot read data written with the stored schema"),
            (stored, current, "makes data the stored schema cannot read"),
        ):
            for issue in check_compatibility(reader, writer):
                problems.append(
                    StoredSchemaProblem(
                        signal.event_type, path, issue.path, f"{direction}: {issue.message}"
                    )
                )
    return problems


def find_schema(signal: EventSignal, print_: str) -> dict[str, Any] | None:
    """The stored schema of ``signal`` whose fingerprint is ``print_``, or ``None``."""
    return _load(signal.event_type, str(schema_dir(signal))).get(print_)


def _stored(signal: EventSignal, directory: str | Path | None) -> list[tuple[Path, dict[str, Any]]]:
    folder = schema_dir(signal, directory)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"{signal.event_type}*{SUFFIX}")):
        stem = path.name[: -len(SUFFIX)]
        base, _, suffix = stem.rpartition(".")
        if stem == signal.event_type or (
            base == signal.event_type and _FINGERPRINT.fullmatch(suffix)
        ):
            found.append((path, json.loads(path.read_text())))
    return found


@cache
def _load(event_type: str, folder: str) -> dict[str, dict[str, Any]]:
    from events_celery.event_registry import registry

    signal = registry.get(event_type)
    return {fingerprint(schema): schema for _, schema in _stored(signal, folder)}
