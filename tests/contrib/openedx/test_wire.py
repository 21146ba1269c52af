"""Open edX events on events_celery's wire format, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid1

import pytest

from tests.contrib.openedx import require_openedx_events

require_openedx_events()

from openedx_events.data import EventsMetadata  # noqa: E402
from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes  # noqa: E402
from openedx_events.learning.signals import COURSE_UNENROLLMENT_COMPLETED  # noqa: E402

from events_celery.avro.schema import fingerprint  # noqa: E402
from events_celery.contrib.openedx import wire  # noqa: E402
from events_celery.metadata import EventMetadata  # noqa: E402
from events_celery.wire import (  # noqa: E402
    HEADER_FINGERPRINT,
    HEADER_PARTITION_KEY,
    PoisonMessageError,
)
from tests.contrib.openedx.enrollments import (  # noqa: E402
    COURSE_ENROLLMENT_CREATED,
    KEY_FIELD,
    enrollment,
)

TYPE = COURSE_ENROLLMENT_CREATED.event_type


def metadata(**changes: object) -> EventsMetadata:
    fields: dict[str, object] = {
        "event_type": TYPE,
        "id": uuid1(),
        "minorversion": 3,
        "source": "openedx/lms/web",
        "sourcehost": "lms-1.example.org",
        "time": datetime(2026, 11, 2, 10, 30, 15, 654321, tzinfo=UTC),
        "sourcelib": (10, 5, 0),
    }
    return EventsMetadata(**{**fields, **changes})


def read(message: wire.OutgoingMessage, **changes: object) -> wire.ReceivedOpenedxEvent:
    options: dict[str, object] = {
        "content_type": message.properties["content_type"],
        "max_size": 1 << 20,
        "routing_key": TYPE,
    }
    return wire.decode(message.headers, message.body, **{**options, **changes})  # type: ignore[arg-type]


def test_the_body_is_what_openedx_events_own_serializer_writes() -> None:
    data = {"enrollment": enrollment("ada")}
    message = wire.encode(COURSE_ENROLLMENT_CREATED, data, metadata(), event_key_field=KEY_FIELD)
    assert message.body == serialize_event_data_to_bytes(data, COURSE_ENROLLMENT_CREATED)


def test_event_data_and_every_metadata_field_survive_the_round_trip() -> None:
    sent = metadata()
    data = {"enrollment": enrollment("ada")}
    message = wire.encode(COURSE_ENROLLMENT_CREATED, data, sent, event_key_field=KEY_FIELD)
    received = read(message)
    assert received.signal is COURSE_ENROLLMENT_CREATED
    assert received.metadata == sent
    assert received.event_data == data


def test_the_headers_are_events_celery_wire_headers() -> None:
    sent = metadata()
    message = wire.encode(
        COURSE_ENROLLMENT_CREATED,
        {"enrollment": enrollment("ada")},
        sent,
        event_key_field=KEY_FIELD,
    )
    ours = EventMetadata.from_headers(message.headers)
    assert (ours.id, ours.event_type, ours.minor_version) == (sent.id, TYPE, 3)
    assert (ours.source, ours.source_host, ours.time) == (sent.source, sent.sourcehost, sent.time)
    assert ours.source_lib == "10.5.0"
    assert message.headers[HEADER_PARTITION_KEY] == "course-v1:edX+DemoX+2026"
    schema = wire.signal_codec(COURSE_ENROLLMENT_CREATED).serializer.schema
    assert message.headers[HEADER_FINGERPRINT] == fingerprint(schema)
    assert message.properties["message_id"] == str(sent.id)
    assert message.properties["app_id"] == "openedx/lms/web"


def test_an_event_key_field_that_names_no_field_is_refused_with_the_path() -> None:
    with pytest.raises(ValueError, match=r"'enrollment.course.nope'.*'nope'"):
        wire.encode(
            COURSE_ENROLLMENT_CREATED,
            {"enrollment": enrollment("ada")},
            metadata(),
            event_key_field="enrollment.course.nope",
        )


def message_of_enrollment() -> wire.OutgoingMessage:
    return wire.encode(
        COURSE_ENROLLMENT_CREATED,
        {"enrollment": enrollment("ada")},
        metadata(),
        event_key_field=None,
    )


def test_a_message_of_another_schema_is_refused_not_guessed_at() -> None:
    message = message_of_enrollment()
    message.headers[HEADER_FINGERPRINT] = "0123456789abcdef"
    with pytest.raises(PoisonMessageError, match="writer schema fingerprint 0123456789abcdef"):
        read(message)


def test_a_type_header_that_disagrees_with_the_routing_key_is_refused() -> None:
    with pytest.raises(PoisonMessageError, match="routing key decides"):
        read(message_of_enrollment(), routing_key=COURSE_UNENROLLMENT_COMPLETED.event_type)


def test_an_event_type_no_open_edx_signal_defines_is_refused() -> None:
    message = message_of_enrollment()
    message.headers["ce_type"] = "org.example.unknown.v1"
    with pytest.raises(PoisonMessageError, match="no Open edX signal defines it"):
        read(message, routing_key="org.example.unknown.v1")


def test_a_truncated_body_is_refused() -> None:
    message = message_of_enrollment()
    with pytest.raises(PoisonMessageError, match="undecodable Avro body"):
        wire.decode(
            message.headers,
            message.body[:-5],
            content_type="application/avro",
            max_size=1 << 20,
            routing_key=TYPE,
        )


def test_missing_headers_are_all_named() -> None:
    message = message_of_enrollment()
    del message.headers["ce_id"], message.headers["ce_time"]
    with pytest.raises(PoisonMessageError, match="'ce_id' is missing; 'ce_time' is missing"):
        read(message)


def test_a_body_claiming_more_items_than_bytes_is_poison_before_decoding() -> None:
    """The Open edX codec bounds decoding as events_celery's own does (avro.bounds)."""
    from types import SimpleNamespace

    from fastavro import parse_schema

    from events_celery.avro.bounds import compile_item_bound
    from tests.avro.test_bounds import EMPTY_RECORD, empty_items_schema, zigzag

    schema = empty_items_schema(EMPTY_RECORD)
    codec = wire.SignalCodec(
        signal=SimpleNamespace(event_type=TYPE),  # type: ignore[arg-type]
        serializer=None,  # type: ignore[arg-type]
        deserializer=None,  # type: ignore[arg-type]
        parsed_schema=parse_schema(schema),
        fingerprint=fingerprint(schema),
        item_bound=compile_item_bound(schema),
    )
    with pytest.raises(PoisonMessageError, match="claims 1099511627776 items in the 1 bytes left"):
        codec.decode(zigzag(1 << 40) + b"\x00")
