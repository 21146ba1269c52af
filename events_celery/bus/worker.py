"""Celery worker wiring: what a worker of this service runs beside its tasks.

The Django app imports this module when it is ready, which connects it to Celery's worker
signals and registers the receiver tasks (:mod:`events_celery.bus.consume.tasks`); it opens
no connection. A worker of a service that consumes gets the event consumer step
(:mod:`events_celery.bus.consume.step`), the ordered one for subscriptions ordered by key
(:mod:`events_celery.bus.consume.ordered`), and the service-private task queue; a worker of a
service that publishes through the outbox runs the outbox sweeper
(:class:`events_celery.bus.publish.relay.Sweeper`), so there is no extra process to deploy.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown

from events_celery.bus.broker import topology
from events_celery.bus.consume import tasks  # noqa: F401 - registers the receiver tasks
from events_celery.bus.consume.ordered import OrderedConsumerStep
from events_celery.bus.consume.step import EventConsumerStep
from events_celery.bus.publish.relay import Sweeper
from events_celery.conf import bus_settings

logger = logging.getLogger(__name__)


def install(app: Celery) -> None:
    """Add the event consumer and the service's task queue to a worker of ``app``.

    Does nothing when this service consumes no topic. Opens no connection.
    """
    settings = bus_settings()
    if not settings.subscriptions or EventConsumerStep in app.steps["consumer"]:
        return
    app.steps["consumer"].add(EventConsumerStep)
    if any(s.order_by_key for s in settings.subscriptions):
        app.steps["consumer"].add(OrderedConsumerStep)
    app.amqp.queues.select_add(
        topology.task_queue(
            settings.require_service_name(),
            settings.queue_type,
            app.conf.task_queue_max_priority,
        )
    )


@worker_init.connect(dispatch_uid="events_celery.bus.worker.install")
def _install_on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    if sender is not None:
        install(sender.app)


_sweeper: Sweeper | None = None


@worker_ready.connect(dispatch_uid="events_celery.bus.worker.start_sweeper")
def _start_sweeper(sender: Any = None, **kwargs: Any) -> None:
    # Every worker of a service that publishes through the outbox relays the rows whose
    # writer died, so there is no extra process to deploy.
    global _sweeper
    settings = bus_settings()
    if settings.publish_mode != "outbox" or not any(settings.routes.values()):
        return
    if _sweeper is None:
        _sweeper = Sweeper()
        _sweeper.start()
        logger.info(
            "events_celery: outbox sweeper started (every %gs)", settings.outbox_sweep_interval
        )


@worker_shutdown.connect(dispatch_uid="events_celery.bus.worker.stop_sweeper")
def _stop_sweeper(sender: Any = None, **kwargs: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
