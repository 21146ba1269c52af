"""The parsed settings, :class:`BusSettings`, and the parser that reads every declaration."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from django.conf import settings as django_settings
from django.db import connections

from events_celery.authenticity import Authenticity, SigningKey, TrustedKey
from events_celery.conf.declarations import (
    NAME_PATTERN,
    OTHER_LIBRARIES_PREFIXES,
    OTHER_LIBRARIES_SETTINGS,
    PREFIX,
    SETTINGS,
    celery_broker_url,
)
from events_celery.conf.policies import PublishRetryPolicy, RetryPolicy
from events_celery.conf.problems import Problem, Problems
from events_celery.conf.routing import Route, Subscription
from events_celery.exceptions import ConfigurationError

#: Celery settings whose values name serializers a worker accepts or uses.
SERIALIZER_SETTINGS = (
    "CELERY_ACCEPT_CONTENT",
    "CELERY_TASK_SERIALIZER",
    "CELERY_RESULT_SERIALIZER",
    "CELERY_RESULT_ACCEPT_CONTENT",
)

#: How alike (:class:`difflib.SequenceMatcher`'s ratio, of the names without ``EVENT_BUS_``) an
#: unknown ``EVENT_BUS_*`` setting must be to a declared one to be taken for its misspelling.
MISSPELLING_CUTOFF = 0.8


def _enabled_routes(settings: BusSettings) -> Mapping[str, tuple[Route, ...]]:
    return {
        event_type: tuple(route for route in routes if route.enabled and route.valid)
        for event_type, routes in settings.producer_config.items()
    }


def _authenticity(settings: BusSettings) -> Authenticity | None:
    checks = Authenticity(
        publishers=settings.trusted_publishers,
        trusted_keys=settings.trusted_keys,
        require_signatures=settings.require_signatures,
    )
    return checks if checks.active else None


def _enabled_subscriptions(settings: BusSettings) -> tuple[Subscription, ...]:
    return tuple(s for s in settings.consumer_config if s.valid)


@attrs.frozen(eq=False, kw_only=True)  # compared and hashed by identity: caches key on it
class BusSettings:
    """The parsed settings, plus every problem found while parsing them.

    Each ``EVENT_BUS_<NAME>`` setting is the attribute ``<name>`` (see
    :data:`~events_celery.conf.SETTINGS`); a wrong value is replaced by its
    default, and the problem is in ``problems``.
    """

    service_name: str | None
    #: Every route of ``EVENT_BUS_PRODUCER_CONFIG``, disabled ones and those with a problem too.
    producer_config: Mapping[str, tuple[Route, ...]]
    #: Every topic of ``EVENT_BUS_CONSUMER_CONFIG``, those with a problem too.
    consumer_config: tuple[Subscription, ...]
    topic_prefix: str
    broker_url: str | None
    #: ``EVENT_BUS_BROKER_USE_SSL`` as set (``None`` when unset); see :meth:`broker_ssl`.
    broker_use_ssl: bool | dict[str, Any] | None
    #: ``EVENT_BUS_BROKER_LOGIN_METHOD`` as set (``None`` when unset); see :meth:`broker_login`.
    broker_login_method: str | None
    queue_type: Literal["classic", "quorum"]
    unrouted_max_length: int
    publish_mode: Literal["outbox", "direct"]
    db_alias: str
    publish_timeout: float
    publish_retry_policy: PublishRetryPolicy
    publish_window: int
    max_message_size: int
    outbox_batch_size: int
    outbox_lease: float
    outbox_sweep_interval: float
    outbox_warn_after: float
    retry_policy: RetryPolicy
    consumer_batch_size: int
    consumer_flush_interval: float
    max_redeliveries: int
    strict_receivers: bool
    trusted_publishers: Mapping[str, frozenset[str]]
    signing_keys: tuple[SigningKey, ...]
    trusted_keys: Mapping[str, TrustedKey]
    require_signatures: bool
    schema_dir: str | None

    # Celery's and Django's own settings that the checks compare with the ones above.
    #: Celery's broker URL (environment variable, else setting), ``None`` when unset.
    celery_broker_url: str | None
    #: Celery's ``broker_use_ssl`` (setting ``CELERY_BROKER_USE_SSL``, else the app's).
    celery_broker_use_ssl: Any
    #: Celery's ``broker_login_method`` (setting ``CELERY_BROKER_LOGIN_METHOD``, else the app's).
    celery_broker_login_method: str | None
    #: Celery's default task queue.
    celery_task_default_queue: str
    #: Each Celery serializer setting that is set, with the serializers it names.
    celery_serializers: Mapping[str, tuple[str, ...]]
    #: ``ENGINE`` of the database ``db_alias``; ``None`` when it is not in ``DATABASES``.
    db_engine: str | None
    #: ``OPTIONS['transaction_mode']`` of that database (``""`` when unset).
    db_transaction_mode: str

    #: Each ``EVENT_BUS_*`` Django setting that is neither declared nor another library's but
    #: whose name is close to a declared one, with that declared name. events_celery ignores it.
    misspelled_settings: Mapping[str, str]

    problems: tuple[Problem, ...]

    #: The enabled and valid routes of each event type named in ``EVENT_BUS_PRODUCER_CONFIG``.
    routes: Mapping[str, tuple[Route, ...]] = attrs.field(
        init=False, default=attrs.Factory(_enabled_routes, takes_self=True)
    )
    #: The topics consumed: the valid entries of ``consumer_config``.
    subscriptions: tuple[Subscription, ...] = attrs.field(
        init=False, default=attrs.Factory(_enabled_subscriptions, takes_self=True)
    )
    #: What a consumer checks of an event's publisher (``EVENT_BUS_TRUSTED_PUBLISHERS``,
    #: ``EVENT_BUS_REQUIRE_SIGNATURES``); ``None`` when nothing.
    authenticity: Authenticity | None = attrs.field(
        init=False, default=attrs.Factory(_authenticity, takes_self=True)
    )

    def uses_celery_broker(self) -> bool:
        """Whether the bus uses Celery's broker URL (``EVENT_BUS_BROKER_URL`` unset or the same)."""
        return self.celery_broker_url is None or self.broker_url == self.celery_broker_url

    def broker_ssl_source(self) -> str:
        """The setting the bus's TLS options come from, as messages name it."""
        if self.broker_use_ssl is None and self.uses_celery_broker():
            return "CELERY_BROKER_USE_SSL"
        return "EVENT_BUS_BROKER_USE_SSL"

    def broker_ssl(self) -> bool | dict[str, Any]:
        """The TLS options of the bus's connections: kombu's ``ssl`` (a new dict each call).

        ``EVENT_BUS_BROKER_USE_SSL`` when set, else Celery's ``broker_use_ssl`` when the bus
        uses Celery's broker URL; an ``amqps://`` URL without options gets ``{}`` (TLS,
        verified against the system's CAs). ``False`` means no TLS.
        """
        configured: Any = self.broker_use_ssl
        if configured is None and self.uses_celery_broker():
            configured = self.celery_broker_use_ssl
        if isinstance(configured, dict):
            return dict(configured)
        if configured or any(
            url.strip().startswith("amqps://") for url in (self.broker_url or "").split(";")
        ):
            return {}
        return False

    def broker_login(self) -> str | None:
        """How the bus's connections log in: ``EVENT_BUS_BROKER_LOGIN_METHOD``, else Celery's.

        Celery's ``broker_login_method`` counts only when the bus uses Celery's broker URL;
        ``None`` leaves it to kombu (``AMQPLAIN``).
        """
        if self.broker_login_method is not None:
            return self.broker_login_method
        if self.uses_celery_broker() and self.celery_broker_login_method:
            return str(self.celery_broker_login_method)
        return None

    def raise_for_problems(self) -> None:
        """Raise :class:`ConfigurationError` listing every problem, if there is any."""
        errors = [p for p in self.problems if p.is_error]
        if errors:
            lines = "\n".join(f"- {p.id}: {p.message} ({p.hint})" for p in errors)
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


def parse() -> BusSettings:
    """Read every declared setting, and the Celery and database settings the checks use.

    Never raises: what is wrong is in the result's ``problems``.
    """
    problems = Problems()
    values: dict[str, Any] = {setting.attr: setting.value(problems) for setting in SETTINGS}
    if values["outbox_lease"] < 4 * values["publish_timeout"]:
        problems.add(
            "E023",
            f"EVENT_BUS_OUTBOX_LEASE ({values['outbox_lease']:g}s) is less than four times "
            f"EVENT_BUS_PUBLISH_TIMEOUT ({values['publish_timeout']:g}s)",
            "a lease must outlast one publish, or a sweeper takes rows still being "
            "published: make the lease several times the timeout",
        )
    if values["require_signatures"] and not values["trusted_keys"]:
        problems.add(
            "E048",
            "EVENT_BUS_REQUIRE_SIGNATURES is on but EVENT_BUS_TRUSTED_KEYS lists no usable key",
            "list the publishers' public keys in EVENT_BUS_TRUSTED_KEYS: without them every "
            "event would be dead-lettered",
        )
    database = connections.settings.get(values["db_alias"])
    return BusSettings(
        **values,
        celery_broker_url=celery_broker_url(),
        celery_broker_use_ssl=_celery_setting("broker_use_ssl"),
        celery_broker_login_method=_celery_setting("broker_login_method"),
        celery_task_default_queue=_celery_task_default_queue(),
        celery_serializers=_celery_serializers(),
        db_engine=None if database is None else str(database.get("ENGINE", "")),
        db_transaction_mode=str((database or {}).get("OPTIONS", {}).get("transaction_mode", "")),
        misspelled_settings=_misspelled_settings(),
        problems=tuple(problems.found),
    )


def _celery_setting(name: str) -> Any:
    # The Django setting, where the Celery app reads its configuration (namespace CELERY), else
    # what the current app says.
    django_name = f"CELERY_{name.upper()}"
    if hasattr(django_settings, django_name):
        return getattr(django_settings, django_name)
    from celery import current_app

    return current_app.conf.get(name)


def _celery_task_default_queue() -> str:
    # The Django setting, where the Celery app reads its configuration (namespace CELERY), else
    # what the current app says.
    configured = getattr(django_settings, "CELERY_TASK_DEFAULT_QUEUE", None)
    if configured:
        return str(configured)
    from celery import current_app

    return str(current_app.conf.task_default_queue)


def _celery_serializers() -> dict[str, tuple[str, ...]]:
    found = {}
    for name in SERIALIZER_SETTINGS:
        value = getattr(django_settings, name, None)
        values = [value] if isinstance(value, str) else list(value or ())
        found[name] = tuple(v for v in values if isinstance(v, str))
    return {name: values for name, values in found.items() if values}


def _misspelled_settings() -> dict[str, str]:
    # Compared without the prefix every name shares, which would make any two names look alike.
    declared = {setting.name.removeprefix(PREFIX): setting.name for setting in SETTINGS}
    found = {}
    for name in dir(django_settings):
        if (
            not name.startswith(PREFIX)
            or not name.isupper()  # Django reads only upper-case settings
            or name in OTHER_LIBRARIES_SETTINGS
            or name.startswith(OTHER_LIBRARIES_PREFIXES)
            or name.removeprefix(PREFIX) in declared
        ):
            continue
        close = difflib.get_close_matches(
            name.removeprefix(PREFIX), declared, n=1, cutoff=MISSPELLING_CUTOFF
        )
        if close:
            found[name] = declared[close[0]]
    return found
