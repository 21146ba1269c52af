"""Event metadata: the CloudEvents attributes that travel beside every payload.

The headers that carry them are defined here, with the attributes they carry (design section
4); :mod:`events_celery.wire` builds the rest of the message format on them and names them
too. The metadata imports nothing of the wire format, so the two never import each other.
"""

from __future__ import annotations

import re
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

AVRO_CONTENT_TYPE = "application/avro"

# Header names of the metadata (design section 4; the rest of the format is in wire.py).
# ``ce_*`` are CloudEvents attributes.
HEADER_SPEC_VERSION = "ce_specversion"
HEADER_ID = "ce_id"
HEADER_TYPE = "ce_type"
HEADER_SOURCE = "ce_source"
HEADER_TIME = "ce_time"
HEADER_MINOR_VERSION = "ce_minorversion"
HEADER_DATA_CONTENT_TYPE = "ce_datacontenttype"
HEADER_SOURCE_HOST = "sourcehost"
HEADER_SOURCE_LIB = "sourcelib"

#: The headers :meth:`EventMetadata.from_headers` needs, in the order problems are named.
REQUIRED_HEADERS = (
    HEADER_SPEC_VERSION,
    HEADER_ID,
    HEADER_TYPE,
    HEADER_SOURCE,
    HEADER_TIME,
    HEADER_MINOR_VERSION,
    HEADER_SOURCE_HOST,
    HEADER_SOURCE_LIB,
)

_DIGITS = re.compile(r"[0-9]+")


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


# --- time (RFC 3339, as ce_time carries it) -----------------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 text of a UTC datetime, with microseconds and a ``Z`` suffix."""
    # isoformat pads the year to four digits, where strftime("%Y") does not before year 1000.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Raises:
        ValueError: the text is not an RFC 3339 timestamp with a UTC offset.
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range in UTC") from None


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
        """The message headers that carry this metadata (all values are strings)."""
        return {
            HEADER_SPEC_VERSION: self.spec_version,
            HEADER_ID: str(self.id),
            HEADER_TYPE: self.event_type,
            HEADER_SOURCE: self.source,
            HEADER_TIME: format_time(self.time),
            HEADER_MINOR_VERSION: str(self.minor_version),
            HEADER_DATA_CONTENT_TYPE: AVRO_CONTENT_TYPE,
            HEADER_SOURCE_HOST: self.source_host,
            HEADER_SOURCE_LIB: self.source_lib,
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any]) -> EventMetadata:
        """Rebuild metadata from message headers.

        Raises:
            MetadataError: headers are missing or malformed; the message names every one of
                them, each with what is wrong.
        """
        problems: list[str] = []
        text: dict[str, str] = {}
        for name in REQUIRED_HEADERS:
            value = headers.get(name)
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    problems.append(f"{name!r} is not UTF-8 text")
                    continue
            if value is None:
                problems.append(f"{name!r} is missing")
            elif not isinstance(value, str):
                problems.append(f"{name!r} is of type {type(value).__name__}, not text")
            elif not value:
                problems.append(f"{name!r} is empty")
            else:
                text[name] = value
        minor = text.get(HEADER_MINOR_VERSION)
        if minor is not None and not _DIGITS.fullmatch(minor):
            problems.append(f"{HEADER_MINOR_VERSION!r} is {minor!r}, not a number")
        time: datetime | None = None
        if HEADER_TIME in text:
            try:
                time = parse_time(text[HEADER_TIME])
            except ValueError as exc:
                problems.append(f"{HEADER_TIME!r}: {exc}")
        if HEADER_ID in text:
            try:
                uuid.UUID(text[HEADER_ID])
            except ValueError:
                problems.append(f"{HEADER_ID!r} is {text[HEADER_ID]!r}, not a UUID")
        if problems:
            raise MetadataError("message headers: " + "; ".join(problems))
        assert minor is not None
        assert time is not None
        return cls(
            id=text[HEADER_ID],
            event_type=text[HEADER_TYPE],
            minor_version=int(minor),
            source=text[HEADER_SOURCE],
            source_host=text[HEADER_SOURCE_HOST],
            time=time,
            spec_version=text[HEADER_SPEC_VERSION],
            source_lib=text[HEADER_SOURCE_LIB],
        )
