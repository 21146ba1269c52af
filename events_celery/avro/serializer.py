"""PayloadSerializer: one event's payload as an Avro schema, validated, encoded and decoded.

Creating a serializer only resolves the payload types (cheap, and where unsupported types are
refused). The schema, fastavro's parsed schema and the converters are built on first use and
cached, because every event definition creates a serializer at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from events_celery.avro import codec
from events_celery.avro.bounds import (
    DEFAULT_MAX_ITEMS,
    ItemBound,
    ItemBoundError,
    compile_item_bound,
)
from events_celery.avro.codec import CodecRegistry
from events_celery.avro.convert import Converter, compile_decoder, compile_encoder
from events_celery.avro.resolve import resolve_payload
from events_celery.avro.schema import build_schema, fingerprint
from events_celery.avro.types import RecordNode
from events_celery.avro.validate import compile_payload_validator
from events_celery.exceptions import DecodeError, PayloadValidationError, SerializationError

__all__ = ["PayloadSerializer"]

_WRITER_CACHE_SIZE = 32


class PayloadSerializer:
    """Validates, encodes and decodes the payload of one event type.

    Example::

        serializer = PayloadSerializer("org.example.shop.order.placed.v1", {"order": OrderData})
        serializer.validate({"order": order})
        body = serializer.encode({"order": order})
        assert serializer.decode(body) == {"order": order}

    Args:
        event_type: the event type; it is the namespace of the schema's records.
        data: payload kwarg name → type (an attrs class or a supported plain type), in the
            order the fields are written.
        codec_registry: custom codecs; defaults to :data:`events_celery.avro.codecs`.
        max_items: how many list and dict items one payload may hold, all together; a body
            that claims more, or more items than it has bytes left, is refused before it is
            decoded (see :mod:`events_celery.avro.bounds`).

    Raises:
        UnsupportedTypeError: a type in ``data`` cannot be carried in Avro; the message names
            the event type and the dotted field path.
        InvalidEventTypeError: ``event_type`` is not a valid Avro namespace.
    """

    def __init__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        codec_registry: CodecRegistry | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        self.event_type = event_type
        self.max_items = max_items
        self.codec_registry = codec.codecs if codec_registry is None else codec_registry
        self._root: RecordNode = resolve_payload(event_type, data, self.codec_registry)
        # id(writer schema) -> (writer schema, parsed writer schema, its item check); the
        # schema is kept so its id cannot be reused by another object while the entry exists.
        self._writers: dict[int, tuple[Any, Any, ItemBound | None]] = {}

    def __repr__(self) -> str:
        return f"PayloadSerializer({self.event_type!r})"

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The Avro schema of the payload record (JSON form; treat it as read-only)."""
        return build_schema(self._root, self.event_type)

    @functools.cached_property
    def parsed_schema(self) -> Any:
        """The schema as parsed by fastavro (built once, on first use)."""
        return parse_schema(self.schema)

    @functools.cached_property
    def _item_bound(self) -> ItemBound | None:
        return compile_item_bound(self.schema)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The CRC-64-AVRO fingerprint of :attr:`schema` (see :func:`.fingerprint`)."""
        return fingerprint(self.schema)

    def validate(self, payload: Mapping[str, Any]) -> None:
        """Check that ``payload`` has exactly the declared kwargs, each of its declared type.

        Falsy values (``0``, ``""``, ``False``, ``[]``) are values like any other.

        Raises:
            PayloadValidationError: a kwarg is missing or extra, or a value anywhere in the
                tree has the wrong type or does not fit (naive datetime, Decimal that would
                need rounding, int beyond 64 bits...). The message names the field path.
        """
        self._validator(payload)

    def encode(self, payload: Mapping[str, Any]) -> bytes:
        """The Avro binary encoding (schemaless) of a payload that :meth:`validate` accepted.

        Raises:
            SerializationError: fastavro or a custom codec could not encode the payload.
            PayloadValidationError: the payload holds more list and dict items than
                ``max_items``, so no consumer would decode it.
        """
        try:
            record = self._to_record(payload)
            out = BytesIO()
            schemaless_writer(out, self.parsed_schema, record)
        except Exception as exc:
            raise SerializationError(
                f"{self.event_type}: cannot encode the payload as Avro ({type(exc).__name__}: "
                f"{exc}); call validate() first to find the offending field"
            ) from exc
        body = out.getvalue()
        if self._item_bound is not None:
            try:
                self._item_bound(body, self.max_items)
            except ItemBoundError as exc:
                raise PayloadValidationError(
                    self.event_type, exc.field or None, exc.problem
                ) from exc
        return body

    def decode(self, body: bytes, writer_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The payload kwargs encoded in ``body``, with attrs instances rebuilt.

        Args:
            body: Avro binary, as produced by :meth:`encode`.
            writer_schema: the schema ``body`` was written with, when it is not this
                serializer's own (an older or newer version of the event); the data is then
                resolved from that schema to this one.

        Raises:
            DecodeError: the bytes are truncated or malformed, claim more list or dict items
                than they have bytes or than ``max_items`` (checked before anything is
                decoded), the writer schema cannot be resolved to this one, or a payload class
                refused the decoded values.
        """
        record: Any
        try:
            stream = BytesIO(body)
            if writer_schema is None:
                if self._item_bound is not None:
                    self._item_bound(body, self.max_items)
                record = schemaless_reader(stream, self.parsed_schema, None)
            else:
                writer, item_bound = self._parsed_writer(writer_schema)
                if item_bound is not None:
                    item_bound(body, self.max_items)
                record = schemaless_reader(stream, writer, self.parsed_schema)
            left_over = len(body) - stream.tell()
            if left_over:
                raise ValueError(
                    f"{left_over} bytes are left over after the payload, so it was not "
                    "written with the schema used to read it"
                )
            if writer_schema is None:
                return self._from_record(record)
            return self._from_resolved_record(record)
        except Exception as exc:
            size = f"{len(body)} bytes" if isinstance(body, bytes | bytearray) else repr(type(body))
            raise DecodeError(
                f"{self.event_type}: cannot decode the Avro payload ({size}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _parsed_writer(self, writer_schema: Mapping[str, Any]) -> tuple[Any, ItemBound | None]:
        cached = self._writers.get(id(writer_schema))
        if cached is not None and cached[0] is writer_schema:
            return cached[1], cached[2]
        if len(self._writers) >= _WRITER_CACHE_SIZE:
            self._writers.clear()
        parsed = parse_schema(dict(writer_schema))
        item_bound = compile_item_bound(writer_schema)
        self._writers[id(writer_schema)] = (writer_schema, parsed, item_bound)
        return parsed, item_bound

    @functools.cached_property
    def _validator(self) -> Callable[[Mapping[str, Any]], None]:
        return compile_payload_validator(self.event_type, self._root)

    @functools.cached_property
    def _to_record(self) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
        memo: dict[RecordNode, Converter] = {}
        steps = tuple(
            (field.name, encode)
            for field in self._root.fields
            if (encode := compile_encoder(field.node, self.event_type, memo)) is not None
        )
        if not steps:
            return lambda payload: payload

        def to_record(payload: Mapping[str, Any]) -> Mapping[str, Any]:
            record = dict(payload)
            for name, encode in steps:
                record[name] = encode(record[name])
            return record

        return to_record

    @functools.cached_property
    def _from_record(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return self._record_decoder(resolving=False)

    @functools.cached_property
    def _from_resolved_record(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return self._record_decoder(resolving=True)

    def _record_decoder(self, *, resolving: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
        memo: dict[RecordNode, Converter] = {}
        steps = tuple(
            (field.name, decode)
            for field in self._root.fields
            if (decode := compile_decoder(field.node, memo, resolving=resolving)) is not None
        )

        def from_record(record: dict[str, Any]) -> dict[str, Any]:
            for name, decode in steps:
                record[name] = decode(record[name])
            return record

        return from_record
