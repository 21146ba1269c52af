"""Event metadata: the CloudEvents attributes that travel beside every payload."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import metadata as package_metadata
from typing import Any

import attrs

from events_celery.exceptions import MetadataError

SPEC_VERSION = "1.0"


@cache
def library_version() -> str:
    """Version of the installed events_celery distribution."""
    try:
        return package_metadata.version("events_celery")
    except package_metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@cache
def _hostname() -> str:
    return socket.gethostname()


def _require_utc(instance: Any, attribute: attrs.Attribute[datetime], value: datetime) -> None:
    if not isinstance(value, datetime):
        raise MetadataError(f"EventMetadata.time must be a datetime, got {type(value).__name__}")
    if value.utcoffset() != timedelta(0):
        raise MetadataError(
            f"EventMetadata.time must be timezone-aware UTC, got {value.isoformat()}; "
            "use datetime.now(UTC)"
        )


def _check_event_type(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise MetadataError(f"EventMetadata.event_type must be a non-empty str, got {value!r}")


def _check_minor_version(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MetadataError(f"EventMetadata.minor_version must be an int >= 0, got {value!r}")


def _check_text(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise MetadataError(
            f"EventMetadata.{attribute.name} must be a non-empty str, got {value!r}"
        )


def _to_uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise MetadataError(f"EventMetadata.id must be a UUID, got {value!r}") from exc


@attrs.frozen
class EventMetadata:
    """Who sent an event, when, and which event it is.

    Build one with :meth:`create` (fresh id and time); receivers get the instance that
    travelled with the event, so ``metadata.id`` is the same in every service and on every
    redelivery: use it to make receivers idempotent.

    Attributes:
        id: unique id of this event.
        event_type: the event type, e.g. ``org.example.shop.order.placed.v1``.
        minor_version: minor version of the payload schema (compatible changes).
        source: name of the service that sent the event (``EVENT_BUS_SERVICE_NAME``).
        source_host: host name of the machine that sent it.
        time: when it was sent, timezone-aware UTC.
        spec_version: CloudEvents spec version, ``"1.0"``.
        source_lib: events_celery version of the sender.
    """

    id: uuid.UUID = attrs.field(converter=_to_uuid)
    event_type: str = attrs.field(validator=_check_event_type)
    minor_version: int = attrs.field(validator=_check_minor_version)
    source: str = attrs.field(validator=_check_text)
    source_host: str = attrs.field(validator=_check_text)
    time: datetime = attrs.field(validator=_require_utc)
    spec_version: str = attrs.field(default=SPEC_VERSION, validator=_check_text)
    source_lib: str = attrs.field(factory=library_version, validator=_check_text)

    @classmethod
    def create(cls, event_type: str, *, minor_version: int = 0, source: str) -> EventMetadata:
        """Metadata for a new event: a fresh UUID4 id, the current UTC time and this host."""
        return cls(
            id=uuid.uuid4(),
            event_type=event_type,
            minor_version=minor_version,
            source=source,
            source_host=_hostname(),
            time=datetime.now(UTC),
        )

    def to_headers(self) -> dict[str, str]:
        """The message headers that carry this metadata (all values are strings).

        The same as :func:`events_celery.wire.metadata_headers`, where the wire format lives.
        """
        from events_celery.wire import metadata_headers  # the wire module builds on this one

        return metadata_headers(self)

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any]) -> EventMetadata:
        """Rebuild metadata from message headers.

        The same as :func:`events_celery.wire.metadata_from_headers`, where the wire format
        lives.

        Raises:
            MetadataError: headers are missing or malformed; the message names every one of
                them, each with what is wrong.
        """
        from events_celery.wire import metadata_from_headers  # the wire module builds on this one

        return metadata_from_headers(headers)
