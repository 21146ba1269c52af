"""The Python snippets of the README and the how-to guides that are not files of their own.

Every snippet must be valid Python, and a snippet made only of settings must pass
``manage.py check`` without an error: a setting that names a payload field the event does
not have (``events_celery.E031``), say, fails here before a reader copies it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    "README.md",
    "docs/how-to/event-bus.rst",
    "docs/how-to/dead-letters-admin.rst",
    "docs/how-to/monitoring.rst",
    "docs/how-to/openedx.rst",
    "docs/how-to/least-privilege.rst",
]
#: The settings of a service that publishes and consumes, under each settings snippet.
SERVICE = {
    "EVENT_BUS_SERVICE_NAME": "billing",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "CELERY_TASK_DEFAULT_QUEUE": "billing.celery",
}


def snippets(page: str) -> list[tuple[str, str]]:
    """The Python blocks of ``page``: (where, code)."""
    text = (ROOT / page).read_text()
    if page.endswith(".md"):
        blocks = [
            (m.start(), m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)
        ]
    else:
        blocks = [
            (m.start(), textwrap.dedent(m.group(1)))
            for m in re.finditer(
                r"^\.\. code-block:: python\n(?:   :.*\n)*\n((?:(?:   .*)?\n)+)", text, re.M
            )
        ]
    return [(f"{page}:{text.count(chr(10), 0, start) + 1}", code) for start, code in blocks]


ALL = [snippet for page in PAGES for snippet in snippets(page)]


def test_every_page_has_snippets():
    assert {where.split(":")[0] for where, _ in ALL} == set(PAGES)


@pytest.mark.parametrize(("where", "code"), ALL, ids=[where for where, _ in ALL])
def test_a_snippet_is_python(where, code):
    compile(code, where, "exec")


def settings_of(code: str) -> dict[str, object] | None:
    """The settings a snippet assigns, when it is made only of settings with literal values."""
    values: dict[str, object] = {}
    for statement in ast.parse(code).body:
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and statement.targets[0].id.startswith(("EVENT_BUS_", "CELERY_"))
        ):
            return None
        try:
            values[statement.targets[0].id] = ast.literal_eval(statement.value)
        except ValueError:
            return None
    return values or None


SETTINGS = [(where, settings_of(code)) for where, code in ALL if settings_of(code)]

#: Runs the checks on each settings snippet in a process of the example project, whose app
#: defines the events the snippets route (``config/shop/events.py``).
CHECK = """
import json, sys
import django
django.setup()
from django.core.checks import Error
from django.test import override_settings
from events_celery.checks import check_settings
errors = {}
for where, values in json.load(sys.stdin):
    with override_settings(**values):
        errors[where] = [f"{m.id}: {m.msg}" for m in check_settings() if isinstance(m, Error)]
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def check_errors() -> dict[str, list[str]]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.memory"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    snippets = [(where, {**SERVICE, **values}) for where, values in SETTINGS]
    result = subprocess.run(
        [sys.executable, "-c", CHECK], input=json.dumps(snippets), cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_pages_have_settings_snippets():
    assert len(SETTINGS) >= 5


@pytest.mark.parametrize("where", [where for where, _ in SETTINGS])
def test_a_settings_snippet_passes_the_checks(check_errors, where):
    assert check_errors[where] == []
