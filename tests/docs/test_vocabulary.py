"""The figures ``docs/explanation/vocabulary.rst`` gives for the example's ORDER_PLACED.

The example's definition (``config/shop/events.py``) has the event type of the test suite's
own, so it is loaded in a process of its own, under the example's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "explanation" / "vocabulary.rst"

ENCODE = """
import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import django

django.setup()
from config.shop.events import ORDER_PLACED, CustomerData, LineData, OrderData

order = OrderData(
    id=UUID("0b6f3c2e-8a43-4f2c-9d6e-3f1a7c5b2e90"),
    customer=CustomerData(id=UUID("5d2c1b0a-9e8f-4a7b-8c6d-1e2f3a4b5c6d"), email="ada@example.org"),
    total=Decimal("9"),
    placed_at=datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC),
    lines=[LineData(sku="TEA-1", quantity=2, unit_price=Decimal("4.50"))],
)
body = ORDER_PLACED.serializer.encode({"order": order})
total = ORDER_PLACED.serializer.decode(body)["order"].total
print(json.dumps([ORDER_PLACED.serializer.fingerprint, len(body), str(total)]))
"""


def test_the_page_gives_the_fingerprint_and_size_of_its_example_record():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.orders"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", ENCODE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fingerprint, size, total = json.loads(result.stdout)
    text = PAGE.read_text()

    assert f"``ORDER_PLACED.serializer.fingerprint``, is ``{fingerprint}``" in text
    assert f"``{fingerprint}``\n     - ``ORDER_PLACED.serializer.fingerprint``" in text
    assert f"fastavro writes it as {size} bytes" in text
    assert f'the receiver gets ``Decimal("{total}")``' in text
