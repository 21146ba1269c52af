"""Sphinx directive ``event-catalog``: the event catalog of a project's services, as a table.

The table is built when the docs are built, from the services' settings modules and the
modules that define their events, by the same code as ``manage.py event_catalog``::

    .. event-catalog::
       :events: config.shop.events

       config.settings.orders
       config.settings.billing

Each line names a settings module; it is imported as a plain module (not made Django's
settings), and its ``EVENT_BUS_*`` routing settings are read.
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from events_celery.catalog import ServiceRouting, build_catalog, catalog_table
from events_celery.exceptions import ConfigurationError
from events_celery.signals import EventSignal


class EventCatalog(SphinxDirective):
    has_content = True
    option_spec = {"events": directives.unchanged_required, "title": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        modules = [line.strip() for line in self.content if line.strip()]
        if not modules or "events" not in self.options:
            raise self.error(
                "event-catalog needs the :events: option (modules defining the events) and "
                "one settings module per line"
            )
        try:
            signals = [
                value
                for name in self.options["events"].split()
                for value in vars(self._import(name)).values()
                if isinstance(value, EventSignal)
            ]
            services = [ServiceRouting.from_settings_module(self._import(m)) for m in modules]
            entries = build_catalog(services, signals)
        except (ImportError, ConfigurationError) as exc:
            raise self.error(f"event-catalog: {exc}") from exc
        text = catalog_table(entries, title=self.options.get("title", "Events"))
        container = nodes.container()
        source = self.get_source_info()[0]
        self.state.nested_parse(StringList(text.splitlines(), source), 0, container)
        return list(container.children)

    def _import(self, name: str) -> Any:
        module = importlib.import_module(name)
        if getattr(module, "__file__", None):
            self.env.note_dependency(module.__file__)
        return module


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("event-catalog", EventCatalog)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
