"""The bus's own confirmed publishes: receiver tasks and dead letters, from workers.

:class:`RetryingPublisher` keeps one broker connection per process and thread and runs each publish
under ``EVENT_BUS_PUBLISH_RETRY_POLICY``: a publish that fails is tried again on a fresh
connection, which declares what the publish needs again. Events themselves are published by
the outbox relays (:mod:`events_celery.bus.publish.relay`) or in ``"direct"`` mode
(:mod:`events_celery.bus.publish.direct`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kombu import Connection, Producer

from events_celery.bus.broker import declaring, topology
from events_celery.bus.broker.backoff import publish_pause
from events_celery.bus.broker.connection import bus_connection, connect, drop
from events_celery.bus.broker.resources import PerThread
from events_celery.conf import BusSettings, bus_settings
from events_celery.exceptions import BrokerTLSError, PublishError
from events_celery.wire import OutgoingMessage

logger = logging.getLogger(__name__)


class RetryingPublisher:
    """Publishes messages over one connection; one instance per process and thread."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._declarations = declaring.Declarations()

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._connection = bus_connection(self.settings)
            connect(self._connection, timeout=self.settings.publish_timeout)
            self._producer = Producer(self._connection.channel())
            self._declarations.forget()
        return self._producer

    def close(self) -> None:
        """Drop the connection (without the close handshake); the next publish opens a new one."""
        connection, self._connection, self._producer = self._connection, None, None
        drop(connection)

    def publish(
        self,
        message: OutgoingMessage,
        *,
        exchange: str,
        routing_key: str,
        declare: topology.Topology,
        stop: threading.Event | None = None,
    ) -> None:
        """Publish one message and wait for the broker's confirm.

        Args:
            message: body, headers and properties.
            exchange: exchange name.
            routing_key: routing key.
            declare: what must exist on the broker first (declared once per connection).
            stop: once set, no further attempt is made (see :meth:`run`).

        Raises:
            PublishError: not confirmed within the retry policy.
        """

        def publish_once(producer: Producer) -> None:
            producer.publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=message.headers,
                mandatory=True,
                retry=False,
                timeout=self.settings.publish_timeout,
                confirm_timeout=self.settings.publish_timeout,
                **message.properties,
            )

        self.run(
            publish_once,
            declare,
            describe=lambda: f"event {message.properties.get('message_id')} to {exchange!r}",
            event_id=message.properties.get("message_id"),
            stop=stop,
        )

    def run(
        self,
        operation: Callable[[Producer], object],
        declare: topology.Topology,
        *,
        describe: Callable[[], str],
        event_id: object = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Run a confirmed publishing ``operation``, retrying it on a fresh connection.

        Args:
            operation: publishes with the producer it is given.
            declare: what must exist on the broker first.
            describe: names what is published, for messages.
            event_id: the event's id, for the error.
            stop: set by the caller's owner (SIGTERM): a pause before the next attempt ends
                at once, and no further attempt is made.

        Raises:
            PublishError: it did not succeed within ``EVENT_BUS_PUBLISH_RETRY_POLICY``, the
                broker refused the TLS handshake or login (at once), or ``stop`` was set.
        """
        policy = self.settings.publish_retry_policy
        attempts = policy.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                producer = self._ensure()
                assert self._connection is not None
                self._declarations.ensure(self._connection, declare)
                operation(producer)
                return
            except Exception as exc:
                self.close()
                if isinstance(exc, BrokerTLSError):  # a certificate or setting must change
                    raise PublishError(
                        f"publishing {describe()} failed: {exc}", event_id=event_id
                    ) from exc
                last = attempt == attempts
                if not last:
                    interval = publish_pause(policy, attempt - 1, jitter=False, at_least=0.0)
                    logger.warning(
                        "publishing %s failed (%s: %s); retry %d/%d in %.2fs",
                        describe(),
                        type(exc).__name__,
                        exc,
                        attempt,
                        attempts - 1,
                        interval,
                    )
                    if stop is None:
                        time.sleep(interval)
                        continue
                    if not stop.wait(interval):
                        continue
                raise PublishError(
                    f"publishing {describe()} was not confirmed by the broker after {attempt} "
                    f"attempt(s){'' if last else ' (stopped: no more attempts)'}: "
                    f"{type(exc).__name__}: {exc}",
                    event_id=event_id,
                ) from exc


_publishers: PerThread[RetryingPublisher] = PerThread(RetryingPublisher, RetryingPublisher.close)


def retrying_publisher(settings: BusSettings | None = None) -> RetryingPublisher:
    """The :class:`RetryingPublisher` of this process and thread (made on first use)."""
    return _publishers.get(settings or bus_settings())
