"""The consumer: a Celery worker bootstep that reads this service's event queues.

``celery -A proj worker`` is all it takes: when the worker starts,
:func:`events_celery.bus.worker.install` adds :class:`EventConsumerStep` and the
service-private task queue to the worker. The step declares this service's topology, decodes
each event message, and hands events in batches to the ``deliver_events`` task; it
acknowledges the event messages only once the broker has confirmed that task. A message that
can never become an event is dead-lettered with the reason, and the worker keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery, bootsteps
from kombu import Consumer
from kombu.message import Message

from events_celery import schema_store
from events_celery.bus import hooks
from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.connection import raw_body
from events_celery.bus.consume.handoff import deliver_later, envelope
from events_celery.bus.dead_letters.store import Failure, Reason, dead_letter
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import ConfigurationError, PublishError
from events_celery.wire import CheckedMessage, PoisonMessageError, check_message, plain_headers

logger = logging.getLogger(__name__)


class EventConsumerStep(bootsteps.ConsumerStep):
    """Consumes ``<service>.<topic>`` queues and hands events to receiver tasks in batches."""

    name = "events_celery.EventConsumerStep"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.app: Celery = parent.app
        self.timer: Any = None
        self.settings: BusSettings = bus_settings()
        self._pending: list[tuple[Message, dict[str, Any]]] = []
        self._flush_entry: Any = None
        self._last_flush = 0.0
        # The hub runs everything in one thread; without it (in-memory transport) the timer
        # runs in its own thread, and this lock keeps the two from handing off twice.
        self._lock = threading.Lock()
        # Celery acknowledges (drops) a task message it cannot decode; on this service's task
        # queue such a message is dead-lettered in the store instead. The Tasks step
        # reads the callback when it starts, after every step has been created.
        self._celery_on_decode_error = parent.on_decode_error
        parent.on_decode_error = self.on_task_decode_error

    def on_task_decode_error(self, message: Message, exc: BaseException) -> None:
        """Dead-letter an undecodable message of the service's task queue; others as Celery does."""
        queue = topology.task_queue(self.settings.require_service_name())
        if message.delivery_info.get("routing_key") != queue.routing_key:
            self._celery_on_decode_error(message, exc)
            return
        self._dead_letter(
            message,
            f"undecodable message on the receiver task queue {queue.name!r} (content type "
            f"{message.content_type!r}): {type(exc).__name__}: {exc}",
        )

    def get_consumers(self, channel: Any) -> list[Consumer]:
        """Declare this service's topology and consume its event queues."""
        settings = self.settings = bus_settings()
        refuse_misconfiguration()
        service = settings.require_service_name()
        declaring.declare_consumer(
            channel.connection.client, settings, self.app.conf.task_queue_max_priority
        )
        queues = [
            topology.service_queue(service, settings.topic_prefix, s, settings.queue_type)
            for s in settings.subscriptions
            if not s.order_by_key  # those are consumed by OrderedConsumerStep
        ]
        if not queues:
            return []
        channel.basic_qos(0, settings.consumer_batch_size * 2, False)
        logger.info(
            "events_celery: service %r consuming %s",
            service,
            ", ".join(q.name for q in queues),
        )
        # Declared just above, where an exchange the broker user may not configure is used as
        # an administrator declared it; kombu's own declaration would try to configure it.
        return [
            Consumer(
                channel,
                queues=queues,
                on_message=self.on_message,
                no_ack=False,
                auto_declare=False,
            )
        ]

    def start(self, c: Any) -> None:
        """Start consuming (called by Celery on worker start and after reconnecting)."""
        self.timer = c.timer
        self._pending = []
        super().start(c)

    def stop(self, c: Any) -> None:
        """Stop consuming; pending messages stay unacknowledged and are redelivered."""
        with self._lock:
            self._cancel_flush()
            self._pending = []
        super().stop(c)

    def on_message(self, message: Message) -> None:
        """Check one event message and queue it for the next hand-off.

        Everything but the Avro body is checked here (a message that can never become an event
        is dead-lettered at once); the receiver task decodes the body, once per delivery.
        """
        settings = self.settings
        body = raw_body(message)
        info = message.delivery_info
        exchange, routing_key = str(info.get("exchange") or ""), info.get("routing_key")
        topic = exchange.removeprefix(settings.topic_prefix)
        reason = poison_reason(settings, message, body)
        if reason is not None:
            dead_letter_poison(settings, message, reason)
            return
        hooks.consumed(settings, topic, str(routing_key))
        item = envelope(
            plain_headers(message.headers),
            body,
            origin=origin(message),
            user_id=message.properties.get("user_id"),
        )
        with self._lock:
            self._pending.append((message, item))
            # The first event after a quiet spell goes at once (no wait at light load); under
            # load, events arrive faster than the interval and fill batches instead.
            quiet = time.monotonic() - self._last_flush >= settings.consumer_flush_interval
            if len(self._pending) >= settings.consumer_batch_size or (
                quiet and len(self._pending) == 1
            ):
                self._flush_locked()
            elif self._flush_entry is None and self.timer is not None:
                self._flush_entry = self.timer.call_after(
                    settings.consumer_flush_interval, self.flush
                )

    def flush(self) -> None:
        """Hand the pending events to one ``deliver_events`` task, then ack them."""
        with self._lock:
            self._flush_entry = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._cancel_flush()
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not batch:
            return
        try:
            deliver_later(self.app, self.settings, [item for _, item in batch])
        except PublishError:
            logger.exception("handing %d event(s) to receivers failed; requeued", len(batch))
            for message, _ in batch:
                message.requeue()
            return
        for message, _ in batch:
            message.ack()

    def _cancel_flush(self) -> None:
        if self._flush_entry is not None:
            self._flush_entry.cancel()
            self._flush_entry = None

    def _dead_letter(self, message: Message, reason: str) -> None:
        dead_letter_poison(self.settings, message, reason)


def poison_reason(settings: BusSettings, message: Message, body: bytes) -> str | None:
    """Why ``message`` can never become an event here (:func:`check_delivery`), or ``None``."""
    try:
        check_delivery(settings, message, body)
    except PoisonMessageError as exc:
        return exc.reason
    except Exception as exc:  # a checker bug must not wedge the worker
        logger.exception("unexpected error while checking a message; dead-lettering it")
        return f"unexpected decoding error: {type(exc).__name__}: {exc}"
    return None


def dead_letter_poison(settings: BusSettings, message: Message, reason: str) -> None:
    """Dead-letter a message that can never become an event, and settle it on the broker."""
    hooks.poisoned(settings, str(message.delivery_info.get("exchange") or ""))
    try:
        dead_letter(
            settings,
            raw_body(message),
            message.headers,
            Failure(Reason.POISON, reason, origin=origin(message)),
            content_type=message.content_type,
            properties=message.properties,
        )
    except PublishError:
        # Neither the database nor the broker's dead-letter queue took it. The broker
        # still dead-letters it (the queue's dead-letter exchange), without the reason:
        # dead-lettered either way, never dropped.
        logger.exception("could not record why a message is dead-lettered")
        message.reject(requeue=False)
        return
    logger.error("dead-lettered a message: %s", reason)
    message.ack()


def check_delivery(settings: BusSettings, message: Message, body: bytes) -> CheckedMessage:
    """Check everything of an event message a consumer received but its Avro body.

    The one check of every path that consumes this service's event queues: content type,
    size, headers, schema fingerprint, that ``ce_type`` is the routing key and subscribed on
    the topic of the exchange it came by (so a copy routed by a ``CC``/``BCC`` header to a key
    the publisher may not use is refused), and the publisher's authenticity
    (``EVENT_BUS_TRUSTED_PUBLISHERS``, ``EVENT_BUS_REQUIRE_SIGNATURES``) with the broker-checked
    ``user_id`` property.

    Raises:
        PoisonMessageError: the message can never become an event here (the reason says why).
    """
    info = message.delivery_info
    topic = str(info.get("exchange") or "").removeprefix(settings.topic_prefix)
    user_id = message.properties.get("user_id")
    return check_message(
        message.headers or {},
        body,
        content_type=message.content_type,
        max_size=settings.max_message_size,
        writer_schemas=schema_store.find_schema,
        routing_key=info.get("routing_key"),
        subscribed=lambda event_type: settings.subscribes_to(event_type, topic),
        authenticity=settings.authenticity,
        user_id=None if user_id is None else str(user_id),
    )


def refuse_misconfiguration() -> None:
    """Raise what ``manage.py check`` reports as errors: a worker must not start with them.

    Raises:
        ConfigurationError: listing every error, with its id and hint.
    """
    from events_celery.checks import check_settings

    errors = [m for m in check_settings() if m.is_serious()]
    if errors:
        lines = "\n".join(f"- {m.id}: {m.msg} (hint: {m.hint})" for m in errors)
        raise ConfigurationError(f"events_celery settings are invalid:\n{lines}")


def origin(message: Message) -> str:
    """``<exchange>/<routing key>`` a message arrived by."""
    info = message.delivery_info
    return f"{info.get('exchange')}/{info.get('routing_key')}"
