"""The frames of a basic.publish are the bytes py-amqp itself writes for the same message."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from hypothesis import given
from hypothesis import strategies as st

from events_celery.bus.broker.frames import ack_frame, encode_properties, publish_frames

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
short_text = text.filter(lambda t: len(t.encode()) < 256)
properties_strategy = st.fixed_dictionaries(
    {},
    optional={
        "content_type": short_text,
        "content_encoding": short_text,
        "application_headers": st.dictionaries(short_text, text, max_size=12),
        "delivery_mode": st.integers(1, 2),
        "priority": st.integers(0, 9),
        "correlation_id": short_text,
        "message_id": short_text,
        "timestamp": st.integers(0, 2**40),
        "type": short_text,
        "app_id": short_text,
    },
)


def py_amqp_frames(
    channel: int, frame_max: int, exchange: str, key: str, properties: Any, body: bytes
) -> bytes:
    written: list[bytes] = []
    transport = SimpleNamespace(write=lambda data: written.append(bytes(data)))
    write = frame_writer(SimpleNamespace(frame_max=frame_max, bytes_sent=0), transport)
    args = dumps("Bssbb", (0, exchange, key, True, False))
    write(1, channel, spec.Basic.Publish, args, amqp.Message(body, **properties))
    return b"".join(written)


@given(
    properties=properties_strategy,
    exchange=short_text,
    key=short_text,
    body=st.binary(max_size=600),
    channel=st.integers(1, 2047),
    frame_max=st.sampled_from([4096, 131072]),
)
def test_publish_frames_are_py_amqps(
    properties: dict[str, Any], exchange: str, key: str, body: bytes, channel: int, frame_max: int
) -> None:
    ours = publish_frames(channel, frame_max, exchange, key, properties, body)

    assert ours == py_amqp_frames(channel, frame_max, exchange, key, properties, body)


def test_a_body_longer_than_a_frame_is_split_as_py_amqp_splits_it() -> None:
    body = bytes(range(256)) * 100  # 25,600 bytes across frames of 4,088
    properties = {"message_id": "m", "application_headers": {"a": "b"}}

    ours = publish_frames(1, 4096, "ex", "key", properties, body)

    assert ours == py_amqp_frames(1, 4096, "ex", "key", properties, body)


@given(properties=properties_strategy)
def test_properties_are_written_as_py_amqp_writes_them(properties: dict[str, Any]) -> None:
    theirs = amqp.Message(b"", **properties)._serialize_properties()

    assert encode_properties(properties) == theirs


def test_headers_of_other_types_use_py_amqps_serializer() -> None:
    properties = {"application_headers": {"count": 3, "flag": True, "text": "x"}}

    assert encode_properties(properties) == amqp.Message(b"", **properties)._serialize_properties()


@pytest.mark.parametrize(("tag", "multiple"), [(1, False), (2**40 + 7, True)])
def test_an_ack_frame_is_the_one_py_amqp_writes(tag: int, multiple: bool) -> None:
    payload = struct.pack(">HH", 60, 80) + dumps("Lb", (tag, multiple))
    expected = struct.pack(">BHI", 1, 7, len(payload)) + payload + b"\xce"

    assert ack_frame(7, tag, multiple=multiple) == expected
