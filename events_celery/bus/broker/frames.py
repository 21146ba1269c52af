"""The AMQP 0-9-1 frames of one ``basic.publish``, written directly.

py-amqp builds frames through generic, per-value serialization that costs most of a publish.
An event message has string headers and a fixed set of properties, so its three frames
(method, content header, body) are written here with a few ``struct`` calls. The bytes are
the ones py-amqp writes for the same message (``tests/bus/broker/test_frames.py`` checks it);
headers of other types fall back to py-amqp's serializer.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import amqp

#: ``basic`` class and its ``publish`` method.
BASIC_CLASS, PUBLISH_METHOD = 60, 40
FRAME_END = b"\xce"

_FRAME = struct.Struct(">BHI")  # type, channel, size
_PUBLISH = struct.Struct(">HHH")  # class, method, reserved
_CONTENT_HEADER = struct.Struct(">HHQ")  # class, weight, body size
_OCTET = struct.Struct("B")
_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")
_LONG_LONG = struct.Struct(">Q")
_LONG_STRING = struct.Struct(">cI")

#: Property names and AMQP types, in flag order (the first is bit 15).
PROPERTIES: tuple[tuple[str, str], ...] = tuple(amqp.Message.PROPERTIES)


def _short_string(text: str | bytes) -> bytes:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _OCTET.pack(len(data)) + data


def encode_properties(properties: Mapping[str, Any]) -> bytes:
    """Property flags and list of a content header, as py-amqp writes them."""
    headers = properties.get("application_headers")
    if headers and not all(isinstance(v, str) for v in headers.values()):
        message = amqp.Message(b"", **properties)
        return bytes(message._serialize_properties())  # type: ignore[attr-defined]
    flags = 0
    parts: list[bytes] = []
    for bit, (name, kind) in zip(range(15, 1, -1), PROPERTIES, strict=True):
        value = properties.get(name)
        if value is None:
            continue
        flags |= 1 << bit
        if kind == "s":
            parts.append(
                _short_string(value) if isinstance(value, str) else _OCTET.pack(len(value)) + value
            )
        elif kind == "o":
            parts.append(_OCTET.pack(value))
        elif kind == "L":
            parts.append(_LONG_LONG.pack(value))
        else:  # "F": a table of strings
            table = b"".join(
                _short_string(key)
                + _LONG_STRING.pack(b"S", len(data := text.encode("utf-8", "surrogatepass")))
                + data
                for key, text in value.items()
            )
            parts += (_LONG.pack(len(table)), table)
    return _SHORT.pack(flags) + b"".join(parts)


def publish_frames(
    channel: int,
    frame_max: int,
    exchange: str,
    routing_key: str,
    properties: Mapping[str, Any],
    body: bytes,
    *,
    mandatory: bool = True,
) -> bytes:
    """The frames that publish ``body`` with ``properties`` on ``channel``.

    Args:
        channel: the channel number.
        frame_max: the connection's negotiated largest frame; longer bodies are split.
        exchange: where to publish.
        routing_key: the routing key.
        properties: AMQP properties, headers as ``application_headers``.
        body: the message body.
        mandatory: have the broker return the message when it routes nowhere.
    """
    method = (
        _PUBLISH.pack(BASIC_CLASS, PUBLISH_METHOD, 0)
        + _short_string(exchange)
        + _short_string(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    header = _CONTENT_HEADER.pack(BASIC_CLASS, 0, len(body)) + encode_properties(properties)
    parts = [
        _FRAME.pack(1, channel, len(method)),
        method,
        FRAME_END,
        _FRAME.pack(2, channel, len(header)),
        header,
        FRAME_END,
    ]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        parts += (_FRAME.pack(3, channel, len(piece)), piece, FRAME_END)
    return b"".join(parts)


#: ``basic.ack``: class, method, delivery tag, the ``multiple`` bit.
ACK_METHOD = 80
_ACK = struct.Struct(">HHQB")


def ack_frame(channel: int, delivery_tag: int, *, multiple: bool = False) -> bytes:
    """The frame of one ``basic.ack`` on ``channel``, as py-amqp writes it.

    Acknowledgements of many messages are written together (one system call) this way.
    """
    payload = _ACK.pack(BASIC_CLASS, ACK_METHOD, delivery_tag, 1 if multiple else 0)
    return _FRAME.pack(1, channel, len(payload)) + payload + FRAME_END
