"""Serve the bus's Prometheus metrics from web processes and Celery workers.

Needs the ``metrics`` extra (``pip install events_celery[metrics]``). Web processes include
the URL patterns::

    urlpatterns = [..., path("", include("events_celery.contrib.prometheus"))]  # GET /metrics

Celery workers serve the same over HTTP on a port of their own: call
``serve_from_workers(app, port=9100)`` in the module that defines the Celery app.

Processes that fork (Celery's prefork pool, gunicorn's workers) count in
``prometheus_client``'s multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory in their environment, and every process's counts are added up at scrape time.
The outbox gauges are read from the database at scrape time by :class:`OutboxCollector`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse
from django.urls import path

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, multiprocess
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImproperlyConfigured(
        "events_celery.contrib.prometheus needs prometheus_client: "
        "pip install 'events_celery[metrics]'"
    ) from exc

from events_celery.conf import bus_settings

__all__ = ["OutboxCollector", "metrics_registry", "metrics_view", "serve_from_workers"]

logger = logging.getLogger(__name__)

#: The environment variable of prometheus_client's multiprocess mode.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class OutboxCollector:
    """The outbox gauges, read from the database when Prometheus scrapes.

    One aggregate query per scrape (``COUNT`` and ``MIN`` over the outbox table, which holds
    only unpublished rows): cheap while the broker takes events, and bounded by the backlog
    when it does not. Services that publish nothing through the outbox report nothing.
    """

    def __init__(self, *, close_connection: bool = False) -> None:
        """Args:
        close_connection: close the database connection after each scrape (for a scraping
            thread that Django's request cycle does not clean up after).
        """
        self.close_connection = close_connection

    def collect(self) -> Iterator[Metric]:
        """Yield the backlog and oldest-age gauges (none when this service has no outbox)."""
        # The Celery app module imports this one: the bus's outbox needs the apps loaded.
        from events_celery.bus.publish import outbox

        settings = bus_settings()
        if settings.publish_mode != "outbox" or not any(settings.routes.values()):
            return
        try:
            waiting = outbox.backlog(settings)
        except DatabaseError as exc:
            logger.warning("the outbox gauges could not be read: %s: %s", type(exc).__name__, exc)
            return
        finally:
            if self.close_connection:
                connections[settings.db_alias].close()
        service = settings.service_name or ""
        age = waiting.oldest_age() or 0.0
        backlog = GaugeMetricFamily(
            "events_celery_outbox_messages",
            "Outbox rows waiting to be published (one per event and topic)",
            labels=["service"],
        )
        backlog.add_metric([service], waiting.count)
        oldest_age = GaugeMetricFamily(
            "events_celery_outbox_oldest_age_seconds",
            "Age of the oldest outbox row's event (0 when none waits)",
            labels=["service"],
        )
        oldest_age.add_metric([service], age)
        yield backlog
        yield oldest_age


class _ProcessMetrics:
    """The default registry's metrics (this process's counts), inside another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from prometheus_client.REGISTRY.collect()


def metrics_registry(*, close_connection: bool = False) -> CollectorRegistry:
    """A registry of everything to expose: the counts, and the outbox gauges.

    The counts are every process's (read from ``PROMETHEUS_MULTIPROC_DIR``) when that is set,
    else this process's.
    """
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessMetrics())
    registry.register(OutboxCollector(close_connection=close_connection))
    return registry


_web_registry: CollectorRegistry | None = None


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format (or OpenMetrics, when the scraper asks for it)."""
    global _web_registry
    if _web_registry is None:
        _web_registry = metrics_registry()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(_web_registry), content_type=content_type)


urlpatterns = [path("metrics", metrics_view, name="events_celery_metrics")]


def serve_from_workers(app: Celery, port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``addr:port`` from the main process of every worker of ``app``.

    The server starts when a worker is ready and stops when it shuts down. With the prefork
    pool, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory per worker) so the main
    process adds up its pool processes' counts; each pool process is marked dead in it when
    it exits.

    Args:
        app: the Celery app.
        port: the TCP port (one per worker on a host).
        addr: the address to listen on.
    """
    server: list[Any] = []

    def start(sender: Any = None, **kwargs: Any) -> None:
        if sender is None or sender.app is not app or server:
            return
        pool = str(getattr(getattr(sender, "controller", None), "pool_cls", ""))
        if "prefork" in pool and not os.environ.get(MULTIPROC_DIR):
            logger.warning(
                "events_celery metrics: the prefork pool runs receivers in child processes "
                "whose counts this server cannot see; set %s to an empty directory",
                MULTIPROC_DIR,
            )
        server.extend(
            prometheus_client.start_http_server(
                port, addr, registry=metrics_registry(close_connection=True)
            )
        )
        logger.info("events_celery: metrics served on http://%s:%d/metrics", addr, port)

    def stop(sender: Any = None, **kwargs: Any) -> None:
        if server:
            http, thread = server
            http.shutdown()
            http.server_close()
            thread.join(5)
            server.clear()

    worker_ready.connect(start, weak=False, dispatch_uid=f"events_celery.metrics.start.{id(app)}")
    worker_shutdown.connect(stop, weak=False, dispatch_uid=f"events_celery.metrics.stop.{id(app)}")
    worker_process_shutdown.connect(
        _mark_process_dead, weak=False, dispatch_uid="events_celery.metrics.process_dead"
    )


def _mark_process_dead(pid: int | None = None, **kwargs: Any) -> None:
    # A pool process exits: its live gauges leave the multiprocess totals.
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
