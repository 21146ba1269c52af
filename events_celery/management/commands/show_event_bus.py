"""``manage.py show_event_bus``: what this service publishes and consumes, and where."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.connection import bus_connection, connect
from events_celery.bus.publish import outbox
from events_celery.conf import bus_settings
from events_celery.event_registry import registry
from events_celery.models import DeadLetter


class Command(BaseCommand):
    help = (
        "Print the events this service publishes (event type → topic → exchange) and consumes "
        "(topic → queue, event types), with queue depths when the broker is reachable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--offline", action="store_true", help="do not connect to the broker for queue depths"
        )

    def handle(self, *args: Any, offline: bool, **options: Any) -> None:
        settings = bus_settings()
        settings.raise_for_problems()
        service = settings.require_service_name()
        depth = self._depths(settings, offline)
        self.stdout.write(f"service: {service}")
        self.stdout.write(f"broker: {bus_connection(settings).as_uri()}")
        self.stdout.write(f"publish mode: {settings.publish_mode}")
        if settings.publish_mode == "outbox":
            self.stdout.write(f"outbox: {self._backlog(settings)}")
        self.stdout.write("publishes:")
        for event_type, routes in sorted(settings.routes.items()):
            for route in routes:
                exchange = topology.exchange_name(settings.topic_prefix, route.topic)
                key = f" key={route.event_key_field}" if route.event_key_field else ""
                self.stdout.write(
                    f"  {event_type} -> topic {route.topic} (exchange {exchange}{key}; "
                    f"unrouted parked: {depth(exchange + '.unrouted')})"
                )
        self.stdout.write("consumes:")
        for sub in settings.subscriptions:
            queue = topology.subscription_queues(
                service, settings.topic_prefix, sub, settings.queue_type
            )[0]
            types = ", ".join(sub.event_types) if sub.event_types else "all event types (#)"
            self.stdout.write(
                f"  topic {sub.topic} -> queue {queue.name} [{settings.queue_type}] "
                f"({types}; ready: {depth(queue.name)})"
            )
            if sub.order_by_key:
                self._ordered(settings, service, sub, depth, offline)
        if settings.subscriptions:
            tasks = topology.task_queue(service).name
            dead = topology.dead_letter_queue(service).name
            self.stdout.write(f"receiver tasks: {tasks} (ready: {depth(tasks)})")
            self.stdout.write(
                f"dead letters: {self._dead_letters(settings, service)}; broker queue {dead} "
                f"(ready: {depth(dead)}; manage.py event_dead_letters import moves them in)"
            )
        self.stdout.write(f"events defined here: {len(registry)}")
        for signal in registry.all():
            self.stdout.write(f"  {signal.event_type} ({len(signal.receivers)} receiver(s))")

    def _ordered(self, settings: Any, service: str, sub: Any, depth: Any, offline: bool) -> None:
        partitions = topology.partition_queues(service, sub, settings.queue_type)
        workers = "?" if offline else self._workers(settings, service, sub.topic)
        after = (
            "stops (its later events are held as dead letters)"
            if sub.when_exhausted == "stop"
            else "goes on"
        )
        self.stdout.write(
            f"    ordered by key: {sub.partitions} partition(s) "
            f"{partitions[0].name[: -len('.0')]}.0..{sub.partitions - 1} (ready: "
            f"{', '.join(depth(q.name) for q in partitions)}); workers: {workers}, so "
            f"{self._parallel(sub.partitions, workers)}; after an event's last attempt its key "
            f"{after}"
        )

    @staticmethod
    def _workers(settings: Any, service: str, topic: str) -> str:
        try:
            stats = declaring.queue_stats(
                bus_connection(settings), topology.presence_queue(service, topic).name
            )
        except Exception as exc:  # broker down: say so, never fail
            return f"n/a ({type(exc).__name__}: {exc})"
        return "0" if stats is None else str(stats[1])

    @staticmethod
    def _parallel(partitions: int, workers: str) -> str:
        if not workers.isdigit() or not int(workers):
            return "no worker runs its keys now"
        active = min(partitions, int(workers))
        return f"{active} worker(s) run its keys, each many keys at once in its pool"

    @staticmethod
    def _dead_letters(settings: Any, service: str) -> str:
        rows = DeadLetter.objects.using(settings.db_alias).filter(service=service)
        try:
            pending = rows.filter(status=DeadLetter.Status.PENDING).count()
            replaying = rows.filter(status=DeadLetter.Status.REPLAYING).count()
        except DatabaseError as exc:  # no table yet, or the database is down: say so
            return f"n/a ({type(exc).__name__}: {exc}; run migrate?)"
        return f"{pending} pending, {replaying} replaying (manage.py event_dead_letters list)"

    @staticmethod
    def _backlog(settings: Any) -> str:
        try:
            waiting = outbox.backlog(settings)
        except DatabaseError as exc:  # no table yet, or the database is down: say so
            return f"n/a ({type(exc).__name__}: {exc}; run migrate?)"
        if not waiting.count:
            return "0 unpublished"
        age = waiting.oldest_age() or 0.0
        refused = f", {waiting.refused} refused by the broker" if waiting.refused else ""
        if waiting.forbidden:
            refused += f"; {outbox.describe_forbidden(waiting)}"
        if waiting.blocked_keys:
            refused += f"; {outbox.describe_blocked(waiting)}"
        late = ""
        if age > settings.outbox_warn_after:
            ids, total = outbox.overdue(settings)
            late = f"; waiting past EVENT_BUS_OUTBOX_WARN_AFTER: {', '.join(ids)}"
            late += f" and {total - len(ids)} more" if total > len(ids) else ""
        return f"{waiting.count} unpublished, oldest {age:.1f}s old{refused}{late}"

    def _depths(self, settings: Any, offline: bool) -> Any:
        if offline:
            return lambda name: "?"
        connection = bus_connection(settings)
        try:
            connect(connection, timeout=settings.publish_timeout)
        except Exception as exc:  # broker down, or TLS refused: say so, never fail
            failure = f"n/a ({type(exc).__name__}: {exc})"
            return lambda name: failure

        def depth(name: str) -> str:
            try:
                count = declaring.queue_depth(connection, name)
            except Exception as exc:  # broker down: say so, never fail
                return f"n/a ({type(exc).__name__}: {exc})"
            if count is None:
                return "not declared yet: start a worker or run declare_event_topology"
            return str(count)

        return depth
