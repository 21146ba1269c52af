"""The Avro schema of a payload, derived from its type tree, and schema fingerprints.

Schemas are never hand-written: :func:`build_schema` folds the type tree into the JSON form of
an Avro schema. Named types (records, enums) are defined where first used and referenced by
name afterwards. attrs defaults become Avro field defaults, which schema evolution needs (a
reader can only fill a field the writer did not send from its default).
"""

from __future__ import annotations

import copy
from typing import Any

from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from events_celery.avro.defaults import DefaultEncoder
from events_celery.avro.types import (
    NO_DEFAULT,
    PAYLOAD_RECORD_NAME,
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
from events_celery.exceptions import SchemaCompatibilityError

__all__ = ["build_schema", "fingerprint"]


def fingerprint(schema: Any) -> str:
    """The CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form.

    The 8 fingerprint bytes are given in little-endian order, as Avro's single-object
    encoding writes them, as 16 lowercase hex digits: ``fingerprint("int")`` is
    ``"8f5c393f1ad57572"`` (the Avro specification's test value 8247732601305521295 as a long).

    Args:
        schema: an Avro schema in JSON form (e.g. loaded from an ``.avsc`` file).

    Raises:
        SchemaCompatibilityError: ``schema`` is not a valid Avro schema.
    """
    try:
        canonical = to_parsing_canonical_form(schema)
    except Exception as exc:
        raise SchemaCompatibilityError(
            f"cannot fingerprint {_short(schema)}: it is not a valid Avro schema ({exc})"
        ) from exc
    return str(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def build_schema(root: RecordNode, namespace: str) -> dict[str, Any]:
    """The Avro schema (JSON form) of a payload record.

    Args:
        root: the payload's type tree.
        namespace: the Avro namespace, the event type.

    Returns:
        ``{"type": "record", "name": "Payload", "namespace": namespace, "fields": [...]}``.
    """
    fields = _SchemaBuilder().fields(root)
    return {"type": "record", "name": PAYLOAD_RECORD_NAME, "namespace": namespace, "fields": fields}


class _SchemaBuilder:
    """One pass over a type tree; remembers which named types are already defined."""

    def __init__(self) -> None:
        self._defined: set[str] = set()
        self._defaults = DefaultEncoder()

    def fields(self, record: RecordNode) -> list[dict[str, Any]]:
        return [self.field(field) for field in record.fields]

    def field(self, field: FieldNode) -> dict[str, Any]:
        default = self._defaults.field_default(field)
        if (
            isinstance(field.node, OptionalNode)
            and default is not NO_DEFAULT
            and default is not None
        ):
            # Avro requires a union default to match the union's first branch.
            avro_type: Any = [self.schema(field.node.inner), "null"]
        else:
            avro_type = self.schema(field.node)
        result = {"name": field.name, "type": avro_type}
        if default is not NO_DEFAULT:
            result["default"] = default
        return result

    def schema(self, node: TypeNode) -> Any:
        if isinstance(node, ScalarNode):
            return copy.copy(node.avro_schema)
        if isinstance(node, DecimalNode):
            return {
                "type": "bytes",
                "logicalType": "decimal",
                "precision": node.precision,
                "scale": node.scale,
            }
        if isinstance(node, ArrayNode):
            return {"type": "array", "items": self.schema(node.items)}
        if isinstance(node, MapNode):
            return {"type": "map", "values": self.schema(node.values)}
        if isinstance(node, OptionalNode):
            return ["null", self.schema(node.inner)]
        if isinstance(node, CodecNode):
            if node.name is None:
                return copy.deepcopy(node.codec.avro_schema)
            return self._named(node.name) or copy.deepcopy(node.codec.avro_schema)
        if isinstance(node, EnumNode):
            return self._named(node.name) or {
                "type": "enum",
                "name": node.name,
                "symbols": list(node.symbols),
            }
        return self._named(node.name) or {
            "type": "record",
            "name": node.name,
            "fields": self.fields(node),
        }

    def _named(self, name: str) -> str | None:
        """``name`` if that type is already defined (so refer to it), else mark it defined."""
        if name in self._defined:
            return name
        self._defined.add(name)
        return None


def _short(schema: Any) -> str:
    text = repr(schema)
    return text if len(text) <= 80 else text[:77] + "..."
