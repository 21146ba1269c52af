"""``manage.py consume_events`` stops on SIGTERM even while its broker cannot be reached."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from tests.contrib.openedx.enrollments import TOPIC  # noqa: E402
from tests.integration.conftest import ROOT, wait_for  # noqa: E402


def refused_url() -> str:
    """An AMQP URL on a loopback port where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}//"


def tried_the_broker(log: str) -> bool:
    """Whether the log shows a failed connection (events_celery's line, or kombu's own)."""
    return "cannot reach the broker" in log or "connection error" in log.lower()


def test_sigterm_stops_consume_events_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    log = tmp_path / "consume.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "consume_events", "-t", TOPIC, "-g", "stopping"],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": "tests.contrib.openedx.service_settings",
                "TEST_SERVICE": "stopping",
                "TEST_PREFIX": "unreachable.",
                "TEST_BROKER_URL": refused_url(),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or tried_the_broker(log.read_text()),
            f"consume_events to try the broker (log: {log})",
        )
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"consume_events kept reconnecting after SIGTERM:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert status == 0, log.read_text()
    assert "stopped while the broker was unreachable" in log.read_text()
