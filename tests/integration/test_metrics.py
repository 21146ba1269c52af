"""Metrics of a real prefork worker, added up across its processes (multiprocess mode)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Bus, wait_for
from tests.testapp.events import DOOMED, PING

pytestmark = pytest.mark.rabbitmq

TOPIC = "shop"
#: The name of the service's PING receiver (its module and name).
RECEIVER = "tests.integration.receivers.handlers.on_ping"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the worker serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_a_prefork_worker_serves_the_counts_of_all_its_processes(
    bus: Bus, settings: Any, tmp_path: Path
) -> None:
    billing = bus.service_name("billing")
    port = free_port()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    bus.start(
        billing,
        {TOPIC: {}},
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "TEST_METRICS_PORT": str(port)},
    )
    settings.EVENT_BUS_PRODUCER_CONFIG = {
        signal.event_type: {TOPIC: {"enabled": True}} for signal in (PING, DOOMED)
    }
    ping = {"service": "tests", "topic": TOPIC, "event_type": PING.event_type}
    confirmed_before = REGISTRY.get_sample_value(
        "events_celery_published_messages_confirmed_total", ping
    )

    for n in range(10):
        PING.send_event(n=n)
    DOOMED.send_event(n=1)

    consumed = {"service": billing, "topic": TOPIC, "event_type": PING.event_type}
    ran = {"service": billing, "event_type": PING.event_type, "receiver": RECEIVER}
    wait_for(lambda: len(bus.records(service=billing, receiver="on_ping")) == 10, "10 pings")
    receiver = bus.records(service=billing, receiver="on_ping")
    doomed = {"service": billing, "event_type": DOOMED.event_type}

    def counted() -> dict[Any, float] | None:
        found = scrape(port)
        dead = [
            value
            for (name, labels), value in found.items()
            if name == "events_celery_receiver_runs_total"
            and dict(labels).items() >= {**doomed, "outcome": "dead-lettered"}.items()
        ]
        return found if dead == [1.0] else None

    found = wait_for(counted, "the doomed receiver's dead letter to be counted")

    # the consumer runs in the worker's main process, the receivers in its pool processes
    assert sample(found, "events_celery_consumed_messages_total", **consumed) == 10
    assert sample(found, "events_celery_receiver_runs_total", **ran, outcome="success") == 10
    assert sample(found, "events_celery_receiver_duration_seconds_count", **ran) == 10
    assert {record["pid"] for record in receiver} != {bus.workers[0].process.pid}
    # the counts were written by more than one process
    assert len({path.name.rsplit("_", 1)[-1] for path in directory.glob("counter_*.db")}) >= 2
    # this process published them, confirmed by the real broker
    confirmed = REGISTRY.get_sample_value("events_celery_published_messages_confirmed_total", ping)
    assert confirmed == (confirmed_before or 0) + 10
