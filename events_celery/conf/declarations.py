"""Every ``EVENT_BUS_*`` setting, declared once: name, type, default, summary and check ids.

The parser (``events_celery.conf.parsing``), ``manage.py check`` and the settings
reference (``docs/reference/settings.rst``, whose type and default lines are generated from
these declarations) all use :data:`SETTINGS`.

A new setting is a :class:`Setting` in :data:`SETTINGS`, an attribute of the same name in
:class:`~events_celery.conf.BusSettings`, an ``.. event-bus-setting::`` entry in
``docs/reference/settings.rst``, and a row in the check id table of
``docs/reference/commands.rst`` for each new check id; the tests and the docs build fail
until all four agree.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from typing import Any

import attrs
from django.conf import settings as django_settings

from events_celery.conf.authenticity import (
    parse_signing_keys,
    parse_trusted_keys,
    parse_trusted_publishers,
)
from events_celery.conf.policies import (
    PublishRetryPolicy,
    RetryPolicy,
    parse_publish_retry_policy,
    parse_retry_policy,
    read_number,
)
from events_celery.conf.problems import Problems
from events_celery.conf.routing import TOPIC_PATTERN, parse_routes, parse_subscriptions

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

#: The prefix of every setting of events_celery.
PREFIX = "EVENT_BUS_"

#: ``EVENT_BUS_*`` settings of other libraries: never reported as misspellings (check
#: ``W004``). openedx-events chooses its bus with these two; it also reads
#: ``EVENT_BUS_PRODUCER_CONFIG`` and ``EVENT_BUS_TOPIC_PREFIX``, which are events_celery's too.
OTHER_LIBRARIES_SETTINGS = ("EVENT_BUS_PRODUCER", "EVENT_BUS_CONSUMER")
#: Prefixes of the settings of openedx-events' other buses, edx-event-bus-kafka and
#: edx-event-bus-redis: never reported as misspellings either.
OTHER_LIBRARIES_PREFIXES = ("EVENT_BUS_KAFKA_", "EVENT_BUS_REDIS_")

#: Reads one setting's value: returns it parsed (the default when it is wrong), adding what is
#: wrong to the problems.
Reader = Callable[["Setting", Any, Problems], Any]


@attrs.frozen
class Setting:
    """One Django setting of events_celery.

    Attributes:
        name: the Django setting, ``EVENT_BUS_...``; lowercased without ``EVENT_BUS_`` it is
            the attribute of :class:`~events_celery.conf.BusSettings` that holds its value.
        type_doc: its type, as the reference shows it.
        default: the value used when it is not set (or is wrong).
        doc: one line: what it sets.
        check_ids: ids of the ``manage.py check`` problems about it (``"E020"`` ...).
        read: turns the configured value into the parsed one, adding problems.
        default_doc: the default as the reference says it, when it is not ``default``.
    """

    name: str
    type_doc: str
    default: Any
    doc: str
    check_ids: tuple[str, ...]
    read: Reader
    default_doc: str | None = None

    @property
    def attr(self) -> str:
        """The attribute of :class:`~events_celery.conf.BusSettings` holding the value."""
        return self.name.removeprefix(PREFIX).lower()

    def value(self, problems: Problems) -> Any:
        """Read this setting from Django settings and parse it."""
        return self.read(self, getattr(django_settings, self.name, self.default), problems)


def _db_alias(setting: Setting, value: Any, problems: Problems) -> str:
    if isinstance(value, str) and value:
        return value
    problems.add("E012", f"{setting.name} is {value!r}", "name a database of DATABASES")
    return str(setting.default)


def _service_name(setting: Setting, value: Any, problems: Problems) -> str | None:
    if not value:
        problems.add(
            "E001",
            f"{setting.name} is not set",
            f"name this service, e.g. {setting.name} = 'orders'",
        )
    elif not isinstance(value, str) or not NAME_PATTERN.match(value):
        problems.add(
            "E002",
            f"{setting.name} {value!r} is not a valid service name",
            "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
        )
    return value if isinstance(value, str) else None


def _topic_prefix(setting: Setting, value: Any, problems: Problems) -> str:
    if isinstance(value, str) and (not value or TOPIC_PATTERN.match(value)):
        return value
    problems.add(
        "E003",
        f"{setting.name} {value!r} is not a valid exchange name prefix",
        "use letters, digits, '.', '-', '_', e.g. 'prod.'",
    )
    return ""


def celery_broker_url() -> str | None:
    """Celery's broker URL: the ``CELERY_BROKER_URL`` environment variable, else setting."""
    # Celery lets the environment variable override settings; follow it too, so the publisher
    # and the workers of one service always talk to the same broker.
    url = os.environ.get("CELERY_BROKER_URL") or getattr(django_settings, "CELERY_BROKER_URL", None)
    if isinstance(url, (list, tuple)):  # Celery also takes a list of failover URLs
        return ";".join(str(u) for u in url)
    return str(url) if url else None


def _broker_url(setting: Setting, value: Any, problems: Problems) -> str | None:
    if isinstance(value, (list, tuple)) and all(isinstance(u, str) for u in value):
        value = ";".join(value)  # a cluster's nodes: kombu's failover URL string
    if value is not None and not isinstance(value, str):
        problems.add(
            "E004",
            # The type only: the value may hold a password.
            f"{setting.name} is neither a URL nor a list of URLs (got {type(value).__name__})",
            "use an amqp:// URL, or a list of them (or one string separated by ';') for the "
            "nodes of a cluster",
        )
        value = None
    return value or celery_broker_url()


#: Keys of a TLS options dict (``EVENT_BUS_BROKER_USE_SSL``, Celery's ``broker_use_ssl``) that
#: py-amqp passes to :mod:`ssl`.
TLS_KEYS = (
    "ca_certs",
    "certfile",
    "keyfile",
    "cert_reqs",
    "server_hostname",
    "ciphers",
    "ssl_version",
    "tls_minimum_version",
    "tls_maximum_version",
)
#: The files a TLS options dict names.
TLS_FILES = ("ca_certs", "certfile", "keyfile")
#: SASL mechanisms py-amqp can log in with.
LOGIN_METHODS = ("AMQPLAIN", "PLAIN", "EXTERNAL")


def tls_problems(where: str, value: Any) -> list[tuple[str, str]]:
    """What is wrong with TLS options ``value`` (from setting ``where``): (message, hint) pairs."""
    if value is None or isinstance(value, bool):
        return []
    if not isinstance(value, dict):
        return [
            (
                f"{where} is neither a bool nor a dict (got {type(value).__name__})",
                "use True (verify the broker with the system's CAs) or a dict of ssl options, "
                "e.g. {'ca_certs': '/etc/ssl/broker-ca.pem', 'certfile': ..., 'keyfile': ...}",
            )
        ]
    found = []
    unknown = sorted(str(key) for key in value if key not in TLS_KEYS)
    if unknown:
        found.append((f"{where} has unknown key(s) {unknown}", f"the keys are {list(TLS_KEYS)}"))
    for key in TLS_FILES:
        path = value.get(key)
        if path is not None and not (isinstance(path, str) and os.access(path, os.R_OK)):
            found.append(
                (
                    f"{where}[{key!r}] {path!r} is not a readable file",
                    "name a PEM file this process can read",
                )
            )
    if "cert_reqs" in value and not isinstance(value["cert_reqs"], ssl.VerifyMode):
        found.append(
            (
                f"{where}['cert_reqs'] is {value['cert_reqs']!r}",
                "use ssl.CERT_REQUIRED (or leave it out: the broker's certificate is verified)",
            )
        )
    elif value.get("cert_reqs") == ssl.CERT_NONE:
        found.append(
            (
                f"{where}['cert_reqs'] is ssl.CERT_NONE: the broker's certificate is not "
                "verified, so anyone on the network path can pose as the broker",
                "remove cert_reqs (the default verifies it) and set ca_certs to the CA that "
                "signed the broker's certificate",
            )
        )
    if "keyfile" in value and "certfile" not in value:
        found.append(
            (
                f"{where} names a keyfile without a certfile",
                "set certfile to the client certificate of that key",
            )
        )
    return found


def _broker_use_ssl(setting: Setting, value: Any, problems: Problems) -> Any:
    found = tls_problems(setting.name, value)
    for message, hint in found:
        problems.add("E049", message, hint)
    return None if found else value


def _login_method(setting: Setting, value: Any, problems: Problems) -> str | None:
    if value is None or value in LOGIN_METHODS:
        return str(value) if value is not None else None
    problems.add(
        "E050",
        f"{setting.name} is {value!r}",
        f"use one of {list(LOGIN_METHODS)} ('EXTERNAL' logs in with the client certificate)",
    )
    return None


def _choice(*choices: str, hint: str, renamed: dict[str, str] | None = None) -> Reader:
    def read(setting: Setting, value: Any, problems: Problems) -> Any:
        if value in choices:
            return value
        new = (renamed or {}).get(value) if isinstance(value, str) else None
        problems.add(
            setting.check_ids[0],
            f"{setting.name} is {value!r}",
            (f"{value!r} is now called {new!r}; " if new else "") + hint,
        )
        return setting.default

    return read


def _seconds(setting: Setting, value: Any, problems: Problems) -> float:
    return read_number(
        problems, setting.name, value, setting.default, minimum=0.001, check_id="E020"
    )


def _count(minimum: int = 1) -> Reader:
    def read(setting: Setting, value: Any, problems: Problems) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            problems.add(
                "E020",
                f"{setting.name} is {value!r}",
                f"use a whole number >= {minimum}, e.g. {setting.default}",
            )
            return int(setting.default)
        return value

    return read


def _publish_retry(setting: Setting, value: Any, problems: Problems) -> PublishRetryPolicy:
    return parse_publish_retry_policy(problems, value, setting=setting.name)


def _retry(setting: Setting, value: Any, problems: Problems) -> RetryPolicy:
    return parse_retry_policy(problems, value, setting=setting.name)


SETTINGS: tuple[Setting, ...] = (
    # Service and routing
    Setting(
        "EVENT_BUS_SERVICE_NAME",
        "``str``",
        None,
        "Name of this service: the source of its events and the first part of its queue names.",
        ("E001", "E002"),
        _service_name,
        default_doc="none; required",
    ),
    Setting(
        "EVENT_BUS_PRODUCER_CONFIG",
        "``dict``",
        {},
        "Which events are published, and to which topics.",
        ("E005", "E006", "E030", "E031"),
        lambda setting, value, problems: parse_routes(problems, value),
    ),
    Setting(
        "EVENT_BUS_CONSUMER_CONFIG",
        "``dict``",
        {},
        "Topics this service consumes, and which event types of each.",
        ("E007", "E032", "E033", "E034", "E035"),
        lambda setting, value, problems: parse_subscriptions(problems, value),
    ),
    Setting(
        "EVENT_BUS_TOPIC_PREFIX",
        "``str``",
        "",
        "Prefix of every topic exchange name (not of queue names).",
        ("E003", "W005"),
        _topic_prefix,
    ),
    # Broker and topology
    Setting(
        "EVENT_BUS_BROKER_URL",
        "``str`` or a list of ``str``",
        None,
        "AMQP URL of the broker that carries events.",
        ("E004", "E041", "W001", "W007"),
        _broker_url,
        default_doc="the ``CELERY_BROKER_URL`` environment variable, else the "
        "``CELERY_BROKER_URL`` setting, else the Celery app's ``broker_url``",
    ),
    Setting(
        "EVENT_BUS_BROKER_USE_SSL",
        "``bool`` or ``dict``",
        None,
        "TLS options of the bus's broker connections (kombu's ``ssl``).",
        ("E049", "W007"),
        _broker_use_ssl,
        default_doc="Celery's ``broker_use_ssl`` when the bus uses Celery's broker URL, else "
        "``True`` for an ``amqps://`` URL",
    ),
    Setting(
        "EVENT_BUS_BROKER_LOGIN_METHOD",
        '``"AMQPLAIN"``, ``"PLAIN"`` or ``"EXTERNAL"``',
        None,
        "How the bus's broker connections log in (``EXTERNAL``: by the client certificate).",
        ("E050",),
        _login_method,
        default_doc="Celery's ``broker_login_method`` when the bus uses Celery's broker URL, "
        "else kombu's (``AMQPLAIN``)",
    ),
    Setting(
        "EVENT_BUS_QUEUE_TYPE",
        '``"classic"`` or ``"quorum"``',
        "classic",
        "Type of the durable queues this service declares.",
        ("E010",),
        _choice(
            "classic",
            "quorum",
            hint="use 'classic' or 'quorum' (quorum for a multi-node RabbitMQ cluster)",
        ),
    ),
    Setting(
        "EVENT_BUS_UNROUTED_MAX_LENGTH",
        "``int``",
        10000,
        "How many events, per topic, are parked while no service subscribes to the topic.",
        ("E020",),
        _count(),
    ),
    # Publishing
    Setting(
        "EVENT_BUS_PUBLISH_MODE",
        '``"outbox"`` or ``"direct"``',
        "outbox",
        "How a routed event is handed to the broker: through the outbox, or at send time.",
        ("E011",),
        _choice(
            "outbox",
            "direct",
            hint="use 'outbox' (written in the transaction, published after the commit) or "
            "'direct' (a confirmed publish at send time, for services without a database)",
            renamed={"on_commit": "direct", "immediate": "direct"},
        ),
    ),
    Setting(
        "EVENT_BUS_DB_ALIAS",
        "``str``",
        "default",
        "Database of the outbox table, whose transactions publishing follows.",
        ("E012", "W003"),
        _db_alias,
    ),
    Setting(
        "EVENT_BUS_PUBLISH_TIMEOUT",
        "``float``, seconds",
        5.0,
        "Longest time a publish may take.",
        ("E020", "E023"),
        _seconds,
    ),
    Setting(
        "EVENT_BUS_PUBLISH_RETRY_POLICY",
        "``dict``",
        attrs.asdict(PublishRetryPolicy()),
        "Retries of a publish the broker did not confirm.",
        ("E021", "W006"),
        _publish_retry,
    ),
    Setting(
        "EVENT_BUS_PUBLISH_WINDOW",
        "``int``",
        1024,
        "How many publishes may wait for the broker's confirm at once.",
        ("E020",),
        _count(),
    ),
    Setting(
        "EVENT_BUS_MAX_MESSAGE_SIZE",
        "``int``, bytes",
        1 << 20,
        "Largest Avro body that is published or consumed.",
        ("E020",),
        _count(),
        default_doc="``1048576`` (1 MiB)",
    ),
    # Outbox
    Setting(
        "EVENT_BUS_OUTBOX_BATCH_SIZE",
        "``int``",
        2000,
        "How many outbox rows a relay publishes together.",
        ("E020",),
        _count(),
    ),
    Setting(
        "EVENT_BUS_OUTBOX_LEASE",
        "``float``, seconds",
        30.0,
        "How long an outbox row belongs to its writer, or to the relay that claimed it.",
        ("E020", "E023"),
        _seconds,
    ),
    Setting(
        "EVENT_BUS_OUTBOX_SWEEP_INTERVAL",
        "``float``, seconds",
        2.0,
        "Pause between two passes of a relay's sweeper.",
        ("E020",),
        _seconds,
    ),
    Setting(
        "EVENT_BUS_OUTBOX_WARN_AFTER",
        "``float``, seconds",
        60.0,
        "Age past which an outbox row that still waits is named in a warning.",
        ("E020",),
        _seconds,
    ),
    # Consuming
    Setting(
        "EVENT_BUS_RETRY_POLICY",
        "``dict``",
        attrs.asdict(RetryPolicy()),
        "Retries of each receiver in a consuming service.",
        ("E022",),
        _retry,
    ),
    Setting(
        "EVENT_BUS_CONSUMER_BATCH_SIZE",
        "``int``",
        32,
        "How many events a worker hands to one receiver task.",
        ("E020",),
        _count(),
    ),
    Setting(
        "EVENT_BUS_CONSUMER_FLUSH_INTERVAL",
        "``float``, seconds",
        0.005,
        "How long a worker waits to fill a batch before it hands off a partial one.",
        ("E020",),
        _seconds,
    ),
    # Receivers
    Setting(
        "EVENT_BUS_MAX_REDELIVERIES",
        "``int``",
        3,
        "How many times an event may come back unfinished before it is dead-lettered.",
        ("E020",),
        _count(minimum=0),
    ),
    Setting(
        "EVENT_BUS_STRICT_RECEIVERS",
        "``bool``",
        False,
        "Whether a receiver's error propagates to the sender.",
        (),
        lambda setting, value, problems: bool(value),
    ),
    # Authenticity
    Setting(
        "EVENT_BUS_TRUSTED_PUBLISHERS",
        "``dict``",
        {},
        "The broker user allowed to publish each event type, or each source.",
        ("E046",),
        lambda setting, value, problems: parse_trusted_publishers(
            problems, value, setting=setting.name
        ),
    ),
    Setting(
        "EVENT_BUS_SIGNING_KEYS",
        "``list`` of ``dict``",
        (),
        "This service's Ed25519 private key (two during a rotation): its events are signed.",
        ("E047",),
        lambda setting, value, problems: parse_signing_keys(problems, value, setting=setting.name),
        default_doc="``[]`` (events are not signed)",
    ),
    Setting(
        "EVENT_BUS_TRUSTED_KEYS",
        "``dict``",
        {},
        "The publishers' Ed25519 public keys, each with the sources and event types it signs.",
        ("E048",),
        lambda setting, value, problems: parse_trusted_keys(problems, value, setting=setting.name),
    ),
    Setting(
        "EVENT_BUS_REQUIRE_SIGNATURES",
        "``bool``",
        False,
        "Whether every consumed event must carry a valid signature of a trusted key.",
        ("E048",),
        lambda setting, value, problems: bool(value),
    ),
    # Schemas
    Setting(
        "EVENT_BUS_SCHEMA_DIR",
        "``str`` (a directory path)",
        None,
        "Directory of the golden Avro schemas.",
        (),
        lambda setting, value, problems: str(value) if value else None,
        default_doc="``avro_schemas/`` inside the app that defines each event",
    ),
)
