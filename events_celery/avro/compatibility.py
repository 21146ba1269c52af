"""Can a reader schema read data written with a writer schema? (Avro schema resolution.)

:func:`check_compatibility` applies the resolution rules of the Avro specification to two
schemas in JSON form and lists every place where reading would fail, each with the dotted
field path, so a check command can say which field broke compatibility. Backward
compatibility (new code reads old messages) is ``check_compatibility(new, old)``; forward
compatibility (old code reads new messages) is ``check_compatibility(old, new)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import attrs

from events_celery.exceptions import SchemaCompatibilityError

__all__ = ["Incompatibility", "check_compatibility"]

_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED: Final = frozenset({"record", "error", "enum", "fixed"})
# writer type -> reader types that can read it
_PROMOTIONS: Final = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


@attrs.frozen
class Incompatibility:
    """One place where a reader cannot read what a writer wrote.

    Attributes:
        path: dotted path of the field (``"order.total"``; ``"order.lines[]"`` for list
            items), or ``""`` for the top-level record itself.
        message: what differs and what to do about it.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"field '{self.path}': {self.message}" if self.path else self.message


def check_compatibility(reader: Any, writer: Any) -> list[Incompatibility]:
    """List why data written with ``writer`` cannot be read with ``reader``.

    Args:
        reader: the schema of the code that reads (JSON form).
        writer: the schema the data was written with (JSON form).

    Returns:
        Every incompatibility found; an empty list means the reader can read the data.

    Raises:
        SchemaCompatibilityError: one of the schemas is not a valid Avro schema.
    """
    checker = _Checker()
    return list(
        dict.fromkeys(checker.check(_normalize(reader, "reader"), _normalize(writer, "writer"), ""))
    )


def _normalize(schema: Any, role: str) -> Any:
    try:
        return _Normalizer().normalize(schema, "")
    except SchemaCompatibilityError:
        raise
    except Exception as exc:
        raise SchemaCompatibilityError(
            f"the {role} schema is not a valid Avro schema ({type(exc).__name__}: {exc})"
        ) from exc


class _Normalizer:
    """Rewrites a schema so every type is a dict, names are full, and references are shared."""

    def __init__(self) -> None:
        self._named: dict[str, dict[str, Any]] = {}

    def normalize(self, schema: Any, namespace: str) -> Any:
        if isinstance(schema, list):
            return [self.normalize(branch, namespace) for branch in schema]
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return {"type": schema}
            return self._reference(schema, namespace)
        kind = schema["type"]
        if not isinstance(kind, str):  # {"type": {...}} wraps a schema
            return self.normalize(kind, namespace)
        if kind in _PRIMITIVES:
            return dict(schema)
        if kind == "array":
            return {"type": "array", "items": self.normalize(schema["items"], namespace)}
        if kind == "map":
            return {"type": "map", "values": self.normalize(schema["values"], namespace)}
        if kind not in _NAMED:
            return self._reference(kind, namespace)
        return self._define(schema, namespace)

    def _define(self, schema: dict[str, Any], namespace: str) -> dict[str, Any]:
        name = _full_name(schema["name"], schema.get("namespace", namespace))
        own_namespace = name.rpartition(".")[0]
        result = dict(
            schema, name=name, type="record" if schema["type"] == "error" else schema["type"]
        )
        result["aliases"] = [
            _full_name(alias, own_namespace) for alias in schema.get("aliases", [])
        ]
        self._named[name] = result  # before the fields: a record may refer to itself
        if result["type"] == "record":
            result["fields"] = [
                dict(field, type=self.normalize(field["type"], own_namespace))
                for field in schema["fields"]
            ]
        return result

    def _reference(self, name: str, namespace: str) -> dict[str, Any]:
        for candidate in (_full_name(name, namespace), name):
            if candidate in self._named:
                return self._named[candidate]
        raise SchemaCompatibilityError(
            f"unknown type name {name!r}: a named type must be defined before it is used"
        )


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class _Checker:
    def __init__(self) -> None:
        self._in_progress: set[tuple[int, int]] = set()

    def check(self, reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
        if isinstance(writer, list):
            # Whatever branch the writer used, the reader must be able to read it.
            for branch in writer:
                yield from self.check(reader, branch, path)
            return
        if isinstance(reader, list):
            if not any(_is_empty(self.check(branch, writer, path)) for branch in reader):
                yield Incompatibility(
                    path,
                    f"the writer writes {_show(writer)}, which no branch of the reader's "
                    f"{_show(reader)} can read; add a compatible branch",
                )
            return
        r_type, w_type = reader["type"], writer["type"]
        if r_type != w_type:
            if r_type not in _PROMOTIONS.get(w_type, ()):
                yield Incompatibility(
                    path,
                    f"type changed: the writer writes {_show(writer)} and the reader expects "
                    f"{_show(reader)}; keep the type, or add a new field instead",
                )
            return
        if r_type == "array":
            yield from self.check(reader["items"], writer["items"], f"{path}[]")
        elif r_type == "map":
            yield from self.check(reader["values"], writer["values"], f"{path}[]")
        elif r_type in _NAMED:
            yield from self._check_named(reader, writer, path)
        else:
            yield from _check_logical(reader, writer, path)

    def _check_named(self, reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
        w_short = writer["name"].rpartition(".")[2]
        r_short = reader["name"].rpartition(".")[2]
        if w_short != r_short and writer["name"] not in reader["aliases"]:
            yield Incompatibility(
                path,
                f"the writer's {writer['type']} is named {writer['name']!r} and the reader's "
                f"{reader['name']!r}; keep the name, or list the old one in the reader's aliases",
            )
            return
        if reader["type"] == "fixed" and reader["size"] != writer["size"]:
            yield Incompatibility(
                path, f"fixed size changed from {writer['size']} to {reader['size']}"
            )
        elif reader["type"] == "enum":
            missing = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
            if missing and "default" not in reader:
                yield Incompatibility(
                    path,
                    f"the writer's enum {writer['name']!r} has symbols {missing} that the "
                    "reader's enum lacks; keep them, or give the reader's enum a default symbol",
                )
        elif reader["type"] == "record":
            key = (id(reader), id(writer))
            if key in self._in_progress:  # a recursive record: its outer check covers it
                return
            self._in_progress.add(key)
            try:
                yield from self._check_fields(reader, writer, path)
            finally:
                self._in_progress.discard(key)

    def _check_fields(self, reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
        written = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            field_path = f"{path}.{field['name']}" if path else field["name"]
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[name] for name in names if name in written), None)
            if source is not None:
                yield from self.check(field["type"], source["type"], field_path)
            elif "default" not in field:
                yield Incompatibility(
                    field_path,
                    "the reader has this field without a default and the writer does not write "
                    "it; give it a default (e.g. 'T | None = None') so older data can be read",
                )


def _check_logical(reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
    r_logical, w_logical = reader.get("logicalType"), writer.get("logicalType")
    if r_logical is None or w_logical is None:
        return
    if r_logical != w_logical:
        yield Incompatibility(
            path,
            f"logical type changed from {w_logical} to {r_logical}; values would be misread",
        )
    elif r_logical == "decimal":
        w_scale, r_scale = writer.get("scale", 0), reader.get("scale", 0)
        if w_scale != r_scale:
            yield Incompatibility(
                path,
                f"decimal scale changed from {w_scale} to {r_scale}; values would be misread",
            )
        elif reader.get("precision", 0) < writer.get("precision", 0):
            yield Incompatibility(
                path,
                f"decimal precision shrank from {writer.get('precision')} to "
                f"{reader.get('precision')}; written values may not fit",
            )


def _is_empty(problems: Iterator[Incompatibility]) -> bool:
    return next(problems, None) is None


def _show(schema: Any) -> str:
    if isinstance(schema, list):
        return "union [" + ", ".join(_show(branch) for branch in schema) + "]"
    kind = schema["type"]
    if kind in _NAMED:
        return f"{kind} {schema['name'].rpartition('.')[2]}"
    logical = schema.get("logicalType")
    return f"{kind} ({logical})" if logical else str(kind)
