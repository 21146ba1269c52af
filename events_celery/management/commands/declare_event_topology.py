"""``manage.py declare_event_topology``: declare this service's exchanges and queues."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.core.management.base import BaseCommand, CommandError

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.connection import bus_connection, connect
from events_celery.conf import bus_settings
from events_celery.exceptions import BrokerTLSError, ConfigurationError


class Command(BaseCommand):
    help = (
        "Declare, idempotently, the topic exchanges this service publishes to and the queues "
        "it consumes (workers and the first publish also do this)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        settings = bus_settings()
        settings.raise_for_problems()
        wanted = topology.service_topology(settings, current_app.conf.task_queue_max_priority)
        with bus_connection(settings) as connection:
            try:
                connect(connection, timeout=settings.publish_timeout)
            except BrokerTLSError as exc:
                raise CommandError(str(exc)) from exc
            except Exception as exc:
                raise CommandError(
                    f"the broker {connection.as_uri()} cannot be reached ({type(exc).__name__}: "
                    f"{exc})"
                ) from exc
            if settings.subscriptions:
                try:
                    declaring.refuse_changed_partitions(connection, settings)
                except ConfigurationError as exc:
                    raise CommandError(str(exc)) from exc
            declaring.declare(connection, wanted)
        for exchange in wanted.exchanges:
            self.stdout.write(f"declared exchange {exchange.name} ({exchange.type})")
        for queue in wanted.queues:
            self.stdout.write(f"declared queue {queue.name}")
