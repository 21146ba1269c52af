"""Precompiled payload validators: one closure per node of the type tree.

:func:`compile_payload_validator` folds the type tree once into nested closures, so checking a
payload costs a few type checks per value and no introspection. A failing check raises
:class:`Invalid` with the problem; each enclosing record, list or map adds its path segment as
the error travels up, so the happy path never builds paths.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any
from uuid import UUID

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
from events_celery.exceptions import PayloadValidationError

__all__ = ["Invalid", "Validator", "compile_payload_validator", "compile_validator", "describe"]

Validator = Callable[[Any], None]
"""Checks one value; raises :class:`Invalid` if it does not match its node."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxset = _repr.maxtuple = 4


class Invalid(Exception):  # noqa: N818 - internal signal, never escapes this package
    """A value does not match its type node.

    Attributes:
        problem: what is wrong, e.g. ``"expects Decimal, got str ('12.5')"``.
        path: path segments (``".total"``, ``"[2]"``) from the failing value outwards.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def describe(value: object) -> str:
    """``str ('12.5')``: a value's type and a truncated repr, for error messages."""
    if value is None:
        return "None"
    return f"{type(value).__name__} ({_repr.repr(value)})"


def expected_name(node: TypeNode) -> str:
    """How error messages name what a node expects: ``Decimal``, ``list``, ``OrderData``."""
    if isinstance(node, ScalarNode):
        return node.python_type.__name__
    if isinstance(node, DecimalNode):
        return "Decimal"
    if isinstance(node, EnumNode):
        return node.enum_class.__name__
    if isinstance(node, ArrayNode):
        return "list"
    if isinstance(node, MapNode):
        return "dict"
    if isinstance(node, OptionalNode):
        return f"{expected_name(node.inner)} or None"
    if isinstance(node, RecordNode):
        return node.name
    return node.codec.python_type.__name__


def compile_payload_validator(
    event_type: str, root: RecordNode
) -> Callable[[Mapping[str, Any]], None]:
    """Build the function that checks a whole payload (the kwargs of ``send_event``).

    The returned function raises :class:`~events_celery.exceptions.PayloadValidationError`
    for a missing kwarg, an extra kwarg, or a value of the wrong type anywhere in the tree.
    """
    memo: dict[RecordNode, Validator] = {}
    checks = tuple((field.name, compile_validator(field.node, memo)) for field in root.fields)
    names = frozenset(name for name, _ in checks)
    order = tuple(name for name, _ in checks)

    def validate_payload(payload: Mapping[str, Any]) -> None:
        if payload.keys() != names:
            _raise_wrong_keys(event_type, order, payload)
        for name, check in checks:
            try:
                check(payload[name])
            except Invalid as exc:
                path = name + "".join(reversed(exc.path))
                raise PayloadValidationError(event_type, path, exc.problem) from None

    return validate_payload


def _raise_wrong_keys(event_type: str, order: tuple[str, ...], payload: Mapping[str, Any]) -> None:
    missing = [name for name in order if name not in payload]
    if missing:
        raise PayloadValidationError(
            event_type,
            missing[0],
            f"is missing; pass {', '.join(f'{name}=...' for name in missing)} "
            f"(the event's fields are {', '.join(order)})",
        )
    extra = sorted(str(name) for name in payload if name not in order)
    raise PayloadValidationError(
        event_type,
        extra[0],
        f"is not a field of this event; remove it (the event's fields are {', '.join(order)})",
    )


def compile_validator(node: TypeNode, memo: dict[RecordNode, Validator]) -> Validator:
    """Build the validator of one node (records are compiled once per ``memo``)."""
    if isinstance(node, ScalarNode):
        return _SCALAR_VALIDATORS[node.python_type]
    if isinstance(node, DecimalNode):
        return _decimal_validator(node)
    if isinstance(node, EnumNode):
        return _instance_validator(node.enum_class, node.enum_class.__name__)
    if isinstance(node, CodecNode):
        return _instance_validator(node.codec.python_type, expected_name(node))
    if isinstance(node, ArrayNode):
        return _array_validator(compile_validator(node.items, memo))
    if isinstance(node, MapNode):
        return _map_validator(compile_validator(node.values, memo))
    if isinstance(node, OptionalNode):
        return _optional_validator(compile_validator(node.inner, memo))
    validator = memo.get(node)
    if validator is None:
        validator = memo[node] = _record_validator(node, memo)
    return validator


def _fail(expected: str, value: object) -> Invalid:
    return Invalid(f"expects {expected}, got {describe(value)}")


def _check_bool(value: Any) -> None:
    if type(value) is not bool:
        raise _fail("bool", value)


def _check_int(value: Any) -> None:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise _fail("int", value)
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise Invalid(f"expects int in the signed 64-bit range, got {describe(value)}")


def _check_float(value: Any) -> None:
    if type(value) is float or isinstance(value, float):
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail("float", value)
    try:
        float(value)
    except OverflowError:
        raise Invalid(
            f"expects float, got an int too large for a double: {describe(value)}"
        ) from None


def _check_str(value: Any) -> None:
    if type(value) is not str and not isinstance(value, str):
        raise _fail("str", value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(
                f"expects str that UTF-8 can encode, got {describe(value)} "
                "(it contains a lone surrogate)"
            ) from None


def _check_bytes(value: Any) -> None:
    if not isinstance(value, bytes):
        raise _fail("bytes", value)


def _check_datetime(value: Any) -> None:
    if not isinstance(value, datetime):
        raise _fail("datetime", value)
    if value.utcoffset() is None:
        raise Invalid(
            f"expects a timezone-aware datetime, got a naive datetime ({_repr.repr(value)}); "
            "attach a timezone, e.g. datetime.now(timezone.utc)"
        )
    if value.year in (1, 9999):
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise Invalid(f"expects a datetime that exists in UTC, got {describe(value)}") from None


def _check_date(value: Any) -> None:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise _fail("date", value)


def _check_uuid(value: Any) -> None:
    if not isinstance(value, UUID):
        raise _fail("UUID", value)


_SCALAR_VALIDATORS: dict[type, Validator] = {
    bool: _check_bool,
    int: _check_int,
    float: _check_float,
    str: _check_str,
    bytes: _check_bytes,
    datetime: _check_datetime,
    date: _check_date,
    UUID: _check_uuid,
}


def _instance_validator(cls: type, expected: str) -> Validator:
    def check_instance(value: Any) -> None:
        if not isinstance(value, cls):
            raise _fail(expected, value)

    return check_instance


def _decimal_validator(node: DecimalNode) -> Validator:
    quantum = Decimal(1).scaleb(-node.scale)
    # Quantizing under this context raises instead of rounding or overflowing the precision.
    exact = Context(prec=node.precision, traps=[Inexact, InvalidOperation])
    limits = f"at most {node.precision} digits, {node.scale} after the point"

    def check_decimal(value: Any) -> None:
        if not isinstance(value, Decimal):
            raise _fail("Decimal", value)
        try:
            # NaN and infinities quantize without a signal, hence is_finite().
            fits = value.is_finite() and value.quantize(quantum, context=exact) is not None
        except (Inexact, InvalidOperation):
            fits = False
        if not fits:
            if not value.is_finite():
                raise Invalid(f"expects a finite Decimal with {limits}, got {describe(value)}")
            raise Invalid(
                f"expects a Decimal with {limits}, got {describe(value)}; it is never "
                "rounded silently: round it yourself (Decimal.quantize) or widen the field"
            )

    return check_decimal


def _array_validator(check_item: Validator) -> Validator:
    def check_array(value: Any) -> None:
        if type(value) is not list and not isinstance(value, list):
            raise _fail("list", value)
        for index, item in enumerate(value):
            try:
                check_item(item)
            except Invalid as exc:
                exc.path.append(f"[{index}]")
                raise

    return check_array


def _map_validator(check_value: Validator) -> Validator:
    def check_map(value: Any) -> None:
        if type(value) is not dict and not isinstance(value, dict):
            raise _fail("dict", value)
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise Invalid(f"expects dict with str keys, got key {describe(key)}")
            try:
                check_value(item)
            except Invalid as exc:
                exc.path.append(f"[{key!r}]")
                raise

    return check_map


def _optional_validator(check_inner: Validator) -> Validator:
    def check_optional(value: Any) -> None:
        if value is not None:
            try:
                check_inner(value)
            except Invalid as exc:
                if not exc.path and exc.problem.startswith("expects "):
                    # The value itself is wrong (not something inside it): None is allowed too.
                    exc.problem = exc.problem.replace(", got ", " or None, got ", 1)
                    exc.args = (exc.problem,)
                raise

    return check_optional


def _record_validator(node: RecordNode, memo: dict[RecordNode, Validator]) -> Validator:
    cls = node.record_class
    checks = tuple((field.name, compile_validator(field.node, memo)) for field in node.fields)

    def check_record(value: Any) -> None:
        if type(value) is not cls:
            hint = ""
            if cls is not None and isinstance(value, cls):
                hint = f"; a subclass would lose its extra attributes, send a {node.name}"
            raise Invalid(f"expects {node.name}, got {describe(value)}{hint}")
        for name, check in checks:
            try:
                check(getattr(value, name))
            except Invalid as exc:
                exc.path.append(f".{name}")
                raise

    return check_record
