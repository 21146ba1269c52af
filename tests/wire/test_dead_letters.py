"""Dead-letter messages: the original body and plain headers, and why they are parked."""

import json
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from events_celery.wire import (
    HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_ERROR,
    HEADER_ORIGIN,
    HEADER_REASON,
    HEADER_RECEIVER,
    HEADER_TRACEBACK,
    KEPT_PROPERTIES,
    MAX_ERROR,
    MAX_TRACEBACK,
    dead_letter_message,
    parse_time,
    plain_headers,
)
from tests.testapp.events import PING
from tests.wire.messages import (
    AVRO,
    decode,
    encode,
    make_metadata,
)

# --- dead letters ---------------------------------------------------------------------------

DEAD_AT = datetime(2024, 5, 1, 12, 30, 15, 654321, tzinfo=UTC)


def test_plain_headers_keep_text_and_numbers_and_decode_bytes():
    headers = {"text": "a", "count": 3, "ratio": 0.5, "flag": True, "raw": b"caf\xc3\xa9"}
    assert plain_headers(headers) == {
        "text": "a",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "raw": "café",
    }


def test_plain_headers_replace_bytes_that_are_not_utf8():
    assert plain_headers({"raw": b"\xff ok"}) == {"raw": "\ufffd ok"}


def test_plain_headers_drop_what_is_not_text_or_a_number():
    headers = {
        "x-death": [{"queue": "shop.orders", "count": 1}],
        "table": {"a": 1},
        "none": None,
        "at": datetime(2024, 5, 1, tzinfo=UTC),
        "amount": Decimal("1.50"),
        "kept": "yes",
    }
    assert plain_headers(headers) == {"kept": "yes"}


def test_no_headers_are_no_plain_headers():
    assert plain_headers(None) == {}
    assert plain_headers({}) == {}


HEADER_VALUES = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.datetimes(timezones=st.just(UTC)),
)


@given(headers=st.dictionaries(st.text(max_size=10), HEADER_VALUES, max_size=8))
def test_plain_headers_are_the_text_and_numbers_and_survive_json(headers):
    plain = plain_headers(headers)
    assert set(plain) == {k for k, v in headers.items() if isinstance(v, str | bytes | int | float)}
    assert json.loads(json.dumps(plain)) == plain


def test_a_dead_letter_keeps_body_and_plain_headers_and_says_why_and_when():
    headers = {"ce_id": "e-1", "ce_type": b"org.example.test.ping.v1", "x-death": [{"count": 1}]}

    message = dead_letter_message(
        b"\x00\xff not Avro", headers, reason="undecodable", content_type=AVRO, time=DEAD_AT
    )

    assert message.body == b"\x00\xff not Avro"
    assert message.headers == {
        "ce_id": "e-1",
        "ce_type": "org.example.test.ping.v1",
        HEADER_REASON: "undecodable",
        HEADER_DEAD_LETTERED_AT: "2024-05-01T12:30:15.654321Z",
    }
    assert parse_time(message.headers[HEADER_DEAD_LETTERED_AT]) == DEAD_AT


def test_a_failed_receiver_is_named_with_its_error_traceback_attempts_and_origin():
    message = dead_letter_message(
        b"body",
        {"ce_id": "e-2"},
        reason="receiver failed after 3 attempt(s)",
        content_type=AVRO,
        time=DEAD_AT,
        origin="shop/org.example.test.ping.v1",
        receiver="billing.receivers.on_ping",
        error="ValueError: no such customer",
        traceback="Traceback (most recent call last):\nValueError: no such customer\n",
        attempts=3,
    )

    assert {k: v for k, v in message.headers.items() if k != HEADER_DEAD_LETTERED_AT} == {
        "ce_id": "e-2",
        HEADER_REASON: "receiver failed after 3 attempt(s)",
        HEADER_ORIGIN: "shop/org.example.test.ping.v1",
        HEADER_RECEIVER: "billing.receivers.on_ping",
        HEADER_ERROR: "ValueError: no such customer",
        HEADER_TRACEBACK: "Traceback (most recent call last):\nValueError: no such customer\n",
        HEADER_ATTEMPTS: "3",  # every header events_celery adds is text
    }


def test_a_long_error_keeps_its_start_and_a_long_traceback_its_end():
    error = "ValueError: " + "x" * 5000
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: end\n"

    message = dead_letter_message(
        b"body",
        {},
        reason="receiver failed after 1 attempt(s)",
        content_type=AVRO,
        time=DEAD_AT,
        error=error,
        traceback=traceback,
    )

    assert message.headers[HEADER_ERROR] == error[:MAX_ERROR]
    assert len(message.headers[HEADER_TRACEBACK]) == MAX_TRACEBACK
    assert message.headers[HEADER_TRACEBACK].endswith("  frame\nValueError: end\n")


def test_dead_lettering_again_replaces_the_reasons_of_the_first_time():
    earlier = {
        "ce_id": "e-3",
        HEADER_REASON: "the first reason",
        HEADER_ATTEMPTS: "5",
        HEADER_RECEIVER: "an.earlier.receiver",
        HEADER_TRACEBACK: "the first traceback",
    }

    message = dead_letter_message(
        b"body", earlier, reason="the second reason", content_type=AVRO, time=DEAD_AT, attempts=1
    )

    assert message.headers[HEADER_REASON] == "the second reason"
    assert message.headers[HEADER_ATTEMPTS] == "1"
    assert HEADER_RECEIVER not in message.headers  # nothing of the first time is left over
    assert HEADER_TRACEBACK not in message.headers
    assert message.headers["ce_id"] == "e-3"


def test_only_the_properties_that_identify_the_event_are_kept():
    identifying = {
        "message_id": "e-4",
        "type": "org.example.test.ping.v1",
        "timestamp": 1_714_566_615,
        "app_id": "shop",
        "correlation_id": "c-1",
    }
    assert set(identifying) == KEPT_PROPERTIES
    others = {"reply_to": "somewhere", "expiration": "1000", "priority": 9, "content_type": "x/y"}

    message = dead_letter_message(
        b"body",
        {},
        reason="r",
        content_type=AVRO,
        time=DEAD_AT,
        properties={**identifying, **others},
    )

    assert message.properties == {
        **identifying,
        "content_type": AVRO,  # the argument, not the original's property
        "content_encoding": "binary",
        "delivery_mode": 2,
    }


def test_a_body_of_unknown_content_type_is_parked_as_persistent_binary():
    message = dead_letter_message(b"\x01", None, reason="r", content_type=None, time=DEAD_AT)

    assert message.properties == {
        "content_type": "application/octet-stream",
        "content_encoding": "binary",
        "delivery_mode": 2,
    }


@given(event_id=st.uuids(), n=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_a_dead_lettered_event_still_decodes_as_the_event(event_id, n):
    sent = encode(PING, {"n": n}, metadata=make_metadata(PING.event_type, id=event_id))

    parked = dead_letter_message(
        sent.body,
        sent.headers,
        reason="receiver failed after 1 attempt(s)",
        content_type=sent.properties["content_type"],
        time=DEAD_AT,
        receiver="billing.receivers.on_ping",
        properties=sent.properties,
    )

    assert {k: v for k, v in parked.properties.items() if k in KEPT_PROPERTIES} == {
        k: v for k, v in sent.properties.items() if k in KEPT_PROPERTIES
    }
    event = decode(parked)
    assert (event.metadata.id, event.payload) == (event_id, {"n": n})
