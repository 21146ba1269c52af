"""Sphinx configuration of the events_celery documentation.

Build with ``.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository root: events_celery and docs.django_settings
sys.path.insert(0, str(ROOT / "docs" / "_ext"))  # this documentation's own Sphinx extensions

# autodoc imports modules that read Django settings, so Django is set up before any of them.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs.django_settings")
django.setup()


def _release() -> str:
    # setup.cfg is the one source of the version; reading it here keeps the docs buildable
    # while a module of the package is broken (autodoc then reports that module by name).
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser.get("metadata", "version", fallback="0+unknown")


project = "events_celery"
author = "events_celery contributors"
copyright = "events_celery contributors"
release = _release()
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "event_bus_settings",  # the settings reference, from events_celery.conf.SETTINGS
    "event_catalog",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
python_maximum_signature_line_length = 88  # longer signatures get one parameter per line

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"events_celery {release}"
