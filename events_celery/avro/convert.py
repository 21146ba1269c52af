"""Precompiled converters between payload values and the records fastavro reads and writes.

fastavro already writes and reads ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``datetime``, ``date`` and ``UUID`` itself, so those values pass through untouched: their
converter is ``None`` and a container holding only such values is not copied. Only attrs
instances (to and from dicts), enum members (to and from symbols), decimals (to the schema's
scale) and custom codecs need work. Each converter is a closure built once per type node.

Optional records, enums, lists and maps are written in fastavro's ``(branch name, value)``
union notation, which spares fastavro from validating the value against every union branch.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Context, Decimal
from operator import attrgetter
from typing import Any

from events_celery.avro.defaults import default_reader
from events_celery.avro.types import (
    ArrayNode,
    CodecNode,
    DecimalNode,
    EnumNode,
    MapNode,
    OptionalNode,
    RecordNode,
    ScalarNode,
    TypeNode,
)

__all__ = ["Converter", "compile_decoder", "compile_encoder"]

Converter = Callable[[Any], Any]
"""Converts one value; ``None`` in its place means the value passes through as is."""


def compile_encoder(
    node: TypeNode, namespace: str, memo: dict[RecordNode, Converter]
) -> Converter | None:
    """Build the function turning a payload value into what fastavro writes, or ``None``.

    Args:
        node: the value's type node.
        namespace: the Avro namespace named types live in (for union branch names).
        memo: converters of records already compiled in this tree.
    """
    if isinstance(node, ScalarNode):
        return None
    if isinstance(node, DecimalNode):
        quantum = Decimal(1).scaleb(-node.scale)
        context = Context(prec=node.precision)
        # fastavro refuses a Decimal with more places than the scale, even trailing zeros.
        return lambda value: value.quantize(quantum, context=context)
    if isinstance(node, EnumNode):
        return attrgetter("_name_")
    if isinstance(node, CodecNode):
        return node.codec.to_avro
    if isinstance(node, ArrayNode):
        return _each_item(compile_encoder(node.items, namespace, memo))
    if isinstance(node, MapNode):
        return _each_value(compile_encoder(node.values, namespace, memo))
    if isinstance(node, OptionalNode):
        return _optional_encoder(node.inner, namespace, memo)
    encoder = memo.get(node)
    if encoder is None:
        encoder = memo[node] = _record_encoder(node, namespace, memo)
    return encoder


def _optional_encoder(
    inner: TypeNode, namespace: str, memo: dict[RecordNode, Converter]
) -> Converter | None:
    encode = compile_encoder(inner, namespace, memo)
    if isinstance(inner, RecordNode | EnumNode):
        branch = f"{namespace}.{inner.name}"
    elif isinstance(inner, ArrayNode):
        branch = "array"
    elif isinstance(inner, MapNode):
        branch = "map"
    else:
        return _unless_none(encode)
    if encode is None:
        return lambda value: None if value is None else (branch, value)
    return lambda value: None if value is None else (branch, encode(value))


def _each_item(convert: Converter | None) -> Converter | None:
    if convert is None:
        return None
    return lambda value: [convert(item) for item in value]


def _each_value(convert: Converter | None) -> Converter | None:
    if convert is None:
        return None
    return lambda value: {key: convert(item) for key, item in value.items()}


def _unless_none(convert: Converter | None) -> Converter | None:
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


def _record_encoder(
    node: RecordNode, namespace: str, memo: dict[RecordNode, Converter]
) -> Converter:
    names = tuple(field.name for field in node.fields)
    steps = tuple(
        (field.name, encode)
        for field in node.fields
        if (encode := compile_encoder(field.node, namespace, memo)) is not None
    )
    values = _values_getter(names)
    if not steps:
        return lambda value: dict(zip(names, values(value)))  # noqa: B905 - same length by construction

    def encode_record(value: Any) -> dict[str, Any]:
        record = dict(zip(names, values(value)))  # noqa: B905 - same length by construction
        for name, encode in steps:
            record[name] = encode(record[name])
        return record

    return encode_record


def _values_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning the values of ``names`` as a tuple, whatever their number."""
    if len(names) >= 2:
        return attrgetter(*names)
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda value: (single(value),)
    return lambda value: ()


def compile_decoder(
    node: TypeNode, memo: dict[RecordNode, Converter], *, resolving: bool = False
) -> Converter | None:
    """Build the function turning what fastavro read into a payload value, or ``None``.

    Args:
        node: the value's type node.
        memo: converters of records already compiled in this tree (and mode).
        resolving: build decoders for data resolved from another writer schema, where
            fastavro fills fields the writer did not send with their raw JSON defaults.
    """
    if isinstance(node, ScalarNode | DecimalNode):
        return default_reader(node) if resolving else None
    if isinstance(node, EnumNode):
        return dict(node.enum_class.__members__).__getitem__
    if isinstance(node, CodecNode):
        return node.codec.from_avro
    if isinstance(node, ArrayNode):
        return _each_item(compile_decoder(node.items, memo, resolving=resolving))
    if isinstance(node, MapNode):
        return _each_value(compile_decoder(node.values, memo, resolving=resolving))
    if isinstance(node, OptionalNode):
        return _unless_none(compile_decoder(node.inner, memo, resolving=resolving))
    decoder = memo.get(node)
    if decoder is None:
        decoder = memo[node] = _record_decoder(node, memo, resolving)
    return decoder


def _record_decoder(
    node: RecordNode, memo: dict[RecordNode, Converter], resolving: bool
) -> Converter:
    cls = node.record_class
    assert cls is not None, "the payload record is decoded by the serializer"
    steps = tuple(
        (field.name, decode)
        for field in node.fields
        if (decode := compile_decoder(field.node, memo, resolving=resolving)) is not None
    )
    renames = tuple(
        (field.name, field.init_name) for field in node.fields if field.name != field.init_name
    )
    if not steps and not renames:
        return lambda record: cls(**record)

    def decode_record(record: dict[str, Any]) -> Any:
        for name, decode in steps:
            record[name] = decode(record[name])
        for name, init_name in renames:
            record[init_name] = record.pop(name)
        return cls(**record)

    return decode_record
