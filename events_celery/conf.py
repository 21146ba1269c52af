"""Settings of events_celery, read from Django settings with documented defaults.

Every setting is read here and nowhere else. :func:`bus_settings` returns them parsed and
cached (the cache is cleared when Django's ``setting_changed`` fires, so ``override_settings``
works in tests). Parsing never raises: problems are collected, and ``manage.py check`` reports
all of them at once (see :mod:`events_celery.checks`); code that cannot work with broken
settings calls :meth:`BusSettings.raise_for_problems`.

Settings (all optional unless noted):

``EVENT_BUS_SERVICE_NAME``
    Name of this service (required). It is the CloudEvents ``source`` of events sent here and
    the first part of this service's queue names. Lowercase letters, digits, ``-``, ``_``.
``EVENT_BUS_PRODUCER_CONFIG``
    Routing of events to topics, Open edX shape:
    ``{event_type: {topic: {"event_key_field": "a.b", "enabled": True}}}``. Default ``{}``.
``EVENT_BUS_CONSUMER_CONFIG``
    Topics this service consumes: ``{topic: {"event_types": [event_type, ...]}}``; leave out
    ``event_types`` (or set it to ``None``) to consume every event type of the topic.
    Default ``{}``.
``EVENT_BUS_TOPIC_PREFIX``
    Prefix of every topic exchange name (``<prefix><topic>``). Default ``""``.
``EVENT_BUS_BROKER_URL``
    AMQP URL of the broker. Default: the ``CELERY_BROKER_URL`` environment variable, else the
    ``CELERY_BROKER_URL`` setting, else the current Celery app's ``broker_url``: the broker
    Celery itself uses.
``EVENT_BUS_QUEUE_TYPE``
    ``"classic"`` or ``"quorum"`` (use quorum on a multi-node RabbitMQ cluster). Default
    ``"classic"``.
``EVENT_BUS_PUBLISH_MODE``
    ``"outbox"`` (default): ``send_event`` writes the encoded message to the outbox table in
    the caller's database transaction; it is published right after the commit, by a
    background thread of the same process, and nothing is published on a rollback. It never
    waits for the broker. ``"direct"``: a confirmed publish at send time (after the commit
    inside a transaction), for services without a database; it blocks for at most
    ``EVENT_BUS_PUBLISH_TIMEOUT`` and raises :class:`~events_celery.PublishError`.
``EVENT_BUS_DB_ALIAS``
    Database of the outbox table, and whose transactions publishing follows. Default
    ``"default"``.
``EVENT_BUS_PUBLISH_TIMEOUT``
    Seconds a publish may take: in ``"direct"`` mode, the most ``send_event`` blocks on the
    broker in all (connecting, retries and confirms included); for the outbox, how long one
    batch waits for its confirms (plus 2 ms a row, and while the broker blocks publishers up
    to ten minutes more, the rows' leases renewed meanwhile). Default ``5.0``.
``EVENT_BUS_PUBLISH_RETRY_POLICY``
    Pauses between publish attempts: ``{"max_retries": 3, "interval_start": 0.0,
    "interval_step": 0.5, "interval_max": 2.0}``. ``"direct"`` mode tries at most
    ``max_retries + 1`` times within ``EVENT_BUS_PUBLISH_TIMEOUT``; outbox relays wait
    ``min(interval_start + interval_step * n, interval_max)`` (with jitter) after the n-th
    failure in a row and never give up.
``EVENT_BUS_PUBLISH_WINDOW``
    How many publishes may await the broker's confirm at once. Default ``1024``.
``EVENT_BUS_OUTBOX_BATCH_SIZE``
    Outbox rows claimed and published together. Default ``2000``.
``EVENT_BUS_OUTBOX_LEASE``
    Seconds an outbox row belongs to the process that wrote it (or the relay that claimed it)
    before a sweeper may take it. Default ``30.0``.
``EVENT_BUS_OUTBOX_SWEEP_INTERVAL``
    Seconds between the passes of the sweeper that runs in each Celery worker of a publishing
    service. Default ``2.0``.
``EVENT_BUS_OUTBOX_WARN_AFTER``
    Seconds after which a waiting outbox row is named in a WARNING. Default ``60.0``.
``EVENT_BUS_RETRY_POLICY``
    Retries of each receiver in consuming services:
    ``{"max_attempts": 5, "backoff": 2.0, "backoff_max": 300.0, "jitter": True}``. Attempt
    ``n`` (n >= 2) waits ``min(backoff * 2 ** (n - 2), backoff_max)`` seconds, scaled by a random
    factor in [0.5, 1] when ``jitter`` is on.
``EVENT_BUS_MAX_MESSAGE_SIZE``
    Largest Avro body, in bytes, that is published or consumed. Default ``1048576``.
``EVENT_BUS_UNROUTED_MAX_LENGTH``
    How many events, per topic, are parked when no service subscribes yet. Default ``10000``.
``EVENT_BUS_CONSUMER_BATCH_SIZE``
    How many events a worker hands to one receiver task. Default ``32``.
``EVENT_BUS_CONSUMER_FLUSH_INTERVAL``
    Seconds a worker waits to fill a batch before handing off a partial one. An event that
    arrives after a quiet spell at least this long is handed off at once, so it adds no
    latency at light load; under load batches fill before it expires. Default ``0.005``.
``EVENT_BUS_MAX_REDELIVERIES``
    How many times an event may come back unfinished to a worker (its worker died while its
    receivers ran) before it is dead-lettered instead of run again. Default ``3``.
``EVENT_BUS_STRICT_RECEIVERS``
    ``False`` (default): a receiver error is logged with its traceback and returned by
    ``send_event`` like ``Signal.send_robust``; ``True``: the first receiver error propagates.
``EVENT_BUS_SCHEMA_DIR``
    Directory of golden ``.avsc`` schemas. Default: ``avro_schemas/`` inside the app that
    defines each event.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from events_celery.exceptions import ConfigurationError
from events_celery.routing import (
    TOPIC_PATTERN,
    Route,
    Subscription,
    parse_routes,
    parse_subscriptions,
)

__all__ = [
    "BusSettings",
    "Problem",
    "PublishRetryPolicy",
    "RetryPolicy",
    "Route",
    "Subscription",
    "bus_settings",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
QUEUE_TYPES = ("classic", "quorum")
PUBLISH_MODES = ("outbox", "direct")
#: Earlier names of the publish modes, for the check's hint.
RENAMED_MODES = {"on_commit": "direct", "immediate": "direct"}


@attrs.frozen
class Problem:
    """One misconfiguration: a check id suffix (``"E001"``), what is wrong and how to fix it."""

    id: str
    message: str
    hint: str


@attrs.frozen
class PublishRetryPolicy:
    """Pauses between publish attempts (see ``EVENT_BUS_PUBLISH_RETRY_POLICY``)."""

    max_retries: int = 3
    interval_start: float = 0.0
    interval_step: float = 0.5
    interval_max: float = 2.0


@attrs.frozen
class RetryPolicy:
    """Retries of each receiver (see ``EVENT_BUS_RETRY_POLICY``)."""

    max_attempts: int = 5
    backoff: float = 2.0
    backoff_max: float = 300.0
    jitter: bool = True


@attrs.frozen(eq=False)  # compared and hashed by identity: caches key on the instance
class BusSettings:
    """The parsed settings, plus every problem found while parsing them."""

    service_name: str | None
    topic_prefix: str
    broker_url: str | None
    routes: Mapping[str, tuple[Route, ...]]
    #: Routes not in ``routes`` (disabled or invalid) that name an ``event_key_field``.
    unrouted_keys: tuple[Route, ...]
    subscriptions: tuple[Subscription, ...]
    queue_type: Literal["classic", "quorum"]
    publish_mode: Literal["outbox", "direct"]
    db_alias: str
    publish_timeout: float
    publish_retry_policy: PublishRetryPolicy
    publish_window: int
    outbox_batch_size: int
    outbox_lease: float
    outbox_sweep_interval: float
    outbox_warn_after: float
    retry_policy: RetryPolicy
    max_message_size: int
    unrouted_max_length: int
    consumer_batch_size: int
    consumer_flush_interval: float
    max_redeliveries: int
    strict_receivers: bool
    schema_dir: str | None
    problems: tuple[Problem, ...]

    def raise_for_problems(self) -> None:
        """Raise :class:`ConfigurationError` listing every problem, if there is any."""
        if self.problems:
            lines = "\n".join(f"- {p.id}: {p.message} ({p.hint})" for p in self.problems)
            raise ConfigurationError(f"events_celery settings are invalid:\n{lines}")

    def subscribes_to(self, event_type: str, topic: str | None = None) -> bool:
        """Whether this service consumes ``event_type`` (on ``topic``, when given)."""
        return any(
            (topic is None or s.topic == topic)
            and (s.event_types is None or event_type in s.event_types)
            for s in self.subscriptions
        )

    def require_service_name(self) -> str:
        """Return the service name, or raise :class:`ConfigurationError` saying how to set it."""
        if not self.service_name or not NAME_PATTERN.match(self.service_name):
            raise ConfigurationError(
                "EVENT_BUS_SERVICE_NAME is not set to a valid name; set it in Django settings, "
                "e.g. EVENT_BUS_SERVICE_NAME = 'orders' (lowercase letters, digits, '-', '_')"
            )
        return self.service_name


_cache: BusSettings | None = None


def bus_settings() -> BusSettings:
    """Return the parsed settings (cached until a setting changes)."""
    global _cache
    if _cache is None:
        _cache = _parse()
    return _cache


@receiver(setting_changed)
def _clear_cache(**kwargs: Any) -> None:
    global _cache
    _cache = None


def _get(name: str, default: Any) -> Any:
    return getattr(django_settings, name, default)


def _number(
    problems: list[Problem],
    name: str,
    value: Any,
    default: float,
    *,
    minimum: float,
    check_id: str = "E020",
) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        problems.append(
            Problem(check_id, f"{name} is {value!r}", f"use a number >= {minimum}, e.g. {default}")
        )
        return default
    return float(value)


def _seconds(problems: list[Problem], name: str, default: float) -> float:
    return _number(problems, name, _get(name, default), default, minimum=0.001)


def _count(problems: list[Problem], name: str, default: int, *, minimum: int = 1) -> int:
    value = _get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(
            Problem(
                "E020", f"{name} is {value!r}", f"use a whole number >= {minimum}, e.g. {default}"
            )
        )
        return default
    return value


def _parse() -> BusSettings:
    problems: list[Problem] = []

    service_name = _get("EVENT_BUS_SERVICE_NAME", None)
    if not service_name:
        problems.append(
            Problem(
                "E001",
                "EVENT_BUS_SERVICE_NAME is not set",
                "name this service, e.g. EVENT_BUS_SERVICE_NAME = 'orders'",
            )
        )
    elif not isinstance(service_name, str) or not NAME_PATTERN.match(service_name):
        problems.append(
            Problem(
                "E002",
                f"EVENT_BUS_SERVICE_NAME {service_name!r} is not a valid service name",
                "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            )
        )

    prefix = _get("EVENT_BUS_TOPIC_PREFIX", "")
    if not isinstance(prefix, str) or (prefix and not TOPIC_PATTERN.match(prefix)):
        problems.append(
            Problem(
                "E003",
                f"EVENT_BUS_TOPIC_PREFIX {prefix!r} is not a valid exchange name prefix",
                "use letters, digits, '.', '-', '_', e.g. 'prod.'",
            )
        )
        prefix = ""

    # Celery lets the CELERY_BROKER_URL environment variable override settings; follow it too,
    # so the publisher and the workers of one service always talk to the same broker.
    broker_url = (
        _get("EVENT_BUS_BROKER_URL", None)
        or os.environ.get("CELERY_BROKER_URL")
        or _get("CELERY_BROKER_URL", None)
    )
    if broker_url is not None and not isinstance(broker_url, str):
        problems.append(
            Problem("E004", "EVENT_BUS_BROKER_URL is not a string", "use an amqp:// URL")
        )
        broker_url = None

    def report(check_id: str, message: str, hint: str) -> None:
        problems.append(Problem(check_id, message, hint))

    unrouted_keys: list[Route] = []
    routes = parse_routes(report, _get("EVENT_BUS_PRODUCER_CONFIG", {}), unrouted_keys)
    subscriptions = parse_subscriptions(report, _get("EVENT_BUS_CONSUMER_CONFIG", {}))

    queue_type = _get("EVENT_BUS_QUEUE_TYPE", "classic")
    if queue_type not in QUEUE_TYPES:
        problems.append(
            Problem(
                "E010",
                f"EVENT_BUS_QUEUE_TYPE is {queue_type!r}",
                "use 'classic' or 'quorum' (quorum for a multi-node RabbitMQ cluster)",
            )
        )
        queue_type = "classic"

    publish_mode = _get("EVENT_BUS_PUBLISH_MODE", "outbox")
    if publish_mode not in PUBLISH_MODES:
        renamed = RENAMED_MODES.get(publish_mode) if isinstance(publish_mode, str) else None
        problems.append(
            Problem(
                "E011",
                f"EVENT_BUS_PUBLISH_MODE is {publish_mode!r}",
                (f"{publish_mode!r} is now called {renamed!r}; " if renamed else "")
                + "use 'outbox' (written in the transaction, published after the commit) or "
                "'direct' (a confirmed publish at send time, for services without a database)",
            )
        )
        publish_mode = "outbox"

    db_alias = _get("EVENT_BUS_DB_ALIAS", "default")
    timeout = _seconds(problems, "EVENT_BUS_PUBLISH_TIMEOUT", 5.0)
    publish_retry = _parse_publish_retry(problems, _get("EVENT_BUS_PUBLISH_RETRY_POLICY", {}))
    retry_policy = parse_retry_policy(problems, _get("EVENT_BUS_RETRY_POLICY", {}))
    max_size = _count(problems, "EVENT_BUS_MAX_MESSAGE_SIZE", 1 << 20)
    unrouted = _count(problems, "EVENT_BUS_UNROUTED_MAX_LENGTH", 10000)
    batch = _count(problems, "EVENT_BUS_CONSUMER_BATCH_SIZE", 32)
    flush = _seconds(problems, "EVENT_BUS_CONSUMER_FLUSH_INTERVAL", 0.005)
    window = _count(problems, "EVENT_BUS_PUBLISH_WINDOW", 1024)
    max_redeliveries = _count(problems, "EVENT_BUS_MAX_REDELIVERIES", 3, minimum=0)
    outbox_batch = _count(problems, "EVENT_BUS_OUTBOX_BATCH_SIZE", 2000)
    lease = _seconds(problems, "EVENT_BUS_OUTBOX_LEASE", 30.0)
    sweep = _seconds(problems, "EVENT_BUS_OUTBOX_SWEEP_INTERVAL", 2.0)
    warn_after = _seconds(problems, "EVENT_BUS_OUTBOX_WARN_AFTER", 60.0)
    if lease < 4 * timeout:
        problems.append(
            Problem(
                "E023",
                f"EVENT_BUS_OUTBOX_LEASE ({lease:g}s) is less than four times "
                f"EVENT_BUS_PUBLISH_TIMEOUT ({timeout:g}s)",
                "a lease must outlast one publish, or a sweeper takes rows still being "
                "published: make the lease several times the timeout",
            )
        )
    schema_dir = _get("EVENT_BUS_SCHEMA_DIR", None)

    return BusSettings(
        service_name=service_name if isinstance(service_name, str) else None,
        topic_prefix=prefix,
        broker_url=broker_url,
        routes=routes,
        unrouted_keys=tuple(unrouted_keys),
        subscriptions=subscriptions,
        queue_type=queue_type,
        publish_mode=publish_mode,
        db_alias=db_alias,
        publish_timeout=timeout,
        publish_retry_policy=publish_retry,
        publish_window=window,
        outbox_batch_size=outbox_batch,
        outbox_lease=lease,
        outbox_sweep_interval=sweep,
        outbox_warn_after=warn_after,
        retry_policy=retry_policy,
        max_message_size=max_size,
        unrouted_max_length=unrouted,
        consumer_batch_size=batch,
        consumer_flush_interval=flush,
        max_redeliveries=max_redeliveries,
        strict_receivers=bool(_get("EVENT_BUS_STRICT_RECEIVERS", False)),
        schema_dir=str(schema_dir) if schema_dir else None,
        problems=tuple(problems),
    )


def _parse_publish_retry(problems: list[Problem], config: Any) -> PublishRetryPolicy:
    default = PublishRetryPolicy()
    names = [f.name for f in attrs.fields(PublishRetryPolicy)]
    if not isinstance(config, Mapping):
        problems.append(
            Problem(
                "E021",
                f"EVENT_BUS_PUBLISH_RETRY_POLICY is {config!r}",
                f"use a dict with keys among {names}",
            )
        )
        return default
    unknown = sorted(map(str, set(config) - set(names)))
    if unknown:
        problems.append(
            Problem(
                "E021",
                f"EVENT_BUS_PUBLISH_RETRY_POLICY has unknown key(s) {unknown}",
                f"the keys are {names}",
            )
        )
    values: dict[str, float] = {}
    for name in names:
        fallback = getattr(default, name)
        values[name] = _number(
            problems,
            f"EVENT_BUS_PUBLISH_RETRY_POLICY[{name!r}]",
            config.get(name, fallback),
            fallback,
            minimum=0,
            check_id="E021",
        )
    return PublishRetryPolicy(
        max_retries=int(values["max_retries"]),
        interval_start=values["interval_start"],
        interval_step=values["interval_step"],
        interval_max=values["interval_max"],
    )


def parse_retry_policy(
    problems: list[Problem], config: Any, *, setting: str = "EVENT_BUS_RETRY_POLICY"
) -> RetryPolicy:
    """Parse a receiver retry policy (a dict), adding what is wrong with it to ``problems``.

    ``setting`` names the policy in the messages.
    """
    default = RetryPolicy()
    names = {f.name for f in attrs.fields(RetryPolicy)}
    if not isinstance(config, Mapping):
        problems.append(
            Problem(
                "E022",
                f"{setting} is {config!r}",
                f"use a dict with keys among {sorted(names)}",
            )
        )
        return default
    unknown = sorted(map(str, set(config) - names))
    if unknown:
        problems.append(
            Problem(
                "E022",
                f"{setting} has unknown key(s) {unknown}",
                f"the keys are {sorted(names)}",
            )
        )
    max_attempts = config.get("max_attempts", default.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        problems.append(
            Problem(
                "E022",
                f"{setting}['max_attempts'] is {max_attempts!r}",
                "use a whole number >= 1 (1 means no retry)",
            )
        )
        max_attempts = default.max_attempts
    backoff = _number(
        problems,
        f"{setting}['backoff']",
        config.get("backoff", default.backoff),
        default.backoff,
        minimum=0,
        check_id="E022",
    )
    backoff_max = _number(
        problems,
        f"{setting}['backoff_max']",
        config.get("backoff_max", default.backoff_max),
        default.backoff_max,
        minimum=0,
        check_id="E022",
    )
    if backoff_max < backoff:
        problems.append(
            Problem(
                "E022",
                f"{setting} backoff_max ({backoff_max}) is below backoff ({backoff})",
                "make backoff_max at least as large as backoff",
            )
        )
    jitter = config.get("jitter", default.jitter)
    if not isinstance(jitter, bool):
        problems.append(Problem("E022", f"{setting}['jitter'] is {jitter!r}", "use True/False"))
        jitter = default.jitter
    return RetryPolicy(max_attempts, backoff, backoff_max, jitter)
