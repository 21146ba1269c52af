"""``manage.py event_bus_permissions``: this service's least-privilege RabbitMQ permissions."""

from __future__ import annotations

import json
from typing import Any

from celery import current_app
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kombu import Connection

from events_celery.bus.broker import permissions
from events_celery.bus.broker.connection import broker_url
from events_celery.conf import bus_settings
from events_celery.exceptions import ConfigurationError

FORMATS = ("definitions", "rabbitmqctl")


class Command(BaseCommand):
    help = (
        "Print the RabbitMQ permissions this service's broker user needs, and no more: derived "
        "from EVENT_BUS_SERVICE_NAME, the producer and consumer config, the topic prefix and "
        "the Celery app's settings. The topology must have been declared once by an "
        "administrator (declare_event_topology)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--user", help="the broker user (default: EVENT_BUS_SERVICE_NAME)", default=None
        )
        parser.add_argument(
            "--vhost",
            default=None,
            help="the virtual host (default: the one of the service's broker URL)",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default="definitions",
            help=(
                "definitions: JSON for 'rabbitmqctl import_definitions' (the user must exist); "
                "rabbitmqctl: set_permissions and set_topic_permissions command lines"
            ),
        )

    def handle(
        self, *args: Any, user: str | None, vhost: str | None, format: str, **options: Any
    ) -> None:
        settings = bus_settings()
        try:
            settings.raise_for_problems()
            service = settings.require_service_name()
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if user is not None and not user.strip():
            raise CommandError("--user is empty: name the broker user, or leave it out")
        if vhost is not None and not vhost:
            raise CommandError("--vhost is empty: name the virtual host, e.g. --vhost /")
        try:
            granted = permissions.derive(
                settings,
                permissions.CeleryNames.of(current_app.conf, settings),
                user=user or service,
                vhost=vhost or _vhost(broker_url(settings)),
            )
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if format == "definitions":
            self.stdout.write(json.dumps(granted.definitions(), indent=2))
        else:
            self.stdout.write("\n".join(granted.rabbitmqctl()))
        if granted.shared:
            self.stderr.write(
                "note: these names are Celery's defaults, shared by every service of virtual "
                f"host {granted.vhost!r}: {', '.join(granted.shared)}. Name them "
                f"'{service}.<...>' in the Celery settings to keep this service's workers apart "
                "(docs: how-to 'From guest to least privilege')"
            )


def _vhost(url: str) -> str:
    # The first URL of a cluster's list; kombu says "/" for the default virtual host.
    return str(Connection(url.split(";", 1)[0]).virtual_host or "/")
