"""A three-node RabbitMQ cluster of private nodes on loopback, for the cluster fault tests.

Each node is a :class:`~tests.faults.node.RabbitMQNode` with its own name, AMQP and Erlang
distribution ports and data; the three share one fresh Erlang cookie (never the shared node's).
They boot in parallel; the second and third then join the first (``stop_app``,
``join_cluster``, ``start_app``, the slow steps in parallel too). Shutting the cluster down
stops every node, also after a failed start.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.faults.node import RabbitMQNode, _free_ports

SIZE = 3


def _each(nodes: Iterable[RabbitMQNode], action: Callable[[RabbitMQNode], None]) -> None:
    """Run ``action`` on every node at once; raise the first error once all have finished."""
    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(action, node) for node in nodes]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


class RabbitMQCluster:
    """Three private RabbitMQ nodes clustered together."""

    def __init__(self, base_dir: Path, size: int = SIZE) -> None:
        cookie = secrets.token_hex(20).upper()
        ports = _free_ports(2 * size)  # distinct across the nodes, picked at once
        self.nodes = [
            RabbitMQNode(Path(base_dir), cookie=cookie, ports=(ports[2 * i], ports[2 * i + 1]))
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's AMQP URL, the first node's first."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL in one kombu failover string (``amqp://..;amqp://..``)."""
        return ";".join(self.urls)

    def __repr__(self) -> str:
        return f"<RabbitMQCluster {' '.join(repr(n) for n in self.nodes)}>"

    def start(self) -> None:
        """Boot the nodes in parallel, then join the others to the first one."""
        seed, *others = self.nodes
        _each(self.nodes, RabbitMQNode.start)
        # The slow steps of the joining nodes side by side; join_cluster one node at a time,
        # as it changes the cluster's membership. Every name was checked to be a private node's.
        _each(others, RabbitMQNode.stop_app)
        for node in others:
            node.ctl("join_cluster", seed.name)
        _each(others, RabbitMQNode.start_app)
        running = seed.running_nodes()
        expected = {node.name for node in self.nodes}
        if running != expected:
            raise RuntimeError(f"{self!r}: running nodes are {sorted(running)}")

    def shutdown(self) -> None:
        """Stop every node and remove its directory (idempotent)."""
        errors: list[BaseException] = []

        def stop(node: RabbitMQNode) -> None:
            try:
                node.shutdown()
            except Exception as exc:  # shut down the others anyway
                errors.append(exc)

        with contextlib.suppress(Exception):
            _each(self.nodes, stop)
        if errors:
            raise errors[0]
