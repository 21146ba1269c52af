"""Bounded decoding: how many items an Avro body may hold, checked before fastavro reads it.

Avro writes a list or a dict as blocks, each a count followed by that many items. fastavro
trusts the count and appends one object per item, so without a bound a body of a few bytes can
claim 2^40 items of a type that is written in zero bytes (a record without fields) and make the
decoder allocate until the worker runs out of memory.

Two rules bound every body a :class:`~events_celery.avro.serializer.PayloadSerializer`
encodes or decodes, checked by a scan of the body that builds no objects:

- **items per byte**: a block may not claim more items than bytes are left in the body. An
  item of any type an event may declare takes at least one byte, because lists of types that
  are written in zero bytes are refused when the event is defined
  (:func:`zero_byte_arrays`);
- **an item budget**: the items of all the lists and dicts in one body together may not pass
  :data:`DEFAULT_MAX_ITEMS`.

Where no list can hold zero-byte items, fastavro itself cannot build more items than the
body has bytes (each item it reads consumes one at least, and a short body ends the read), so
the scan is needed only for bodies longer than the budget, or for a writer schema (an older
version, say) whose lists may hold zero-byte items. :func:`compile_item_bound` scans just then,
so the events of a normal size pay one length comparison. A body that ends early or is
malformed is left to fastavro, which says so in its own words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "ItemBoundError",
    "compile_item_bound",
    "compile_item_check",
    "zero_byte_arrays",
]

DEFAULT_MAX_ITEMS: Final = 1 << 20
"""How many list and dict items one event's payload may hold, all its lists and dicts together."""


class ItemBoundError(ValueError):
    """A body claims more list or dict items than its size or the item budget allows.

    Attributes:
        field: the dotted path of the list or dict (``""`` for the payload itself).
        problem: what is wrong, without the path.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"field '{field}': {problem}" if field else problem)


class _EndedError(Exception):
    """The body ended, or is malformed, before the scan finished (fastavro reports it)."""


class _Tally:
    __slots__ = ("items", "limit")

    def __init__(self, limit: int) -> None:
        self.items = 0
        self.limit = limit


_Skip = Callable[[bytes, int, _Tally], int]
"""Skips one value written at ``pos``; returns the position after it."""

ItemCheck = Callable[[bytes, int], int]
"""Checks a body against the two rules; returns how many items it holds."""

ItemBound = Callable[[bytes, int], object]
"""Checks a body against the two rules where fastavro alone would not keep them."""

_PRIMITIVE_SIZES: Final[Mapping[str, int]] = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_CONTAINERS: Final = ("array", "map")


def compile_item_check(schema: Any) -> ItemCheck | None:
    """The check for bodies written with ``schema``, or ``None`` when it has no list or dict.

    Args:
        schema: an Avro schema in its JSON form (named types defined once, then referenced by
            name), as :func:`~events_celery.avro.schema.build_schema` builds it or as stored.

    Returns:
        ``check(body, max_items)``, which returns the number of items and raises
        :class:`ItemBoundError` naming the field when a block claims more items than bytes are
        left, or the items together pass ``max_items``.
    """
    if not any(_is_container(node) for node in _walk(schema, set())):
        return None
    named: dict[str, _Skip] = {}
    skip = _compile(schema, "", named, "")

    def check(body: bytes, max_items: int) -> int:
        tally = _Tally(max_items)
        with contextlib.suppress(_EndedError):  # fastavro says what is wrong with the body
            skip(body, 0, tally)
        return tally.items

    return check


def compile_item_bound(schema: Any) -> ItemBound | None:
    """``bound(body, max_items)`` for bodies written with ``schema``, or ``None`` if none is needed.

    The bound scans a body (see :func:`compile_item_check`) when ``schema`` has a list whose
    items may be written in zero bytes, or when the body is longer than ``max_items``.
    """
    scan = compile_item_check(schema)
    if scan is None or zero_byte_arrays(schema):
        return scan

    def bound(body: bytes, max_items: int) -> object:
        return scan(body, max_items) if len(body) > max_items else None

    return bound


def zero_byte_arrays(schema: Any) -> list[str]:
    """The paths of the lists in ``schema`` whose items may be written in zero bytes.

    Such a list (of records without fields, say) lets a body of a few bytes stand for any
    number of items, so event definitions refuse it.
    """
    found: list[str] = []
    definitions: dict[str, Any] = {}
    _find_zero_byte_arrays(schema, "", "", definitions, found)
    return found


def written_in_zero_bytes(schema: Any, definitions: Mapping[str, Any]) -> bool:
    """Whether a value of ``schema`` may take no bytes at all (null, a record without fields)."""
    kind = _kind(schema)
    if isinstance(schema, list):
        return False  # a union writes its branch index
    if kind == "record" and isinstance(schema, dict):
        return all(written_in_zero_bytes(field["type"], definitions) for field in schema["fields"])
    if kind == "fixed" and isinstance(schema, dict):
        return int(schema["size"]) == 0
    if isinstance(schema, str) and schema in definitions:
        return written_in_zero_bytes(definitions[schema], definitions)
    return kind == "null"


def _find_zero_byte_arrays(
    schema: Any, path: str, namespace: str, definitions: dict[str, Any], found: list[str]
) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _find_zero_byte_arrays(branch, path, namespace, definitions, found)
        return
    if not isinstance(schema, dict):
        return
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        full, namespace = _names(schema, namespace)
        definitions[full] = definitions[str(schema["name"])] = schema
    if kind == "record":
        for field in schema["fields"]:
            child = _field_path(path, field)
            _find_zero_byte_arrays(field["type"], child, namespace, definitions, found)
    elif kind == "array":
        items = schema["items"]
        _find_zero_byte_arrays(items, f"{path}[]", namespace, definitions, found)
        if written_in_zero_bytes(_named(items, namespace, definitions), definitions):
            found.append(path)
    elif kind == "map":
        _find_zero_byte_arrays(schema["values"], f"{path}[]", namespace, definitions, found)


def _compile(schema: Any, path: str, named: dict[str, _Skip], namespace: str) -> _Skip:
    if isinstance(schema, list):
        return _union([_compile(branch, path, named, namespace) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVE_SIZES:
            return _fixed_width(_PRIMITIVE_SIZES[schema])
        if schema in ("int", "long"):
            return _skip_long
        if schema in ("bytes", "string"):
            return _skip_bytes
        return _reference(schema, namespace, named)
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        full, inner = _names(schema, namespace)
        if kind == "record":
            skip = _record(
                [
                    _compile(field["type"], _field_path(path, field), named, inner)
                    for field in schema["fields"]
                ]
            )
        else:
            skip = _skip_long if kind == "enum" else _fixed_width(int(schema["size"]))
        named[full] = skip
        return skip
    if kind == "array":
        return _blocks(_compile(schema["items"], f"{path}[]", named, namespace), path, "list")
    if kind == "map":
        value = _compile(schema["values"], f"{path}[]", named, namespace)
        return _blocks(_record([_skip_bytes, value]), path, "dict")
    return _compile(kind, path, named, namespace)  # a primitive with a logical type


def _blocks(skip_item: _Skip, path: str, container: str) -> _Skip:
    def skip(body: bytes, pos: int, tally: _Tally) -> int:
        while True:
            count, pos = _read_long(body, pos)
            if count == 0:
                return pos
            if count < 0:  # a block that also gives its size in bytes
                count = -count
                _, pos = _read_long(body, pos)
            left = len(body) - pos
            if count > left:
                raise ItemBoundError(
                    path,
                    f"a {container} block claims {count} items in the {left} bytes left of "
                    "the body, and every item takes at least one byte",
                )
            tally.items += count
            if tally.items > tally.limit:
                raise ItemBoundError(
                    path,
                    f"the payload holds more than {tally.limit} list and dict items in all, "
                    "the most one event may carry; send fewer items per event",
                )
            for _ in range(count):
                pos = skip_item(body, pos, tally)

    return skip


def _record(fields: list[_Skip]) -> _Skip:
    def skip(body: bytes, pos: int, tally: _Tally) -> int:
        for skip_field in fields:
            pos = skip_field(body, pos, tally)
        return pos

    return skip


def _union(branches: list[_Skip]) -> _Skip:
    def skip(body: bytes, pos: int, tally: _Tally) -> int:
        index, pos = _read_long(body, pos)
        if not 0 <= index < len(branches):
            raise _EndedError
        return branches[index](body, pos, tally)

    return skip


def _fixed_width(width: int) -> _Skip:
    def skip(body: bytes, pos: int, tally: _Tally) -> int:
        pos += width
        if pos > len(body):
            raise _EndedError
        return pos

    return skip


def _reference(name: str, namespace: str, named: dict[str, _Skip]) -> _Skip:
    full = name if "." in name or not namespace else f"{namespace}.{name}"

    def skip(body: bytes, pos: int, tally: _Tally) -> int:
        target = named.get(full)
        if target is None:
            raise _EndedError  # an unknown name: fastavro refuses the schema itself
        return target(body, pos, tally)

    return skip


def _skip_long(body: bytes, pos: int, tally: _Tally) -> int:
    return _read_long(body, pos)[1]


def _skip_bytes(body: bytes, pos: int, tally: _Tally) -> int:
    size, pos = _read_long(body, pos)
    pos += size
    if size < 0 or pos > len(body):
        raise _EndedError
    return pos


def _read_long(body: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(body) or shift > 63:
            raise _EndedError
        byte = body[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _walk(schema: Any, seen: set[int]) -> Iterator[Any]:
    if id(schema) in seen:
        return
    seen.add(id(schema))
    yield schema
    if isinstance(schema, list):
        for branch in schema:
            yield from _walk(branch, seen)
    elif isinstance(schema, dict):
        for key in ("items", "values", "type"):
            if not isinstance(schema.get(key), str | type(None)):
                yield from _walk(schema[key], seen)
        for field in schema.get("fields", ()):
            yield from _walk(field["type"], seen)


def _is_container(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") in _CONTAINERS


def _kind(schema: Any) -> str | None:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict) and isinstance(schema.get("type"), str):
        return str(schema["type"])
    return None


def _names(schema: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    """A named type's full name and the namespace of the types defined inside it."""
    name = str(schema["name"])
    if "." not in name:
        namespace = str(schema.get("namespace", namespace))
        name = f"{namespace}.{name}" if namespace else name
    return name, name.rpartition(".")[0]


def _field_path(path: str, field: Mapping[str, Any]) -> str:
    return f"{path}.{field['name']}" if path else str(field["name"])


def _named(schema: Any, namespace: str, definitions: Mapping[str, Any]) -> Any:
    if isinstance(schema, str):
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        return definitions.get(full, definitions.get(schema, schema))
    return schema
