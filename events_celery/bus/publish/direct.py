"""``"direct"`` publish mode: a confirmed publish at send time, within one time bound.

For services without a database. The messages of an event are published when it is sent (after
the commit, inside a transaction) over this thread's connection, with a window of outstanding
confirms; everything, connecting and retries included, happens within
``EVENT_BUS_PUBLISH_TIMEOUT``, and a failure raises :class:`~events_celery.PublishError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NoReturn

from events_celery.bus.broker import topology
from events_celery.bus.broker.backoff import MIN_PAUSE, publish_pause
from events_celery.bus.broker.confirms import BrokerBlockedError, ConfirmingPublisher, Outgoing
from events_celery.bus.broker.connection import Deadline, bus_connection
from events_celery.bus.broker.resources import PerThread
from events_celery.conf import BusSettings
from events_celery.exceptions import BrokerTLSError, PublishError
from events_celery.wire import OutgoingMessage

logger = logging.getLogger(__name__)


def publish_after_commit(
    settings: BusSettings, messages: list[tuple[str, OutgoingMessage]]
) -> None:
    """:func:`publish_direct`, as the ``on_commit`` callback of the sender's transaction.

    Raises:
        PublishError: as :func:`publish_direct`, with a note on what it means after a commit.
    """
    try:
        publish_direct(settings, messages)
    except PublishError as exc:
        exc.add_note(
            "Raised after the database transaction committed. Django skips the remaining "
            "on_commit callbacks of that transaction, so events sent after this one in it "
            "were not published either. The 'outbox' publish mode has neither limit."
        )
        raise


def publish_direct(settings: BusSettings, messages: Sequence[tuple[str, OutgoingMessage]]) -> None:
    """Publish ``(topic, message)`` pairs and wait for every confirm, within one time bound.

    Everything, connecting and retries included, happens within ``EVENT_BUS_PUBLISH_TIMEOUT``:
    kombu's own connection retries are off, the socket times out with the deadline, and a
    broker that blocks publishers (``connection.blocked``) fails the publish at once. Only
    messages the broker never took are tried again: one that it may hold is not sent twice.

    A message the broker refuses for permissions (403, or 406 for a ``user_id``) is not tried
    again: the error says so, with the broker's reason and what to grant.

    Raises:
        PublishError: naming every event id not confirmed, and whether the broker may still
            deliver it.
    """
    deadline = Deadline(settings.publish_timeout)
    pending = {
        index: Outgoing(
            key=index,
            exchange=topology.exchange_name(settings.topic_prefix, topic),
            routing_key=message.properties["type"],
            message=message,
            declare=topology.topic_topology(settings, topic),
        )
        for index, (topic, message) in enumerate(messages)
    }
    may_be_delivered: set[int] = set()
    reason = "no time left"
    attempts = settings.publish_retry_policy.max_attempts
    for attempt in range(1, attempts + 1):
        outcome = _direct_publisher(settings).publish(
            pending.values(), timeout=deadline.remaining()
        )
        for index in outcome.confirmed:
            pending.pop(index, None)
        if outcome.forbidden:
            may_be_delivered.update(outcome.unknown)
            _raise_forbidden(messages, outcome.forbidden, may_be_delivered)
        if not pending:
            return
        may_be_delivered.update(outcome.unknown)
        may_be_delivered.difference_update(outcome.refused)
        if isinstance(outcome.error, BrokerTLSError):
            # A certificate or a setting must change first: trying again cannot help.
            reason = str(outcome.error)
            break
        if outcome.unknown or isinstance(outcome.error, BrokerBlockedError):
            # The broker may have taken them (it holds what a blocked connection sent): sending
            # them again could deliver them twice, so the caller hears it at once.
            reason = f"{type(outcome.error).__name__}: {outcome.error}"
            break
        reason = (
            f"{type(outcome.error).__name__}: {outcome.error}"
            if outcome.error is not None
            else "; ".join(sorted(set(outcome.refused.values())))
        )
        pause = (
            publish_pause(settings.publish_retry_policy, attempt - 1, at_least=MIN_PAUSE)
            if attempt > 1
            else 0.0
        )
        if attempt == attempts or deadline.remaining() <= pause:
            break
        logger.warning("direct publish failed (%s); retry %d/%d", reason, attempt, attempts - 1)
        time.sleep(pause)
    failed = [messages[index] for index in sorted(pending)]
    event_ids = tuple(dict.fromkeys(m.properties["message_id"] for _, m in failed))
    topics = sorted({topic for topic, _ in failed})
    maybe = bool(may_be_delivered & set(pending))
    raise PublishError(
        f"event(s) {', '.join(event_ids)} to topic(s) {', '.join(map(repr, topics))} were not "
        f"confirmed by the broker within EVENT_BUS_PUBLISH_TIMEOUT "
        f"({settings.publish_timeout:g}s, {attempt} attempt(s)): {reason}. "
        + (
            "The broker may still deliver them (it took them but never confirmed)."
            if maybe
            else "The broker did not take them; they will not be delivered."
        ),
        event_ids=event_ids,
        topic=topics[0],
        may_be_delivered=maybe,
    )


def _raise_forbidden(
    messages: Sequence[tuple[str, OutgoingMessage]],
    forbidden: dict[int, str],
    may_be_delivered: set[int],
) -> NoReturn:
    refused = [messages[index] for index in sorted(forbidden)]
    event_ids = tuple(dict.fromkeys(m.properties["message_id"] for _, m in refused))
    topics = sorted({topic for topic, _ in refused})
    reasons = "; ".join(dict.fromkeys(forbidden[index] for index in sorted(forbidden)))
    others = may_be_delivered - set(forbidden)
    raise PublishError(
        f"the broker refused event(s) {', '.join(event_ids)} to topic(s) "
        f"{', '.join(map(repr, topics))} for permissions: {reasons}. They will not be "
        "delivered; publishing them again fails the same way until the broker user's "
        "permissions change."
        + (" Other messages of this send may still be delivered." if others else ""),
        event_ids=event_ids,
        topic=topics[0],
        may_be_delivered=False,
    )


def _windowed_publisher(settings: BusSettings) -> ConfirmingPublisher:
    # Direct mode never sends twice what the broker may hold (see publish_direct).
    return ConfirmingPublisher(
        bus_connection(settings, confirm_publish=False),
        window=settings.publish_window,
        resend_unknown=False,
    )


#: Direct mode's publisher of this process and thread.
_publishers: PerThread[ConfirmingPublisher] = PerThread(
    _windowed_publisher, ConfirmingPublisher.close
)


def _direct_publisher(settings: BusSettings) -> ConfirmingPublisher:
    return _publishers.get(settings)
