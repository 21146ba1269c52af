"""The example project in ``config/``: its demo on the in-memory broker, billing's
deduplication across worker processes, and the orders view's validation.

Each test runs the example in subprocesses with its own settings module (Django settings are
global to a process) and ``TMPDIR`` set to the test's directory, where the example keeps its
SQLite databases and caches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:5999//"  # nothing listens there


def example_env(tmp_path: Path, service: str | None = None) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if service is not None:
        env["DJANGO_SETTINGS_MODULE"] = f"config.settings.{service}"
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


DELIVER_PLACED = """
    import logging, sys, uuid
    import attrs
    from datetime import UTC, datetime
    from decimal import Decimal

    import django

    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from config.shop.events import ORDER_PLACED, CustomerData, LineData, OrderData
    from events_celery import EventMetadata

    metadata = EventMetadata.create(ORDER_PLACED.event_type, source="orders")
    metadata = attrs.evolve(metadata, id=uuid.UUID(sys.argv[1]))
    order = OrderData(
        id=uuid.UUID(sys.argv[2]),
        customer=CustomerData(id=uuid.uuid4(), email="ada@example.org"),
        total=Decimal("4.50"),
        placed_at=datetime.now(UTC),
        lines=[LineData(sku="TEA-1", quantity=1, unit_price=Decimal("4.50"))],
    )
    # As a worker runs the receivers of an event that came over the bus.
    ORDER_PLACED.send_event_with_metadata(metadata, order=order)
"""


def deliver_placed(tmp_path: Path, event_id: uuid.UUID, order_id: uuid.UUID) -> str:
    """Deliver one ORDER_PLACED to billing's receivers in a new process; what it logged."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DELIVER_PLACED), str(event_id), str(order_id)],
        cwd=ROOT,
        env=example_env(tmp_path, "billing"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def test_billing_charges_once_for_one_event_delivered_to_two_worker_processes(tmp_path):
    event_id, order_id = uuid.uuid4(), uuid.uuid4()
    first = deliver_placed(tmp_path, event_id, order_id)
    redelivered = deliver_placed(tmp_path, event_id, order_id)

    charged = f"charge order {order_id}"
    assert first.count(charged) == 1, first
    assert charged not in redelivered, redelivered


def test_billing_charges_again_for_another_event(tmp_path):
    order_id = uuid.uuid4()
    deliver_placed(tmp_path, uuid.uuid4(), order_id)
    other = deliver_placed(tmp_path, uuid.uuid4(), order_id)

    assert f"charge order {order_id}" in other, other


def test_billing_logs_no_email_and_no_total(tmp_path):
    logged = deliver_placed(tmp_path, uuid.uuid4(), uuid.uuid4())

    assert "charge order" in logged
    assert "ada@example.org" not in logged
    assert "4.50" not in logged


PLACE_ORDER = """
    import json, sys

    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    response = Client(HTTP_HOST="127.0.0.1").post("/orders/", json.loads(sys.argv[1]))
    print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def post_order(tmp_path: Path, data: dict[str, str]) -> dict:
    env = example_env(tmp_path, "orders")
    env["CELERY_BROKER_URL"] = UNREACHABLE_BROKER  # the order's event stays in the outbox
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PLACE_ORDER), json.dumps(data)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("email", ["not-an-email", "", "ada@", "@example.org"])
def test_placing_an_order_with_a_bad_email_is_a_400_naming_the_field(tmp_path, email):
    answer = post_order(tmp_path, {"email": email})

    assert answer["status"] == 400
    assert answer["body"] == {"errors": {"email": ["Enter a valid email address."]}}


def test_placing_an_order_with_an_email_address_is_a_201(tmp_path):
    answer = post_order(tmp_path, {"email": "ada@example.org"})

    assert answer["status"] == 201
    assert answer["body"]["email"] == "ada@example.org"


def test_placing_an_order_without_an_email_is_a_201(tmp_path):
    assert post_order(tmp_path, {})["status"] == 201


def test_the_demo_runs_on_the_in_memory_broker_when_rabbitmq_is_unreachable(tmp_path):
    env = example_env(tmp_path)
    env["CELERY_BROKER_URL"] = UNREACHABLE_BROKER
    result = subprocess.run(
        [sys.executable, "-m", "config.demo", "--count", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded in-memory broker" in result.stdout
    assert "done: billing received 3 events, notifications 2" in result.stdout


def test_readme_shows_billings_receiver_as_it_is_in_its_file():
    readme = (ROOT / "README.md").read_text()
    receivers = (ROOT / "config" / "billing" / "receivers.py").read_text()
    marker = "(`config/billing/receivers.py`):\n\n```python\n"
    snippet = readme[readme.index(marker) + len(marker) :].split("```", 1)[0]

    assert "@once_per_event" in snippet
    assert snippet in receivers
