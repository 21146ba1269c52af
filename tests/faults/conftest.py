"""Fixtures for fault tests, which run against a private RabbitMQ node they may stop and restart."""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.node import RabbitMQNode
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
