"""The bus's health, as ``manage.py event_bus_health`` reports it to a container's probe.

Four checks, each of which can be skipped:

* ``broker``: the broker accepts a connection in time;
* ``topology``: the exchanges and queues of this service exist (passive declarations);
* ``outbox``: no outbox row has waited longer than a limit;
* ``dead-letters``: at most so many of this service's pending dead letters failed within a
  window, and none waits in the broker's dead-letter queue (written while the database was
  unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
from django.db import DatabaseError, connections
from django.utils import timezone
from kombu import Connection

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.connection import bus_connection, connect, drop
from events_celery.bus.broker.declaring import reply_code
from events_celery.bus.publish import outbox
from events_celery.conf import BusSettings
from events_celery.exceptions import BrokerTLSError
from events_celery.models import DeadLetter

#: The checks, in the order they run.
CHECKS = ("broker", "topology", "outbox", "dead-letters")

logger = logging.getLogger(__name__)


@attrs.frozen
class Result:
    """What one check found: whether it passed, and a short account of why."""

    check: str
    ok: bool
    detail: str


def check_health(
    settings: BusSettings,
    *,
    timeout: float = 5.0,
    max_outbox_age: float | None = None,
    window: float = 600.0,
    max_new_dead_letters: int = 0,
    skip: frozenset[str] = frozenset(),
) -> list[Result]:
    """Run the checks not in ``skip``, in order; a check that cannot run fails with the cause."""
    results: list[Result] = []
    if any(p.is_error for p in settings.problems):
        problems = ", ".join(p.id for p in settings.problems if p.is_error)
        return [Result("settings", False, f"invalid ({problems}); run manage.py check")]
    on_broker: int | None = None  # dead letters waiting in the broker's queue (None: unknown)
    if skip & {"broker", "topology", "dead-letters"} != {"broker", "topology", "dead-letters"}:
        connection = bus_connection(settings, confirm_publish=False)
        try:
            broker = _broker(connection, timeout)
            if "broker" not in skip:
                results.append(broker)
            if "topology" not in skip:
                results.append(
                    _topology(connection, settings)
                    if broker.ok
                    else Result("topology", False, "not checked: the broker is unreachable")
                )
            if broker.ok and "dead-letters" not in skip:
                on_broker = _waiting_on_broker(connection, settings)
        finally:
            drop(connection)
    if "outbox" not in skip:
        results.append(_database("outbox", settings, lambda: _outbox(settings, max_outbox_age)))
    if "dead-letters" not in skip:
        results.append(
            _database(
                "dead-letters",
                settings,
                lambda: _dead_letters(settings, window, max_new_dead_letters, on_broker),
            )
        )
    return results


def _broker(connection: Connection, timeout: float) -> Result:
    where = connection.as_uri()  # the password masked
    try:
        connect(connection, timeout=timeout)
    except BrokerTLSError as exc:
        return Result("broker", False, f"{where} refused the connection: {exc}")
    except Exception as exc:
        return Result("broker", False, f"{where} unreachable ({type(exc).__name__}: {exc})")
    return Result("broker", True, f"{where} reachable")


def _topology(connection: Connection, settings: BusSettings) -> Result:
    # Passive declarations: they create nothing, and a missing entity answers 404 (which
    # closes the channel, so each check has its own).
    wanted = topology.service_topology(settings)
    missing: list[str] = []
    entities: list[tuple[str, str]] = [("exchange", e.name) for e in wanted.exchanges]
    entities += [("queue", q.name) for q in wanted.queues]
    for kind, name in entities:
        channel: Any = connection.channel()
        try:
            if kind == "exchange":
                channel.exchange_declare(name, "topic", passive=True)
            else:
                channel.queue_declare(name, passive=True)
        except Exception as exc:
            if reply_code(exc) != 404:
                return Result("topology", False, f"checking {kind} {name!r} failed: {exc}")
            missing.append(f"{kind} {name!r}")
            continue
        channel.close()
    if missing:
        return Result(
            "topology",
            False,
            f"missing {', '.join(missing)} (run manage.py declare_event_topology, or start a "
            "worker of this service)",
        )
    return Result("topology", True, f"{len(entities)} exchange(s) and queue(s) present")


def _database(check: str, settings: BusSettings, run: Callable[[], Result]) -> Result:
    try:
        return run()
    except DatabaseError as exc:
        return Result(check, False, f"database error ({type(exc).__name__}: {exc}); run migrate?")
    finally:
        connections[settings.db_alias].close()


def _outbox(settings: BusSettings, max_age: float | None) -> Result:
    limit = settings.outbox_warn_after if max_age is None else max_age
    waiting = outbox.backlog(settings)
    age = waiting.oldest_age()
    if age is None:
        return Result("outbox", True, "empty")
    if waiting.forbidden or waiting.blocked_keys:
        # No retry helps these: an operator must fix the cause (or drop the rows) first.
        told = [outbox.describe_forbidden(waiting), outbox.describe_blocked(waiting)]
        return Result("outbox", False, "; ".join(text for text in told if text))
    if age > limit:
        return Result(
            "outbox",
            False,
            f"{waiting.count} row(s) unpublished, the oldest for {age:.0f}s (limit {limit:g}s); "
            "is the broker reachable from the publishers? (manage.py show_event_bus)",
        )
    return Result("outbox", True, f"{waiting.count} row(s), the oldest {age:.0f}s old")


def _waiting_on_broker(connection: Connection, settings: BusSettings) -> int | None:
    """Messages in the service's broker dead-letter queue: dead letters the database missed."""
    if not settings.service_name:
        return None
    try:
        depth = declaring.queue_depth(
            connection, topology.dead_letter_queue(settings.service_name).name
        )
    except Exception as exc:  # the broker answered the connection check; report, don't fail
        logger.warning(
            "could not count the broker's dead-letter queue: %s: %s", type(exc).__name__, exc
        )
        return None
    return 0 if depth is None else depth


def _dead_letters(
    settings: BusSettings, window: float, limit: int, on_broker: int | None = None
) -> Result:
    since = timezone.now() - timedelta(seconds=window)
    new = (
        DeadLetter.objects.using(settings.db_alias)
        .filter(
            service=settings.service_name or "",
            status=DeadLetter.Status.PENDING,
            last_failed_at__gte=since,
        )
        .count()
    )
    detail = f"{new} pending dead letter(s) in the last {window:g}s (limit {limit})"
    if new > limit:
        detail += "; see them with manage.py event_dead_letters list --status pending"
    if on_broker:
        # Written while the database was unavailable: the table does not know them yet.
        queue = topology.dead_letter_queue(settings.require_service_name()).name
        return Result(
            "dead-letters",
            False,
            f"{detail}; {on_broker} more wait in the broker queue {queue!r} (written while the "
            "database was unavailable): run manage.py event_dead_letters import",
        )
    return Result("dead-letters", new <= limit, detail)
