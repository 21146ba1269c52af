"""Sphinx extension: the settings reference, built from events_celery's setting declarations.

``.. event-bus-setting:: EVENT_BUS_NAME`` documents one setting: its type, default and check
ids come from its declaration (:data:`events_celery.conf.SETTINGS`), the directive's content
is the prose. ``.. event-bus-settings-table::`` lists every declared setting with its default
and summary. A declared setting documented nowhere, or twice, and a documented setting that is
not declared, fail the build (``sphinx-build -W``).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from events_celery.conf import SETTINGS, Setting

logger = logging.getLogger(__name__)
DECLARED = {setting.name: setting for setting in SETTINGS}


def python_literal(value: Any) -> str:
    """``value`` as it is written in a settings file (strings in double quotes)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        items = (f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


def default_text(setting: Setting) -> str:
    """The default of ``setting`` as the reference shows it (reST)."""
    return setting.default_doc or f"``{python_literal(setting.default)}``"


def _documented(env: BuildEnvironment) -> dict[str, str]:
    """Setting name -> the document that documents it, for this build."""
    if not hasattr(env, "event_bus_settings"):
        env.event_bus_settings = {}  # type: ignore[attr-defined]
    return env.event_bus_settings  # type: ignore[attr-defined, no-any-return]


class EventBusSetting(SphinxDirective):
    """One setting: a ``confval`` with its declared type, default and check ids."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        setting = DECLARED.get(name)
        if setting is None:
            raise self.error(
                f"{name} is not declared: add it to events_celery.conf.declarations.SETTINGS"
            )
        documented = _documented(self.env)
        if documented.get(name, self.env.docname) != self.env.docname:
            logger.warning(
                "%s is documented twice (also in %s)",
                name,
                documented[name],
                location=self.get_location(),
            )
        documented[name] = self.env.docname
        lines = [
            f".. confval:: {name}",
            f"   :type: {setting.type_doc}",
            f"   :default: {default_text(setting)}",
            "",
            *(f"   {line}" if line else "" for line in self.content),
        ]
        if setting.check_ids:
            ids = ", ".join(f"``{check_id}``" for check_id in setting.check_ids)
            lines += ["", f"   ``manage.py check`` ids: {ids} (see :ref:`check-ids`)."]
        return self.parse_text_to_nodes("\n".join(lines))


class EventBusSettingsTable(SphinxDirective):
    """Every declared setting: name, default and summary."""

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 30 25 45",
            "",
            "   * - setting",
            "     - default",
            "     - what it sets",
        ]
        for setting in SETTINGS:
            lines += [
                f"   * - :confval:`{setting.name}`",
                f"     - {default_text(setting)}",
                f"     - {setting.doc}",
            ]
        return self.parse_text_to_nodes("\n".join(lines))


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    documented = _documented(env)
    for name in [name for name, doc in documented.items() if doc == docname]:
        del documented[name]


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    _documented(env).update(_documented(other))


def _check_every_setting_is_documented(app: Sphinx, env: BuildEnvironment) -> None:
    for name in DECLARED.keys() - _documented(env).keys():
        logger.warning(
            "%s is declared in events_celery.conf.declarations but documented nowhere: "
            "add '.. event-bus-setting:: %s' to docs/reference/settings.rst",
            name,
            name,
        )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the completeness check."""
    app.add_directive("event-bus-setting", EventBusSetting)
    app.add_directive("event-bus-settings-table", EventBusSettingsTable)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check_every_setting_is_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
