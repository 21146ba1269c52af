"""OpenTelemetry trace context: from the sender's span to a span around each receiver run.

With the optional ``opentelemetry-api`` installed (``pip install events_celery[otel]``), an
event sent inside a recording span carries that span's W3C trace context in its message
headers, ``traceparent`` and, when set, ``tracestate``; the outbox row keeps them, so a
relay that publishes it later sends the sender's context, not its own. In the subscribing
service each receiver run is a ``CONSUMER`` span, child of the sender's span, with the
OpenTelemetry messaging attributes. Without the package, or without a recording span,
nothing is added and nothing is traced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from events_celery.bus import hooks
from events_celery.metadata import library_version
from events_celery.wire import HEADER_TRACEPARENT, HEADER_TRACESTATE

if TYPE_CHECKING:
    from events_celery.conf import BusSettings
    from events_celery.wire import ReceivedEvent

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the "otel" extra is not installed: nothing is traced
    trace = None  # type: ignore[assignment]

_propagator: Any = TraceContextTextMapPropagator() if trace is not None else None
_tracer: Any = None


def context() -> dict[str, str]:
    """The current span's ``traceparent`` (and ``tracestate``) headers; none outside a span."""
    headers: dict[str, str] = {}
    if _propagator is not None and trace.get_current_span().get_span_context().is_valid:
        _propagator.inject(headers)
    return headers


@contextmanager
def receiver_span(
    event: ReceivedEvent, receiver: str, item: Mapping[str, Any], *, attempt: int
) -> Iterator[None]:
    """Run a receiver inside a ``CONSUMER`` span whose parent is the sender's span.

    Args:
        event: the decoded event.
        receiver: the receiver's name.
        item: the event as its task carries it (its message headers, and ``origin``: the
            exchange and routing key it came by).
        attempt: which run of the receiver this is (1, 2, ...).

    The span is named ``process <event type>``; an exception is recorded on it and sets its
    status to error.
    """
    if _propagator is None:
        yield
        return
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("events_celery", library_version())
    headers: Mapping[str, Any] = item.get("headers") or {}
    carrier = {k: str(headers[k]) for k in (HEADER_TRACEPARENT, HEADER_TRACESTATE) if k in headers}
    metadata = event.metadata
    with _tracer.start_as_current_span(
        f"process {metadata.event_type}",
        context=_propagator.extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": str(item.get("origin") or "").rpartition("/")[0],
            "messaging.message.id": str(metadata.id),
            "messaging.rabbitmq.destination.routing_key": metadata.event_type,
            "events_celery.receiver": receiver,
            "events_celery.attempt": attempt,
            "events_celery.source": metadata.source,
        },
    ):
        yield


class TracingObserver(hooks.Observer):
    """Traces at the bus's hook points (attached by the Django app when it is ready)."""

    def message_headers(self) -> Mapping[str, str]:
        """The sender's trace context."""
        return context()

    def receiver_run(
        self,
        settings: BusSettings,
        event: ReceivedEvent,
        receiver: str,
        item: Mapping[str, Any],
        attempt: int,
    ) -> AbstractContextManager[None]:
        """A ``CONSUMER`` span around the receiver's run."""
        return receiver_span(event, receiver, item, attempt=attempt)


#: The observer the Django app attaches.
observer = TracingObserver()
