"""The example's demo (``python -m config.demo``) on the real RabbitMQ.

It runs the Procfile's ``billing`` and ``notifications`` lines as they are, so it uses the
example's own exchange (``orders``) and queues (``billing.orders``,
``notifications.orders``), as a user running the demo would. ``TMPDIR`` is the test's
directory: the services' SQLite databases and caches are made there.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.rabbitmq


def tables(database) -> set[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


def test_the_demo_migrates_every_services_database_before_its_worker_starts(rabbitmq_url, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "CELERY_BROKER_URL": rabbitmq_url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "config.demo", "--count", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "broker: RabbitMQ at" in result.stdout
    assert "done: billing received 3 events, notifications 2" in result.stdout
    for service in ("orders", "billing", "notifications"):
        database = tmp_path / f"events_celery_demo_{service}.sqlite3"
        assert {"events_celery_dead_letter", "events_celery_outbox"} <= tables(database), service
