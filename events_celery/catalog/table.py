"""The catalog as a reStructuredText table, for Sphinx documentation."""

from __future__ import annotations

from collections.abc import Iterable

from events_celery.catalog.model import CatalogEntry


def catalog_table(entries: Iterable[CatalogEntry], *, title: str = "Events") -> str:
    """A ``list-table`` with one row per event type.

    Columns: the event type (and its minor version), its payload fields with their Avro
    types, the services that publish it (topic, exchange, key) and the services that
    consume it (topic, queue).
    """
    lines = [
        f".. list-table:: {title}",
        "   :header-rows: 1",
        "   :widths: 25 35 20 20",
        "",
        "   * - Event type",
        "     - Payload fields",
        "     - Producers",
        "     - Consumers",
    ]
    for entry in entries:
        lines.append(f"   * - ``{entry.event_type}``")
        lines.append("")
        lines.append(f"       minor version {entry.signal.minor_version}")
        lines.extend(_cell([f"``{f.path}``: {f.type}" for f in entry.fields]))
        lines.extend(
            _cell(
                [
                    f"{p.service} → topic ``{p.topic}`` (exchange ``{p.exchange}``"
                    + (f", key ``{p.key}``)" if p.key else ")")
                    for p in entry.producers
                ]
            )
        )
        lines.extend(
            _cell(
                [
                    f"{c.service} ← topic ``{c.topic}`` (queue ``{c.queue}``)"
                    for c in entry.consumers
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _cell(items: list[str]) -> list[str]:
    if not items:
        return ["     - none"]
    first, *rest = items
    return [f"     - * {first}", *(f"       * {item}" for item in rest)]
