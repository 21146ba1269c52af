"""Hypothesis strategies that generate valid values for any payload type tree."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from hypothesis import strategies as st

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

_LONG = 2**63
_OFFSETS = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)
TIMEZONES = st.one_of(st.just(UTC), _OFFSETS.map(lambda offset: timezone(offset)))
AWARE_DATETIMES = st.datetimes(
    # One day away from the ends, so every offset still exists in UTC.
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=TIMEZONES,
)


def decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    """Decimals that fit ``precision`` digits with ``scale`` after the point."""
    context = Context(prec=precision)
    limit = 10**precision - 1
    return st.integers(-limit, limit).map(
        lambda unscaled: Decimal(unscaled).scaleb(-scale, context)
    )


SCALARS: Mapping[type, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(-_LONG, _LONG - 1),
    # ints are valid floats; beyond 2**53 they would not compare equal after the round trip.
    float: st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
    str: st.text(),
    bytes: st.binary(),
    datetime: AWARE_DATETIMES,
}


def values(
    node: TypeNode, codecs: Mapping[type, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """Valid values of ``node``; ``codecs`` gives the strategy of each custom codec type."""
    codecs = codecs or {}
    if isinstance(node, ScalarNode):
        if node.python_type in SCALARS:
            return SCALARS[node.python_type]
        return st.from_type(node.python_type)  # date, UUID
    if isinstance(node, DecimalNode):
        return decimals(node.precision, node.scale)
    if isinstance(node, EnumNode):
        return st.sampled_from(list(node.enum_class))
    if isinstance(node, ArrayNode):
        return st.lists(values(node.items, codecs), max_size=3)
    if isinstance(node, MapNode):
        return st.dictionaries(st.text(max_size=5), values(node.values, codecs), max_size=3)
    if isinstance(node, OptionalNode):
        return st.none() | values(node.inner, codecs)
    if isinstance(node, CodecNode):
        return codecs[node.codec.python_type]
    return records(node, codecs)


def records(
    node: RecordNode, codecs: Mapping[type, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """Instances of a record's class, or payload dicts for the top-level record."""
    fields = {field.init_name: values(field.node, codecs) for field in node.fields}
    if node.record_class is None:
        return st.fixed_dictionaries(fields)
    return st.builds(node.record_class, **fields)
