"""Every header of the wire format is described in the catalog and on the wire format page."""

from __future__ import annotations

import re
from pathlib import Path

from events_celery.catalog.asyncapi import HEADER_DESCRIPTIONS
from events_celery.wire import WIRE_HEADERS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "wire-format.rst"


def test_the_catalog_describes_every_wire_header():
    assert set(HEADER_DESCRIPTIONS) == set(WIRE_HEADERS)


def test_the_wire_format_page_lists_every_header_in_its_table():
    text = PAGE.read_text(encoding="utf-8")
    table = text[text.index("   * - Header") : text.index("\nBody\n")]
    assert set(re.findall(r"^   \* - ``([a-z_]+)``$", table, re.M)) == set(WIRE_HEADERS)
