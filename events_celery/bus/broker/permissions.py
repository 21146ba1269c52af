"""A service's least-privilege RabbitMQ permissions, derived from its settings.

RabbitMQ grants a user, per virtual host, three regular expressions over exchange and queue
names (``configure``: declare and delete; ``write``: publish to an exchange, bind a queue;
``read``: consume a queue, bind from an exchange), and, per topic exchange, two more over
routing keys (``write``: the keys it may publish with; ``read``: the keys it may bind with).
Measured on RabbitMQ 3.10.8, this module's rules follow from three facts:

* the expressions are unanchored, so every one here is ``^(?:...)$`` over escaped names;
* a topic exchange without a topic-permission row for the user accepts any routing key, so
  every exchange the user may write to or bind from gets a row;
* configuring is needed only to declare: the topic exchanges and their parking queues are
  declared once by an administrator (``manage.py declare_event_topology``), and the services
  then declare them passively (:func:`events_celery.bus.broker.declaring.declare`).

What a service gets:

* its own names, ``<service>.*`` (its event queues, task queue and exchange, dead-letter
  exchange and queue, ordered-delivery queues): configure, write and read;
* the topic exchanges it publishes to: write, with topic permissions limited to the event types
  routed there;
* the topic exchanges it subscribes to: read, with topic permissions limited to the subscribed
  event types (``#`` only for a topic subscribed whole);
* what its Celery worker declares beside them (:class:`CeleryNames`): its default queue, the
  remote-control (``pidbox``) and event (``celeryev``) exchanges and queues, and on quorum
  queues Celery's delayed-delivery exchanges and queues. Unless the Celery settings give them
  names of the service's own, these are shared by every service of the virtual host
  (:attr:`Permissions.shared` lists them).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

import attrs
from django.conf import settings as django_settings

from events_celery.bus.broker import topology
from events_celery.conf import BusSettings
from events_celery.exceptions import ConfigurationError

#: A routing-key pattern no key matches (the empty key included).
NOTHING = "(?!)"
#: Any routing key.
ANYTHING = ".*"
#: How many levels Celery's native delayed delivery uses (quorum queues).
DELAYED_DELIVERY_LEVELS = 28


def anchored(alternatives: Iterable[str]) -> str:
    """One pattern matching exactly one of ``alternatives`` (each a regular expression)."""
    found = sorted(set(alternatives))
    if not found:
        return NOTHING
    return f"^(?:{'|'.join(found)})$"


def exactly(names: Iterable[str]) -> str:
    """One pattern matching exactly the literal ``names``."""
    return anchored(re.escape(name) for name in names)


@attrs.frozen
class CeleryNames:
    """What a Celery worker of the service declares and uses besides the bus's own names.

    Attributes:
        default_queue: ``task_default_queue``.
        default_exchange: ``task_default_exchange`` (Celery uses the queue's name when unset).
        control_exchange: ``control_exchange``: remote control (``celery inspect``, ``celery
            control``, and the worker's start-up ``mingle``) uses the fanout exchange
            ``<it>.pidbox``, replies go to the direct exchange ``reply.<it>.pidbox``, and each
            worker and each caller has a queue ``<node name or id>.<...>.pidbox``.
        remote_control: ``worker_enable_remote_control``.
        event_exchange: ``event_exchange``: the topic exchange of worker events (heartbeats,
            gossip, task events with ``-E``).
        event_queue_prefix: ``event_queue_prefix``: gossip's queue is ``<it>.<uuid>``.
        delayed_delivery: whether the worker sets up Celery's native delayed delivery (it does
            when one of its queues is a quorum queue).
    """

    default_queue: str = "celery"
    default_exchange: str = "celery"
    control_exchange: str = "celery"
    remote_control: bool = True
    event_exchange: str = "celeryev"
    event_queue_prefix: str = "celeryev"
    delayed_delivery: bool = False

    @classmethod
    def of(cls, conf: Any, settings: BusSettings) -> CeleryNames:
        """The names a worker of a Celery app configured with ``conf`` uses.

        Each is the Django setting ``CELERY_<NAME>`` when it is set (where a Celery app reads
        its configuration, namespace ``CELERY``), else the app's ``conf``.
        """

        def setting(name: str) -> Any:
            value = getattr(django_settings, f"CELERY_{name.upper()}", None)
            return conf[name] if value is None else value

        default_queue = settings.celery_task_default_queue
        quorum = settings.queue_type == "quorum" or setting("task_default_queue_type") == "quorum"
        return cls(
            default_queue=default_queue,
            default_exchange=str(setting("task_default_exchange") or default_queue),
            control_exchange=str(setting("control_exchange")),
            remote_control=bool(setting("worker_enable_remote_control")),
            event_exchange=str(setting("event_exchange")),
            event_queue_prefix=str(setting("event_queue_prefix")),
            delayed_delivery=quorum,
        )


@attrs.frozen
class TopicPermission:
    """Which routing keys a user may publish with, and bind with, on one exchange."""

    exchange: str
    write: str
    read: str


@attrs.frozen
class Permissions:
    """One user's permissions on one virtual host.

    Attributes:
        user: the broker user.
        vhost: the virtual host.
        configure: the pattern of the names it may declare and delete.
        write: the pattern of the names it may publish to (exchanges) or bind (queues).
        read: the pattern of the names it may consume (queues) or bind from (exchanges).
        topic_permissions: one row per exchange it may write to or bind from.
        shared: names outside the service's own that other services on the virtual host may
            use too (Celery's defaults), for the operator to know.
    """

    user: str
    vhost: str
    configure: str
    write: str
    read: str
    topic_permissions: tuple[TopicPermission, ...]
    shared: tuple[str, ...] = ()

    def definitions(self) -> dict[str, list[dict[str, str]]]:
        """The ``permissions`` and ``topic_permissions`` of a RabbitMQ definitions file."""
        return {
            "permissions": [
                {
                    "user": self.user,
                    "vhost": self.vhost,
                    "configure": self.configure,
                    "write": self.write,
                    "read": self.read,
                }
            ],
            "topic_permissions": [
                {
                    "user": self.user,
                    "vhost": self.vhost,
                    "exchange": row.exchange,
                    "write": row.write,
                    "read": row.read,
                }
                for row in self.topic_permissions
            ],
        }

    def rabbitmqctl(self) -> list[str]:
        """The same as ``rabbitmqctl set_permissions`` / ``set_topic_permissions`` lines."""
        target = ["-p", self.vhost, self.user]
        lines = [["rabbitmqctl", "set_permissions", *target, self.configure, self.write, self.read]]
        lines += [
            ["rabbitmqctl", "set_topic_permissions", *target, row.exchange, row.write, row.read]
            for row in self.topic_permissions
        ]
        return [shlex.join(line) for line in lines]


def derive(settings: BusSettings, celery: CeleryNames, *, user: str, vhost: str) -> Permissions:
    """The least-privilege permissions of the service ``settings`` describe.

    Raises:
        ConfigurationError: the settings are invalid, or one of the topic exchanges falls
            inside the service's own names (which would grant it every right there).
    """
    settings.raise_for_problems()
    service = settings.require_service_name()
    own = f"{service}."
    prefix = settings.topic_prefix

    published: dict[str, set[str]] = {}
    for event_type, routes in settings.routes.items():
        for route in routes:
            published.setdefault(topology.exchange_name(prefix, route.topic), set()).add(event_type)
    subscribed: dict[str, tuple[str, ...] | None] = {
        topology.exchange_name(prefix, s.topic): s.event_types for s in settings.subscriptions
    }
    for exchange in sorted({*published, *subscribed}):
        if exchange.startswith(own):
            raise ConfigurationError(
                f"topic exchange {exchange!r} starts with {own!r}, the names of service "
                f"{service!r}: its permissions would let it declare, read and write that topic "
                "whole; set EVENT_BUS_TOPIC_PREFIX, or name the topic so that its exchange "
                "does not start with a service name and a dot"
            )

    # Patterns of every name the service declares and uses, and its exchanges' topic rows.
    names = [re.escape(own) + ".+"]
    shared: list[str] = []
    rows: list[TopicPermission] = []

    def add(name: str, *, row: TopicPermission | None = None, ours: bool = False) -> None:
        if not name.startswith(own):
            names.append(re.escape(name))
            if not ours:
                shared.append(name)
        if row is not None:
            rows.append(row)

    # Named exchanges of the service's own (others of its names, e.g. ordered-delivery ones,
    # are direct exchanges, where RabbitMQ checks no topic permission).
    tasks = topology.task_queue(service).name
    dead_letters = topology.dead_letter_exchange(service).name
    # With Celery's native delayed delivery (quorum queues), the worker also binds the task
    # queue to its exchange with "#.<routing key>", where delayed tasks arrive.
    delayed = [f"#.{tasks}"] if celery.delayed_delivery else []
    rows.append(TopicPermission(tasks, exactly([tasks]), exactly([tasks, *delayed])))
    rows.append(TopicPermission(dead_letters, ANYTHING, ANYTHING))  # fanout: keys unused

    add(celery.default_queue)
    add(
        celery.default_exchange,
        row=TopicPermission(
            celery.default_exchange,
            exactly([celery.default_queue]),
            exactly([celery.default_queue]),
        ),
    )
    if celery.remote_control:
        control = f"{celery.control_exchange}.pidbox"
        reply = f"reply.{control}"
        ours = control.startswith(own)  # CELERY_CONTROL_EXCHANGE = "<service>"
        add(control, row=TopicPermission(control, ANYTHING, ANYTHING))  # fanout
        # direct; its routing keys are the callers' reply queue names
        add(reply, row=TopicPermission(reply, ANYTHING, ANYTHING), ours=ours)
        # Each worker's queue <node name>.<control>, each caller's <id>.reply.<control>.
        names.append(".+" + re.escape(f".{control}"))
        if not ours:
            shared.append(f"*.{control}")
    add(
        celery.event_exchange,
        row=TopicPermission(celery.event_exchange, r"^(?:worker|task)\..+$", r"^worker\.#$"),
    )
    names.append(re.escape(f"{celery.event_queue_prefix}.") + ".+")  # gossip's queue
    if not celery.event_queue_prefix.startswith(own):
        shared.append(f"{celery.event_queue_prefix}.*")
    if celery.delayed_delivery:
        for level in [*range(DELAYED_DELIVERY_LEVELS), "delivery"]:
            name = f"celery_delayed_{level}"
            add(name, row=TopicPermission(name, ANYTHING, ANYTHING))

    configure = anchored(names)
    for exchange, event_types in sorted(published.items()):
        wanted = subscribed.get(exchange, ())
        read = ANYTHING if wanted is None else exactly(wanted)
        rows.append(TopicPermission(exchange, exactly(event_types), read))
    for exchange, wanted in sorted(subscribed.items()):
        if exchange not in published:
            rows.append(
                TopicPermission(exchange, NOTHING, ANYTHING if wanted is None else exactly(wanted))
            )
    write = anchored([*names, *(re.escape(e) for e in published)])
    read = anchored([*names, *(re.escape(e) for e in subscribed)])
    unique = {row.exchange: row for row in rows}
    return Permissions(
        user=user,
        vhost=vhost,
        configure=configure,
        write=write,
        read=read,
        topic_permissions=tuple(unique[name] for name in sorted(unique)),
        shared=tuple(sorted(set(shared))),
    )
