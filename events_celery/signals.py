"""Event definitions: :class:`EventSignal`, a Django signal with a typed, versioned payload."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.dispatch import Signal
from django.utils.inspect import func_accepts_kwargs

from events_celery.avro import PayloadSerializer
from events_celery.conf import bus_settings
from events_celery.event_registry import EventRegistry, registry
from events_celery.exceptions import (
    EventDefinitionError,
    InvalidEventTypeError,
    PayloadValidationError,
)
from events_celery.metadata import EventMetadata
from events_celery.receivers import Receiver as Receiver
from events_celery.receivers import dotted_name as dotted_name
from events_celery.receivers import names_of

logger = logging.getLogger(__name__)

#: An event type is the routing key of its messages, an AMQP short string.
MAX_EVENT_TYPE_LENGTH = 255
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\.v[1-9][0-9]*$")

Responses = list[tuple[Receiver, Any]]
#: Publishes a validated event (signal, metadata, payload); see :func:`attach_publish_hook`.
PublishHook = Callable[["EventSignal", EventMetadata, Mapping[str, Any]], None]

_publish: PublishHook | None = None


def attach_publish_hook(hook: PublishHook | None) -> None:
    """Set what ``send_event`` calls to publish routed events (``None``: local receivers only).

    The bus attaches itself when the Django app is ready; the event core never imports it.
    """
    global _publish
    _publish = hook


class SentEvent(list[tuple[Receiver, Any]]):
    """What ``send_event`` returns: the receivers' responses, and the event's metadata.

    It is the list ``Signal.send_robust`` would return (``[(receiver, response), ...]``), with
    the :class:`EventMetadata` of the event sent as :attr:`metadata` (``None`` when the event
    is disabled and nothing was sent): ``ORDER_PLACED.send_event(order=o).metadata.id``.
    """

    def __init__(self, responses: Responses, metadata: EventMetadata | None) -> None:
        super().__init__(responses)
        self.metadata = metadata


#: Keyword arguments every receiver gets besides the payload; a payload may not use them.
RESERVED_KWARGS = frozenset({"signal", "sender", "metadata", "from_event_bus"})


def _defining_module() -> str:
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "?"))


class EventSignal(Signal):
    """The definition of one event: its versioned type and the types of its payload.

    Define it once, as a module-level constant in an app's ``events.py``::

        ORDER_PLACED = EventSignal("org.example.shop.order.placed.v1", data={"order": OrderData})

    Args:
        event_type: lowercase reverse-DNS segments ending in ``.vN``.
        data: payload keyword argument name → type (an attrs class or a supported plain type).
        minor_version: bumped for compatible changes to the payload.
        event_registry: the registry to join; the global one unless a test passes another.

    Raises:
        InvalidEventTypeError: ``event_type`` is malformed.
        UnsupportedTypeError: a payload type cannot travel as Avro (names the field).
        DuplicateEventTypeError: ``event_type`` is already defined.
    """

    def __init__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        minor_version: int = 0,
        *,
        event_registry: EventRegistry | None = None,
    ) -> None:
        super().__init__()
        if (
            not isinstance(event_type, str)
            or not EVENT_TYPE_PATTERN.match(event_type)
            or len(event_type) > MAX_EVENT_TYPE_LENGTH
        ):
            raise InvalidEventTypeError(
                f"{event_type!r} is not a valid event type: use lowercase reverse-DNS segments "
                "(letters, digits, '_') ending in a version, at most "
                f"{MAX_EVENT_TYPE_LENGTH} characters (it is the AMQP routing key), e.g. "
                "'org.example.shop.order.placed.v1'"
            )
        if (
            isinstance(minor_version, bool)
            or not isinstance(minor_version, int)
            or minor_version < 0
        ):
            raise EventDefinitionError(
                f"{event_type}: minor_version must be an int >= 0, got {minor_version!r}"
            )
        if not isinstance(data, Mapping) or not data:
            raise EventDefinitionError(
                f"{event_type}: data must map each payload argument to its type, "
                "e.g. data={'order': OrderData}"
            )
        clashes = RESERVED_KWARGS.intersection(data)
        if clashes:
            raise EventDefinitionError(
                f"{event_type}: payload argument(s) {sorted(clashes)} clash with the arguments "
                f"every receiver gets ({sorted(RESERVED_KWARGS)}); rename them"
            )
        self.event_type = event_type
        self.minor_version = minor_version
        self.data = dict(data)
        self.serializer = PayloadSerializer(event_type, self.data)
        self.defined_in = _defining_module()
        self.enabled = True
        (event_registry if event_registry is not None else registry).register(self)

    def __repr__(self) -> str:
        return f"<EventSignal {self.event_type}>"

    def connect(
        self,
        receiver: Receiver,
        sender: object = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
    ) -> None:
        """Connect a receiver; it must accept ``**kwargs`` (checked whatever ``DEBUG`` says).

        Each receiver has a name (:meth:`receiver_name`): ``dispatch_uid`` when given, else its
        dotted name (``module.qualname``). Retries of a receiver in a worker find it by that
        name, and logs and dead letters name it so, so two receivers connected at once may not
        share one.

        Raises:
            EventDefinitionError: the receiver is not callable, does not accept ``**kwargs``, or
                its name is taken by another connected receiver.
        """
        if not callable(receiver):
            raise EventDefinitionError(f"{self.event_type}: receiver {receiver!r} is not callable")
        if not func_accepts_kwargs(receiver):
            raise EventDefinitionError(
                f"{self.event_type}: receiver {dotted_name(receiver)} must accept **kwargs "
                "(it gets signal, sender, metadata, from_event_bus and the payload)"
            )
        names = names_of(self)
        name = dispatch_uid or dotted_name(receiver)
        names.check_free(self.event_type, receiver, name, self.receivers_for_dispatch())
        super().connect(receiver, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        if receiver in self.receivers_for_dispatch():
            names.add(receiver, name, weak=weak)

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: object = None,
        dispatch_uid: str | None = None,
    ) -> bool:
        """Disconnect a receiver, by itself or by its ``dispatch_uid``.

        Its name is forgotten only when Django disconnected it: a receiver connected with a
        ``dispatch_uid`` stays connected, and keeps its name, when disconnected without it.
        """
        disconnected = bool(super().disconnect(receiver, sender=sender, dispatch_uid=dispatch_uid))
        if disconnected:
            names_of(self).forget(receiver, dispatch_uid)
        return disconnected

    def receiver_name(self, func: Receiver) -> str:
        """The name of a receiver in workers, logs and dead letters (see :meth:`connect`).

        The names are kept by :func:`events_celery.receivers.names_of`, beside the receivers'
        options, not on the event.
        """
        return names_of(self).name_of(func)

    def receivers_for_dispatch(self) -> list[Receiver]:
        """The receivers connected now: plain ones in connection order, then ``async`` ones."""
        if not self.receivers:
            return []
        live = self._live_receivers(None)
        if isinstance(live, tuple):  # Django >= 5.0 splits sync and async receivers
            sync_receivers, async_receivers = live
            return [*sync_receivers, *async_receivers]
        return list(live)  # type: ignore[unreachable]  # Django 4.2 returns one list

    def send_event(self, **payload: Any) -> SentEvent:
        """Trigger the event: validate, publish where routed, and run the local receivers.

        Returns:
            ``[(receiver, response_or_exception), ...]`` like ``Signal.send_robust``, with the
            event's metadata as ``.metadata``.

        Raises:
            PayloadValidationError: an argument is missing, extra or of the wrong type.
            django.db.DatabaseError: the outbox row could not be written (``"outbox"`` mode).
            PublishError: only in the ``"direct"`` publish mode, when the broker did not
                confirm the message.
        """
        self.serializer.validate(payload)
        if not self.enabled:
            return SentEvent([], None)
        metadata = EventMetadata.create(
            self.event_type,
            minor_version=self.minor_version,
            source=bus_settings().require_service_name(),
        )
        if _publish is not None:
            _publish(self, metadata, payload)
        return SentEvent(self.dispatch(metadata, payload, from_event_bus=False), metadata)

    def send_event_with_metadata(self, metadata: EventMetadata, **payload: Any) -> SentEvent:
        """Re-emit an event received from the bus with its original metadata.

        Receivers get ``from_event_bus=True``, and the event is never published again.
        """
        if not isinstance(metadata, EventMetadata) or metadata.event_type != self.event_type:
            raise PayloadValidationError(
                self.event_type,
                None,
                f"metadata must be an EventMetadata of this event type, got {metadata!r}",
            )
        self.serializer.validate(payload)
        return self.emit_from_bus(metadata, payload)

    def emit_from_bus(
        self,
        metadata: EventMetadata,
        payload: Mapping[str, Any],
        *,
        receiver: Receiver | None = None,
    ) -> SentEvent:
        """Run receivers of an event that came from the bus (payload already validated).

        Workers use it for every event they receive. A disabled event runs nothing.

        Args:
            metadata: the event's metadata as it travelled.
            payload: the decoded payload.
            receiver: run only this receiver, and let its error propagate (a worker retries
                it); ``None`` runs every connected receiver like ``send_event``.
        """
        if not self.enabled:
            return SentEvent([], None)
        if receiver is None:
            return SentEvent(self.dispatch(metadata, payload, from_event_bus=True), metadata)
        response = self.call_receiver(receiver, metadata, payload, from_event_bus=True)
        return SentEvent([(receiver, response)], metadata)

    def send(self, sender: Any, **named: Any) -> Any:
        """Refused: an event is sent with :meth:`send_event` (validated, with metadata)."""
        raise self._refuse("send")

    def send_robust(self, sender: Any, **named: Any) -> Any:
        """Refused: an event is sent with :meth:`send_event` (validated, with metadata)."""
        raise self._refuse("send_robust")

    async def asend(self, sender: Any, **named: Any) -> Any:
        """Refused: an event is sent with :meth:`send_event` (validated, with metadata)."""
        raise self._refuse("asend")

    async def asend_robust(self, sender: Any, **named: Any) -> Any:
        """Refused: an event is sent with :meth:`send_event` (validated, with metadata)."""
        raise self._refuse("asend_robust")

    def _refuse(self, method: str) -> EventDefinitionError:
        return EventDefinitionError(
            f"{self.event_type}: {method}() would run receivers without validating the payload, "
            "without metadata and without publishing it; call send_event(**payload) on it "
            "instead (send_event_with_metadata for an event received from elsewhere)"
        )

    def dispatch(
        self,
        metadata: EventMetadata,
        payload: Mapping[str, Any],
        *,
        from_event_bus: bool,
    ) -> Responses:
        """Call every connected receiver with an already validated payload."""
        responses: Responses = []
        strict = bus_settings().strict_receivers
        for func in self.receivers_for_dispatch():
            try:
                response = self.call_receiver(
                    func, metadata, payload, from_event_bus=from_event_bus
                )
            except Exception as exc:
                if strict:
                    raise
                logger.error(
                    "%s: receiver %s raised %s (event %s)",
                    self.event_type,
                    self.receiver_name(func),
                    type(exc).__name__,
                    metadata.id,
                    exc_info=exc,
                )
                responses.append((func, exc))
            else:
                responses.append((func, response))
        return responses

    def call_receiver(
        self,
        func: Receiver,
        metadata: EventMetadata,
        payload: Mapping[str, Any],
        *,
        from_event_bus: bool,
    ) -> Any:
        """Call one receiver with the arguments every receiver gets; its errors propagate.

        An ``async def`` receiver runs to completion before this returns.
        """
        if iscoroutinefunction(func):
            func = async_to_sync(func)
        return func(
            signal=self, sender=None, metadata=metadata, from_event_bus=from_event_bus, **payload
        )

    def enable(self) -> None:
        """Let ``send_event`` run receivers and publish again."""
        self.enabled = True

    def disable(self) -> None:
        """Make ``send_event`` validate and then do nothing (no receivers, no publish)."""
        self.enabled = False
