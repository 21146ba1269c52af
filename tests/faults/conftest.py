"""Fixtures for fault tests, which run against a private RabbitMQ node they may stop and restart."""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import RabbitMQCluster
from tests.faults.node import RabbitMQNode
from tests.faults.report import ROWS, table
from tests.integration.conftest import Bus, open_bus


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A started private RabbitMQ node (never the shared one). Under CI=true it never skips."""
    node = RabbitMQNode(tmp_path_factory.mktemp("rabbitmq"))
    # A safety net for a run that ends without the session teardown; shutdown() is idempotent.
    atexit.register(node.shutdown)
    try:
        node.start()
    except (RuntimeError, OSError) as exc:
        problem = f"cannot start a private RabbitMQ node: {exc}"
        try:
            node.shutdown()
        except (RuntimeError, OSError) as cleanup:
            problem += f"\nand shutting it down failed too: {cleanup}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}\nCI runs the fault tests and cannot skip them")
        pytest.skip(problem)
    try:
        yield node
    finally:
        node.shutdown()
        atexit.unregister(node.shutdown)


@pytest.fixture(scope="session")
def rabbitmq_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQCluster]:
    """A started cluster of three private RabbitMQ nodes. Under CI=true it never skips."""
    cluster = RabbitMQCluster(tmp_path_factory.mktemp("rabbitmq-cluster"))
    atexit.register(cluster.shutdown)
    began = time.monotonic()
    try:
        cluster.start()
        print(f"\n{cluster!r} started in {time.monotonic() - began:.1f}s")
    except (RuntimeError, OSError) as exc:
        problem = f"cannot start a cluster of private RabbitMQ nodes: {exc}"
        try:
            cluster.shutdown()
        except (RuntimeError, OSError) as cleanup:
            problem += f"\nand shutting it down failed too: {cleanup}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}\nCI runs the fault tests and cannot skip them")
        pytest.skip(problem)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        atexit.unregister(cluster.shutdown)


@pytest.fixture
def fault_bus(rabbitmq_node: RabbitMQNode, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A bus of real worker processes on the private node; this process publishes (outbox)."""
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 2.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"interval_step": 0.1, "interval_max": 0.5}
    with open_bus(rabbitmq_node.url, tmp_path, settings, "outbox") as harness:
        yield harness


@pytest.fixture
def quorum_bus(rabbitmq_node: RabbitMQNode, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A bus on the private node for quorum-queue tests; this process publishes directly.

    Quorum retries wait in Celery's shared ``celery_delayed_*`` queues. Those still holding
    retries for a queue the test deleted would keep them for ever (at-least-once
    dead-lettering finds no route) and hold back the delayed messages of later tests, so they
    are deleted with the test's own queues; the next worker declares them again.
    """
    with open_bus(rabbitmq_node.url, tmp_path, settings, "direct") as harness:
        yield harness
    client = harness.client()
    for level in range(28):  # kombu's native delayed delivery levels
        with contextlib.suppress(Exception):  # a level that was never declared
            client.channel().queue_delete(f"celery_delayed_{level}")
    client.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures of every fault scenario that ran, as one table."""
    if not ROWS:
        return
    from django.db import connection

    terminalreporter.section("fault suite: event ids counted at the receivers")
    for line in table(ROWS):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(database: {connection.vendor})")
