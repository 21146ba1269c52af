"""A three-node RabbitMQ cluster with quorum queues: a node stops mid-stream, nothing is lost.

The publisher (this process, through the outbox) and the workers are given every node's URL
(kombu failover, ``amqp://..;amqp://..;amqp://..``) and all start on the first node. That node
stops while events are committed and consumed; everyone moves to another node on their own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from events_celery.bus.publish import background
from events_celery.models import OutboxMessage
from tests.faults.cluster import RabbitMQCluster
from tests.faults.report import report
from tests.integration.conftest import Bus, open_bus, wait_for
from tests.testapp.events import PING

pytestmark = [pytest.mark.rabbitmq, pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

TOPIC = "shop"


@pytest.fixture
def cluster_bus(rabbitmq_cluster: RabbitMQCluster, tmp_path: Path, settings: Any) -> Iterator[Bus]:
    """A bus of real worker processes on the cluster; this process publishes (outbox).

    Its queues are not deleted afterwards: the cluster is thrown away at the end of the
    session, and deleting a quorum queue with a member on a stopped node waits for it.
    """
    settings.EVENT_BUS_QUEUE_TYPE = "quorum"
    settings.EVENT_BUS_PUBLISH_TIMEOUT = 2.0
    settings.EVENT_BUS_PUBLISH_RETRY_POLICY = {"interval_step": 0.1, "interval_max": 0.5}
    with open_bus(rabbitmq_cluster.url, tmp_path, settings, "outbox", delete=False) as harness:
        yield harness


def delivered(bus: Bus, service: str) -> Counter[str]:
    return Counter(r["event_id"] for r in bus.records(service=service, receiver="on_ping"))


def test_stopping_the_node_everyone_is_connected_to_mid_stream_loses_nothing(
    cluster_bus: Bus, rabbitmq_cluster: RabbitMQCluster, settings: Any
) -> None:
    first, *others = rabbitmq_cluster.nodes
    billing = cluster_bus.service_name("billing")
    settings.EVENT_BUS_PRODUCER_CONFIG = {PING.event_type: {TOPIC: {"enabled": True}}}
    began = time.monotonic()
    workers = [  # two competing workers of the service, started side by side
        cluster_bus.start(
            billing,
            {TOPIC: {}},
            node=node,
            queue_type="quorum",
            env={"TEST_CELERY_QUEUE_TYPE": "quorum"},  # Celery's own queue, as on any cluster
            wait=False,
        )
        for node in ("billing-a", "billing-b")
    ]
    for worker in workers:
        worker.wait_ready()
    print(f"\nworkers ready in {time.monotonic() - began:.1f}s")
    committed: list[str] = []
    rolled_back: list[str] = []

    def commit_some(count: int) -> None:
        for n in range(count):
            with transaction.atomic():
                sent = str(PING.send_event(n=n).metadata.id)
                if n % 10 == 9:
                    transaction.set_rollback(True)
                    rolled_back.append(sent)
                else:
                    committed.append(sent)

    commit_some(100)
    wait_for(lambda: len(delivered(cluster_bus, billing)) >= 20, "the first events")
    assert first.connection_count() > 0, "the publisher and workers start on the first node"
    assert all(node.connection_count() == 0 for node in others)

    stopped_at = time.monotonic()
    stopping = threading.Thread(target=first.stop_app, name="stop-first-node")
    stopping.start()  # the node goes away while events are committed, published and consumed
    try:
        commit_some(200)
    finally:
        stopping.join()
    commit_some(100)

    wait_for(
        lambda: set(committed) <= set(delivered(cluster_bus, billing)),
        "every committed event, through the other nodes",
        timeout=120,
    )
    print(f"every event arrived {time.monotonic() - stopped_at:.1f}s after the node began to stop")
    background.background_publisher().flush(timeout=30)
    counts = delivered(cluster_bus, billing)
    row = report("cluster: the connected node stops mid-stream", committed, counts, rolled_back)
    assert row.lost == 0
    assert row.phantom == 0, "a rolled-back event arrived"
    assert sum(node.connection_count() for node in others) > 0, "everyone moved to other nodes"
    assert all(w.process.poll() is None for w in cluster_bus.workers), "no worker was restarted"
    assert not OutboxMessage.objects.exists()
