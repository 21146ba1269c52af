"""Turn payload annotations into the type tree of :mod:`events_celery.avro.types`.

This runs once per event definition, at import time. It is where every unsupported type is
refused, with a message naming the event type, the dotted field path, what is wrong and how to
fix it, so that nothing about types can go wrong later, when a message is sent.
"""

from __future__ import annotations

import enum
import types
import typing
from collections import abc
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from events_celery.avro.bounds import written_in_zero_bytes
from events_celery.avro.codec import Codec, CodecRegistry
from events_celery.avro.types import (
    AVRO_NAME,
    NO_DEFAULT,
    PAYLOAD_RECORD_NAME,
    SCALAR_SCHEMAS,
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
from events_celery.exceptions import InvalidEventTypeError, UnsupportedTypeError

__all__ = ["SUPPORTED_TYPES", "resolve_payload"]

SUPPORTED_TYPES = (
    "supported types are bool, int, float, str, bytes, datetime (timezone-aware), date, UUID, "
    "Decimal (in an attrs class, with precision/scale metadata), Enum subclasses, attrs "
    "classes, list[T], dict[str, T], T | None, and types registered with register_codec()"
)

_CONTAINER_HINTS: dict[object, str] = {
    **dict.fromkeys((set, frozenset, abc.Set, abc.Sequence, abc.Iterable), " (use list[T])"),
    tuple: " (use list[T], or an attrs class for fields of different types)",
    abc.Mapping: " (use dict[str, T])",
}

_DECIMAL_HINT = "attrs.field(metadata={'precision': 12, 'scale': 2})"


def resolve_payload(event_type: str, data: Mapping[str, Any], codecs: CodecRegistry) -> RecordNode:
    """Turn an event definition's ``data`` into the type tree of its payload record.

    Args:
        event_type: the event type; it becomes the Avro namespace and prefixes errors.
        data: payload kwarg name → type, in wire order.
        codecs: the custom codecs, consulted before the built-in types.

    Returns:
        The payload's :class:`~events_celery.avro.types.RecordNode`.

    Raises:
        InvalidEventTypeError: ``event_type`` is not a valid Avro namespace.
        UnsupportedTypeError: a type cannot be carried in Avro; the message names the field.
    """
    if not event_type or not all(AVRO_NAME.match(part) for part in event_type.split(".")):
        raise InvalidEventTypeError(
            f"{event_type!r} is not a valid Avro namespace; an event type is dot-separated "
            "names such as 'org.example.shop.order.placed.v1'"
        )
    return _Resolver(event_type, codecs).payload(data)


class _Resolver:
    """One walk over the types of one event definition."""

    def __init__(self, event_type: str, codecs: CodecRegistry) -> None:
        self._event_type = event_type
        self._codecs = codecs
        self._records: dict[type, RecordNode] = {}
        self._in_progress: list[type] = []
        # Avro names share one namespace per event: class name -> the class (or codec) using it.
        self._names: dict[str, object] = {PAYLOAD_RECORD_NAME: PAYLOAD_RECORD_NAME}

    def error(self, path: str, problem: str) -> UnsupportedTypeError:
        return UnsupportedTypeError(f"{self._event_type}: field '{path}' {problem}")

    def payload(self, data: Mapping[str, Any]) -> RecordNode:
        fields = []
        for name, annotation in data.items():
            self._check_field_name(name, name)
            fields.append(FieldNode(name, name, self.node(annotation, name, None)))
        return RecordNode(PAYLOAD_RECORD_NAME, None, tuple(fields))

    def node(self, tp: Any, path: str, metadata: Mapping[Any, Any] | None) -> TypeNode:
        """Resolve one annotation; ``metadata`` is None for a top-level kwarg (no attrs field)."""
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.node(args[0], path, metadata)
        if origin is typing.Union or origin is types.UnionType:
            others = [arg for arg in args if arg is not type(None)]
            if len(others) == 1 and len(args) == 2:
                return OptionalNode(self.node(others[0], path, metadata))
            raise self.error(
                path,
                f"has type {_show(tp)}: the only union supported is T | None (Optional[T]); "
                "use one type, or a registered codec for a type of your own",
            )
        if origin is list:
            items = self.node(args[0], f"{path}[]", metadata)
            if _written_in_zero_bytes(items):
                raise self.error(
                    path,
                    f"has type {_show(tp)}, whose items may be written in zero bytes (a record "
                    "without fields), so a few bytes of a message could stand for any number "
                    "of them; give the item type a field, or send a count instead",
                )
            return ArrayNode(items)
        if origin is dict:
            if args[0] is not str:
                raise self.error(
                    path, f"has type {_show(tp)}: Avro map keys are strings; use dict[str, T]"
                )
            return MapNode(self.node(args[1], f"{path}[]", metadata))
        if tp is list or tp is dict:
            raise self.error(path, f"has type {_show(tp)} without item types; write e.g. list[str]")
        if origin is not None or not isinstance(tp, type):
            raise self.unsupported(tp, origin, path)
        return self._class_node(tp, path, metadata)

    def _class_node(self, tp: type, path: str, metadata: Mapping[Any, Any] | None) -> TypeNode:
        codec = self._codecs.lookup(tp)
        if codec is not None:
            codec_node = CodecNode(codec)
            if codec_node.name is not None:
                self._claim_name(codec_node.name, codec, path)
            return codec_node
        scalar = SCALAR_SCHEMAS.get(tp)
        if scalar is not None:
            return ScalarNode(tp, scalar)
        if tp is Decimal:
            return self._decimal(path, metadata)
        if issubclass(tp, enum.Enum):
            return self._enum(tp, path)
        if attrs.has(tp):
            return self._record(tp, path)
        raise self.unsupported(tp, None, path)

    def unsupported(self, tp: object, origin: object, path: str) -> UnsupportedTypeError:
        hint = _CONTAINER_HINTS.get(origin or tp, "")
        return self.error(
            path, f"has type {_show(tp)}, which is not supported{hint}; {SUPPORTED_TYPES}"
        )

    def _decimal(self, path: str, metadata: Mapping[Any, Any] | None) -> DecimalNode:
        if metadata is None:
            raise self.error(
                path,
                "has type Decimal, which needs a precision and scale that a signal's data "
                "mapping cannot declare; wrap it in an attrs class field declared with "
                + _DECIMAL_HINT,
            )
        precision, scale = metadata.get("precision"), metadata.get("scale", 0)
        if precision is None:
            raise self.error(
                path, f"has type Decimal without precision/scale; declare it with {_DECIMAL_HINT}"
            )
        if not _is_int(precision) or precision < 1:
            raise self.error(path, f"has Decimal precision {precision!r}; it must be an int >= 1")
        if not _is_int(scale) or not 0 <= scale <= precision:
            raise self.error(
                path, f"has Decimal scale {scale!r}; it must be an int from 0 to the precision"
            )
        return DecimalNode(precision, scale)

    def _enum(self, tp: type[enum.Enum], path: str) -> EnumNode:
        if issubclass(tp, enum.Flag):
            raise self.error(
                path, f"has type {_show(tp)}, a Flag enum; combined flags have no Avro symbol"
            )
        symbols = tuple(member.name for member in tp)
        if not symbols:
            raise self.error(path, f"has type {_show(tp)}, an Enum without members")
        bad = [symbol for symbol in symbols if not AVRO_NAME.match(symbol)]
        if bad:
            raise self.error(
                path,
                f"has type {_show(tp)}, whose member names {bad} are not valid Avro enum "
                "symbols ([A-Za-z_][A-Za-z0-9_]*); rename them",
            )
        self._check_type_name(tp, path)
        return EnumNode(tp, symbols)

    def _record(self, cls: type, path: str) -> RecordNode:
        if cls in self._in_progress:
            raise self.error(
                path,
                f"has type {_show(cls)}, which contains itself: recursive payload types "
                "are not supported; send the nested items flat (e.g. list of ids)",
            )
        known = self._records.get(cls)
        if known is not None:
            return known
        self._check_type_name(cls, path)
        try:
            attrs.resolve_types(cls)
        except Exception as exc:
            raise self.error(
                path,
                f"has type {_show(cls)}, whose annotations cannot be resolved "
                f"({type(exc).__name__}: {exc}); define or import the types it uses at module "
                "level so typing.get_type_hints() can find them",
            ) from exc
        self._in_progress.append(cls)
        try:
            fields = tuple(
                self._field(attribute, path) for attribute in attrs.fields(cls) if attribute.init
            )
        finally:
            self._in_progress.pop()
        record = RecordNode(cls.__name__, cls, fields)
        self._records[cls] = record
        return record

    def _field(self, attribute: attrs.Attribute[Any], path: str) -> FieldNode:
        field_path = f"{path}.{attribute.name}"
        self._check_field_name(attribute.name, field_path)
        if attribute.type is None:
            raise self.error(field_path, "has no type annotation; annotate it (e.g. 'name: str')")
        node = self.node(attribute.type, field_path, attribute.metadata)
        return FieldNode(
            attribute.name, attribute.alias or attribute.name, node, _default(attribute)
        )

    def _check_field_name(self, name: object, path: str) -> None:
        if not isinstance(name, str) or not AVRO_NAME.match(name):
            raise self.error(
                path, "is not a valid Avro field name; use ASCII letters, digits and '_'"
            )

    def _check_type_name(self, tp: type, path: str) -> None:
        if not AVRO_NAME.match(tp.__name__):
            raise self.error(
                path, f"has type {_show(tp)}, whose name is not a valid Avro name; rename it"
            )
        self._claim_name(tp.__name__, tp, path)

    def _claim_name(self, name: str, owner: object, path: str) -> None:
        current = self._names.setdefault(name, owner)
        if current is owner:
            return
        if current == PAYLOAD_RECORD_NAME:
            raise self.error(
                path,
                f"uses the name '{name}', which is reserved for the top-level record; rename it",
            )
        raise self.error(
            path,
            f"has type {_show(owner)}, but {_show(current)} is also named '{name}'; Avro names "
            "types by class name within the event's namespace, so rename one of them",
        )


def _written_in_zero_bytes(node: TypeNode) -> bool:
    if isinstance(node, RecordNode):
        return all(_written_in_zero_bytes(field.node) for field in node.fields)
    if isinstance(node, CodecNode):
        return written_in_zero_bytes(node.codec.avro_schema, {})
    return False


def _default(attribute: attrs.Attribute[Any]) -> object:
    default: Any = attribute.default
    if default is attrs.NOTHING:
        return NO_DEFAULT
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        # Only the empty containers are known without running user code.
        if not default.takes_self and default.factory in (list, dict):
            return default.factory()
        return NO_DEFAULT
    return default


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(tp: object) -> str:
    """A readable name for a type in messages: ``Decimal``, ``shop.events.OrderData``."""
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        if tp.__module__ in ("builtins", "datetime", "decimal", "uuid"):
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    if isinstance(tp, Codec):
        return f"the codec of {_show(tp.python_type)}"
    return repr(tp).replace("typing.", "")
