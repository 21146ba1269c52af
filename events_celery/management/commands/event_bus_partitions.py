"""``manage.py event_bus_partitions``: show, and change, the partitions of ordered subscriptions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events_celery.bus.broker import declaring
from events_celery.bus.broker.connection import bus_connection
from events_celery.bus.consume.repartition import repartition
from events_celery.conf import bus_settings
from events_celery.exceptions import EventsCeleryError


class Command(BaseCommand):
    help = (
        "Show each topic ordered by key with its partitions on the broker and in the settings; "
        "with --apply (every worker of the service stopped), move the waiting events to the "
        "partitions the settings ask for, keeping each key's order."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topics", nargs="*", help="ordered topics (default: all of them)")
        parser.add_argument(
            "--apply",
            action="store_true",
            help="change the broker's partitions to the settings' (stop the workers first)",
        )

    def handle(self, *args: Any, topics: list[str], apply: bool, **options: Any) -> None:
        settings = bus_settings()
        settings.raise_for_problems()
        service = settings.require_service_name()
        ordered = {s.topic: s for s in settings.subscriptions if s.order_by_key}
        unknown = sorted(set(topics) - set(ordered))
        if unknown:
            raise CommandError(
                f"not consumed in order by key here: {', '.join(unknown)} (ordered topics: "
                f"{', '.join(sorted(ordered)) or 'none'}; see EVENT_BUS_CONSUMER_CONFIG)"
            )
        with bus_connection(settings) as connection:
            for topic in topics or sorted(ordered):
                subscription = ordered[topic]
                found = declaring.declared_partitions(connection, service, subscription)
                self.stdout.write(
                    f"{topic}: {found} partition(s) on the broker, {subscription.partitions} "
                    "in the settings"
                )
                if not apply or found in (0, subscription.partitions):
                    continue
                try:
                    done = repartition(connection, settings, subscription, say=self.stdout.write)
                except EventsCeleryError as exc:
                    raise CommandError(str(exc)) from exc
                self.stdout.write(f"{topic}: now {done.after} partition(s)")
