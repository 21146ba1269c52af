"""Field defaults: attrs defaults to Avro JSON defaults, and Avro JSON defaults back.

An Avro field default is written in JSON: bytes as a string of code points 0-255, a
timestamp as its long, a decimal as the string of its two's-complement bytes. Schema
evolution needs them (a reader fills a field the writer did not send from its default), and
fastavro hands a filled-in default back in that JSON form, without the logical-type
conversion it applies to values it reads, so decoding with a writer schema converts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any, Final
from uuid import UUID

from events_celery.avro.types import (
    NO_DEFAULT,
    ArrayNode,
    CodecNode,
    DecimalNode,
    EnumNode,
    FieldNode,
    MapNode,
    OptionalNode,
    RecordNode,
    ScalarNode,
    TypeNode,
)
from events_celery.avro.validate import Invalid, Validator, compile_validator

__all__ = ["DefaultEncoder", "default_reader"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE: Final = date(1970, 1, 1)
_MICROSECOND: Final = timedelta(microseconds=1)


class DefaultEncoder:
    """Turns attrs defaults into the JSON form Avro field defaults take.

    Returns :data:`~events_celery.avro.types.NO_DEFAULT` for a default that cannot be
    represented (a non-finite float, a value not of the field's type, a codec value that is
    not a plain JSON scalar), so the field simply has no Avro default.
    """

    def __init__(self) -> None:
        self._validators: dict[RecordNode, Validator] = {}

    def field_default(self, field: FieldNode) -> Any:
        if field.default is NO_DEFAULT:
            return NO_DEFAULT
        try:
            compile_validator(field.node, self._validators)(field.default)
        except Invalid:
            return NO_DEFAULT
        return self.encode(field.node, field.default)

    def encode(self, node: TypeNode, value: Any) -> Any:
        if isinstance(node, OptionalNode):
            return None if value is None else self.encode(node.inner, value)
        if isinstance(node, ScalarNode):
            return _scalar_default(value)
        if isinstance(node, DecimalNode):
            return _decimal_default(node, value)
        if isinstance(node, EnumNode):
            return value.name
        if isinstance(node, ArrayNode):
            items = [self.encode(node.items, item) for item in value]
            return NO_DEFAULT if NO_DEFAULT in items else items
        if isinstance(node, MapNode):
            values = {key: self.encode(node.values, item) for key, item in value.items()}
            return NO_DEFAULT if NO_DEFAULT in values.values() else values
        if isinstance(node, CodecNode):
            try:
                return _json_default(node.codec.to_avro(value))
            except Exception:  # a codec that cannot convert its default: leave it out
                return NO_DEFAULT
        return self._record_default(node, value)

    def _record_default(self, node: RecordNode, value: Any) -> Any:
        result = {}
        for field in node.fields:
            encoded = self.encode(field.node, getattr(value, field.name))
            if encoded is NO_DEFAULT:
                return NO_DEFAULT
            if isinstance(field.node, OptionalNode):
                # A union value in a default is read as the union's first branch, which is
                # the value branch only when the field's own default is a non-None value.
                own = self.field_default(field)
                value_first = own is not NO_DEFAULT and own is not None
                if (encoded is None) == value_first:
                    return NO_DEFAULT
            result[field.name] = encoded
        return result


def _scalar_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MICROSECOND
    if isinstance(value, date):
        return (value - _EPOCH_DATE).days
    if isinstance(value, UUID):
        return str(value)
    return _json_default(value)


def _json_default(value: Any) -> Any:
    """A plain value as Avro JSON: bytes as one code point per byte; no NaN or infinity."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else NO_DEFAULT
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return NO_DEFAULT


def _decimal_default(node: DecimalNode, value: Decimal) -> str:
    quantized = value.quantize(Decimal(1).scaleb(-node.scale), context=Context(prec=node.precision))
    sign, digits, _ = quantized.as_tuple()
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    size = (unscaled.bit_length() + 8) // 8
    return unscaled.to_bytes(size, "big", signed=True).decode("latin-1")


def default_reader(node: ScalarNode | DecimalNode) -> Callable[[Any], Any] | None:
    """A function accepting a value as fastavro read it *or* as a JSON default, or ``None``.

    Only types whose JSON default differs from fastavro's decoded value need one; the
    function checks the value's type, so it is a no-op on regularly decoded values.
    """
    if isinstance(node, DecimalNode):
        context = Context(prec=node.precision)
        scale = -node.scale

        def read_decimal(value: Any) -> Any:
            if type(value) is not str:
                return value
            unscaled = int.from_bytes(value.encode("latin-1"), "big", signed=True)
            return Decimal(unscaled).scaleb(scale, context)

        return read_decimal
    return _SCALAR_READERS.get(node.python_type)


_SCALAR_READERS: dict[type, Callable[[Any], Any]] = {
    bytes: lambda value: value.encode("latin-1") if type(value) is str else value,
    float: lambda value: float(value) if type(value) is int else value,
    datetime: lambda value: _EPOCH + value * _MICROSECOND if type(value) is int else value,
    date: lambda value: _EPOCH_DATE + timedelta(days=value) if type(value) is int else value,
    UUID: lambda value: UUID(value) if type(value) is str else value,
}
