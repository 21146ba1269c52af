"""Read what a service sent to its task queue on kombu's ``memory://`` broker."""

from __future__ import annotations

from typing import Any

from kombu import Connection

from events_celery.bus.broker import topology


def take_tasks(service: str) -> list[tuple[str, list[Any]]]:
    """The tasks waiting on the service's task queue, as (name, args); the queue is emptied."""
    taken = []
    with Connection("memory://") as connection:
        queue = topology.task_queue(service)(connection.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            taken.append((message.headers["task"], list(message.decode()[0])))
    return taken
