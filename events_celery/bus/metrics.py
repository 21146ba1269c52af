"""Prometheus metrics of the bus, counted where it works: publishing, consuming, receivers.

Counting needs the optional ``prometheus_client`` (``pip install events_celery[metrics]``);
without it every function here returns at once. The metrics live in ``prometheus_client``'s
default registry, or in its multiprocess files when ``PROMETHEUS_MULTIPROC_DIR`` is set;
:mod:`events_celery.contrib.prometheus` exposes them, with the outbox gauges that it reads
from the database at scrape time.

Names follow Prometheus' conventions (base units, ``_total`` on counters) under the
``events_celery_`` namespace, in the style of FastStream's and dramatiq's Prometheus
middlewares. Labels stay bounded: the service, topic, event type, receiver and outcome,
never an event id.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from events_celery.bus import hooks
from events_celery.conf import BusSettings, bus_settings

if TYPE_CHECKING:
    from events_celery.wire import ReceivedEvent

try:
    import prometheus_client
except ImportError:  # the "metrics" extra is not installed: nothing is counted
    prometheus_client = None  # type: ignore[assignment]

#: Receiver-run outcomes, the values of the ``outcome`` label.
SUCCESS, RETRY, DEAD_LETTERED = "success", hooks.RETRY, hooks.DEAD_LETTERED


class _Metrics:
    """The metric objects, made once per process."""

    def __init__(self) -> None:
        assert prometheus_client is not None
        counter, histogram = prometheus_client.Counter, prometheus_client.Histogram
        message = ["service", "topic", "event_type"]
        self.published = counter(
            "events_celery_published_messages",
            "Event messages published to a topic exchange (every attempt, outbox relays and "
            "direct publishes)",
            message,
        )
        self.confirmed = counter(
            "events_celery_published_messages_confirmed",
            "Published event messages the broker confirmed",
            message,
        )
        self.failed = counter(
            "events_celery_published_messages_failed",
            "Published event messages the broker refused or did not confirm in time",
            message,
        )
        self.consumed = counter(
            "events_celery_consumed_messages",
            "Event messages a worker's consumer checked and took from a service queue",
            message,
        )
        self.poison = counter(
            "events_celery_poison_messages",
            "Messages a worker dead-lettered because they cannot become an event",
            ["service", "topic"],
        )
        run = ["service", "event_type", "receiver"]
        self.runs = counter(
            "events_celery_receiver_runs",
            "Runs of a receiver of an event from the bus, by outcome: success, retry "
            "(a retry task was scheduled), dead-lettered (the last attempt failed)",
            [*run, "outcome"],
        )
        self.duration = histogram(
            "events_celery_receiver_duration_seconds",
            "Wall-clock time of one run of a receiver of an event from the bus",
            run,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the look-up costs more than the count."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


_metrics: _Metrics | None = None


def _get() -> _Metrics | None:
    global _metrics
    if _metrics is None and prometheus_client is not None:
        _metrics = _Metrics()
    return _metrics


def _service(settings: BusSettings) -> str:
    return settings.service_name or ""


def published(messages: Sequence[hooks.Published]) -> None:
    """Count a batch handed to the broker: every message, the confirmed, the failed."""
    metrics = _get()
    if metrics is None:
        return
    settings = bus_settings()
    service, prefix = _service(settings), settings.topic_prefix
    sent: Tally[tuple[str, str, str]] = Tally()
    confirmed: Tally[tuple[str, str, str]] = Tally()
    for message in messages:
        key = (service, message.exchange.removeprefix(prefix), message.routing_key)
        sent[key] += 1
        if message.confirmed:
            confirmed[key] += 1
    for key, count in sent.items():
        metrics.child(metrics.published, *key).inc(count)
        ok = confirmed.get(key, 0)
        if ok:
            metrics.child(metrics.confirmed, *key).inc(ok)
        if count > ok:
            metrics.child(metrics.failed, *key).inc(count - ok)


def consumed(settings: BusSettings, topic: str, event_type: str) -> None:
    """Count an event message the consumer took."""
    metrics = _get()
    if metrics is not None:
        metrics.child(metrics.consumed, _service(settings), topic, event_type).inc()


def poisoned(settings: BusSettings, exchange: str) -> None:
    """Count a message the consumer dead-lettered as poison (``exchange``: where it came by)."""
    metrics = _get()
    if metrics is not None:
        topic = exchange.removeprefix(settings.topic_prefix)
        metrics.child(metrics.poison, _service(settings), topic).inc()


@contextmanager
def receiver_run(settings: BusSettings, event: ReceivedEvent, receiver: str) -> Iterator[None]:
    """Time a receiver's run; count it a success when it returns.

    A run that raises is timed too; its caller counts it with :func:`receiver_failed` once it
    knows whether the receiver is retried or dead-lettered.
    """
    metrics = _get()
    if metrics is None:
        yield
        return
    labels = (_service(settings), event.metadata.event_type, receiver)
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.child(metrics.duration, *labels).observe(time.perf_counter() - start)
    metrics.child(metrics.runs, *labels, SUCCESS).inc()


def receiver_failed(
    settings: BusSettings, event: ReceivedEvent, receiver: str, outcome: str
) -> None:
    """Count a failed receiver run by what follows it: :data:`RETRY` or :data:`DEAD_LETTERED`."""
    metrics = _get()
    if metrics is not None:
        labels = (_service(settings), event.metadata.event_type, receiver, outcome)
        metrics.child(metrics.runs, *labels).inc()


def enabled() -> bool:
    """Whether metrics are counted (``prometheus_client`` is installed)."""
    return prometheus_client is not None


class MetricsObserver(hooks.Observer):
    """Counts at the bus's hook points (attached by the Django app when it is ready)."""

    def published(self, messages: Sequence[hooks.Published]) -> None:
        """Count a batch handed to the broker."""
        published(messages)

    def consumed(self, settings: BusSettings, topic: str, event_type: str) -> None:
        """Count an event message the consumer took."""
        consumed(settings, topic, event_type)

    def poisoned(self, settings: BusSettings, exchange: str) -> None:
        """Count a message the consumer dead-lettered as poison."""
        poisoned(settings, exchange)

    def receiver_run(
        self,
        settings: BusSettings,
        event: ReceivedEvent,
        receiver: str,
        item: Mapping[str, Any],
        attempt: int,
    ) -> AbstractContextManager[None]:
        """Time a receiver's run; count it a success when it returns."""
        return receiver_run(settings, event, receiver)

    def receiver_failed(
        self, settings: BusSettings, event: ReceivedEvent, receiver: str, outcome: str
    ) -> None:
        """Count a failed receiver run by what follows it."""
        receiver_failed(settings, event, receiver, outcome)


#: The observer the Django app attaches.
observer = MetricsObserver()
