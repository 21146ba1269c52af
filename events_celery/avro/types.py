"""The type tree: what a payload's Python annotations mean for Avro.

:func:`~events_celery.avro.resolve.resolve_payload` turns an event's ``data`` mapping into a
tree of the small nodes defined here. Every later step (schema, validation, encode/decode
converters) is a fold over this tree, so annotations are introspected once, when the event is
defined, and never per message.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Final
from uuid import UUID

import attrs

from events_celery.avro.codec import Codec

__all__ = [
    "AVRO_NAME",
    "NO_DEFAULT",
    "PAYLOAD_RECORD_NAME",
    "SCALAR_SCHEMAS",
    "ArrayNode",
    "CodecNode",
    "DecimalNode",
    "EnumNode",
    "FieldNode",
    "MapNode",
    "OptionalNode",
    "RecordNode",
    "ScalarNode",
    "TypeNode",
]

AVRO_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
"""What the Avro specification allows as a record, enum, field or symbol name."""

PAYLOAD_RECORD_NAME: Final = "Payload"
"""Name of the top-level record; its namespace is the event type."""

SCALAR_SCHEMAS: Final[Mapping[type, str | dict[str, str]]] = {
    bool: "boolean",
    int: "long",
    float: "double",
    str: "string",
    bytes: "bytes",
    datetime: {"type": "long", "logicalType": "timestamp-micros"},
    date: {"type": "int", "logicalType": "date"},
    UUID: {"type": "string", "logicalType": "uuid"},
}
"""Python types with a fixed Avro schema, which fastavro writes and reads natively."""


class _Missing(enum.Enum):
    NO_DEFAULT = enum.auto()


NO_DEFAULT: Final = _Missing.NO_DEFAULT
"""Marks a field without a default value (``None`` is a default like any other)."""


@attrs.frozen
class ScalarNode:
    """A value of one of :data:`SCALAR_SCHEMAS`' types."""

    python_type: type
    avro_schema: str | dict[str, str]


@attrs.frozen
class DecimalNode:
    """A :class:`~decimal.Decimal` carried as Avro ``bytes``/``decimal``."""

    precision: int
    scale: int


@attrs.frozen
class EnumNode:
    """An :class:`~enum.Enum` member, carried as an Avro enum symbol (the member's name)."""

    enum_class: type[enum.Enum]
    symbols: tuple[str, ...]

    @property
    def name(self) -> str:
        """The Avro name of the enum: the class name."""
        return self.enum_class.__name__


@attrs.frozen
class ArrayNode:
    """A ``list[T]``."""

    items: TypeNode


@attrs.frozen
class MapNode:
    """A ``dict[str, T]``."""

    values: TypeNode


@attrs.frozen
class OptionalNode:
    """A ``T | None``."""

    inner: TypeNode


@attrs.frozen
class CodecNode:
    """A value of a type with a registered custom :class:`~events_celery.avro.codec.Codec`."""

    codec: Codec

    @property
    def name(self) -> str | None:
        """The Avro name the codec's schema defines, if it is a named type."""
        schema = self.codec.avro_schema
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            return str(schema["name"])
        return None


@attrs.frozen
class FieldNode:
    """One field of a record.

    Attributes:
        name: the attribute (and Avro field) name.
        init_name: the ``__init__`` argument that sets it (differs for private attributes).
        node: the field's type.
        default: the Python default value, or :data:`NO_DEFAULT`.
    """

    name: str
    init_name: str
    node: TypeNode
    default: object = NO_DEFAULT


@attrs.frozen(eq=False)
class RecordNode:
    """An attrs class (or, with ``record_class=None``, the payload itself) as an Avro record.

    Records compare by identity: a class used in several places is one node, so it is
    defined once in the schema and its converters are compiled once.
    """

    name: str
    record_class: type | None
    fields: tuple[FieldNode, ...]


TypeNode = (
    ScalarNode
    | DecimalNode
    | EnumNode
    | ArrayNode
    | MapNode
    | OptionalNode
    | RecordNode
    | CodecNode
)
"""Any node of the type tree."""
