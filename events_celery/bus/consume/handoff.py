"""Hand-offs to this service's task queue: how events travel as receiver-task arguments.

The consumer step, a failing receiver's retry, a task that came back unfinished and a replay
all hand events to the receiver tasks (:mod:`.tasks`) the same way: as :data:`Envelope` items,
published to the service-private task queue and confirmed by the broker. This module is the
one place that knows the tasks' names and argument layout; whoever must read a task message
back (the dead-letter import) asks :func:`task_events`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import attrs
from celery import Celery
from kombu import Producer

from events_celery.bus.broker import topology
from events_celery.bus.broker.retrying import retrying_publisher
from events_celery.conf import BusSettings

#: The task names registered with Celery; they travel in task messages, so they never change.
DELIVER_EVENTS = "events_celery.deliver_events"
RUN_RECEIVER = "events_celery.run_receiver"

#: One event as a task argument: its message headers and base64 Avro body (JSON-safe).
Envelope = dict[str, Any]


def envelope(
    headers: dict[str, Any],
    body: bytes,
    *,
    origin: str | None = None,
    dead_letter_id: int | None = None,
    user_id: str | None = None,
) -> Envelope:
    """Pack a message into a task argument.

    Args:
        headers: the message headers.
        body: the message body.
        origin: ``<exchange>/<routing key>`` the event came by.
        dead_letter_id: the dead letter this is a replay of; its row is marked replayed once
            the receiver (or, for a whole event, every receiver) has run.
        user_id: the broker user that published the event, as the consumer received it
            (checked there); a dead letter of the event keeps it.
    """
    item: Envelope = {
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
        "origin": origin,
    }
    if dead_letter_id is not None:
        item["dead_letter"] = dead_letter_id
    if user_id is not None:
        item["user_id"] = str(user_id)
    return item


def send_task(
    app: Celery,
    settings: BusSettings,
    name: str,
    args: list[Any],
    *,
    countdown: float | None = None,
) -> None:
    """Publish a task to this service's task queue and wait for the broker's confirm.

    Raises:
        PublishError: not confirmed within the publish retry policy.
    """
    queue = topology.task_queue(
        settings.require_service_name(), settings.queue_type, app.conf.task_queue_max_priority
    )

    def publish(producer: Producer) -> None:
        app.send_task(
            name,
            args=args,
            # A Queue object, not its name: the name alone would be routed through an exchange
            # Celery creates on the fly. (celery-types only admits the name.)
            queue=queue,  # type: ignore[arg-type]
            exchange=queue.exchange.name,
            routing_key=queue.routing_key,
            producer=producer,
            countdown=countdown,
            retry=False,
            serializer="json",
            declare=[],
            # Confirmed and unroutable would still be lost: mandatory turns a missing queue
            # into an error (then a retry on a fresh connection, which declares it again).
            mandatory=True,
            delivery_mode=2,
        )

    retrying_publisher(settings).run(
        publish, topology.Topology((), (queue,)), describe=lambda: f"task {name} to {queue.name!r}"
    )


def deliver_later(
    app: Celery,
    settings: BusSettings,
    items: Sequence[Envelope],
    *,
    redeliveries: int | None = None,
) -> None:
    """Hand events to a ``deliver_events`` task, which runs every receiver of each once.

    Args:
        app: the Celery app.
        settings: the bus settings.
        items: the events.
        redeliveries: how many times these events came back unfinished (left out: none).

    Raises:
        PublishError: not confirmed within the publish retry policy.
    """
    args: list[Any] = [list(items)]
    if redeliveries is not None:
        args.append(redeliveries)
    send_task(app, settings, DELIVER_EVENTS, args)


def retry_later(
    app: Celery,
    settings: BusSettings,
    item: Envelope,
    receiver: str,
    attempt: int,
    *,
    redeliveries: int | None = None,
    countdown: float | None = None,
) -> None:
    """Hand one receiver of one event to a ``run_receiver`` task (its attempt ``attempt``).

    Raises:
        PublishError: not confirmed within the publish retry policy.
    """
    args: list[Any] = [item, receiver, attempt]
    if redeliveries is not None:
        args.append(redeliveries)
    send_task(app, settings, RUN_RECEIVER, args, countdown=countdown)


@attrs.frozen
class TaskEvents:
    """The events a receiver-task message carries, and for which receiver and attempt."""

    items: list[Envelope]
    #: The receiver a ``run_receiver`` task runs; ``None``: every receiver.
    receiver: str | None
    attempt: int | None


def task_events(task: str, args: Sequence[Any]) -> TaskEvents:
    """Read the events out of a receiver task's positional arguments.

    Raises:
        ValueError, TypeError, KeyError, IndexError: the arguments are not the task's.
    """
    if task == RUN_RECEIVER:
        return TaskEvents([dict(args[0])], str(args[1]), int(args[2]))
    if task == DELIVER_EVENTS:
        return TaskEvents([dict(item) for item in args[0]], None, None)
    raise ValueError(f"{task!r} is not a receiver task")
