"""Custom codecs: how a type this package does not know travels in an Avro message.

A codec pairs a Python type with the Avro schema it is carried as and two functions that
convert between the two, e.g. an opaque ``CourseKey`` sent as an Avro ``string``::

    register_codec(CourseKey, "string", to_avro=str, from_avro=CourseKey.from_string)

The module is named ``codec`` (not ``codecs``) so that the default registry instance can be
re-exported as ``events_celery.avro.codecs`` without shadowing a submodule of the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
from fastavro import parse_schema

from events_celery.exceptions import EventDefinitionError

__all__ = ["Codec", "CodecRegistry", "codecs", "register_codec"]

AvroSchema = str | dict[str, Any] | list[Any]
"""An Avro schema in its JSON form: a type name, a schema object or a union."""


@attrs.frozen
class Codec:
    """How values of one Python type are written to and read from Avro.

    Attributes:
        python_type: the type a payload field is annotated with. Validation accepts
            instances of it (subclasses included).
        avro_schema: the Avro schema the value is carried as (``"string"``,
            ``{"type": "long", "logicalType": "timestamp-micros"}``...).
        to_avro: turns a ``python_type`` value into a value fastavro can write with
            ``avro_schema``.
        from_avro: turns the value fastavro read back into a ``python_type`` value.
    """

    python_type: type
    avro_schema: AvroSchema
    to_avro: Callable[[Any], Any]
    from_avro: Callable[[Any], Any]


class CodecRegistry:
    """The custom codecs a :class:`~events_celery.avro.PayloadSerializer` may use.

    The default registry is :data:`codecs`; tests can pass a fresh ``CodecRegistry()`` to a
    serializer instead of touching it.
    """

    def __init__(self) -> None:
        self._codecs: dict[type, Codec] = {}

    def register(
        self,
        python_type: type,
        avro_schema: AvroSchema,
        to_avro: Callable[[Any], Any],
        from_avro: Callable[[Any], Any],
    ) -> Codec:
        """Declare how values of ``python_type`` are carried in Avro messages.

        Registering a type again replaces its codec, for serializers created afterwards.

        Args:
            python_type: the class payload fields are annotated with.
            avro_schema: the Avro schema of the converted value.
            to_avro: converts a ``python_type`` value for writing.
            from_avro: converts a read value back to ``python_type``.

        Returns:
            The registered :class:`Codec`.

        Raises:
            EventDefinitionError: ``python_type`` is not a class, a converter is not callable,
                or ``avro_schema`` is not a valid Avro schema.
        """
        where = f"register_codec({getattr(python_type, '__name__', python_type)!r})"
        if not isinstance(python_type, type):
            raise EventDefinitionError(
                f"{where}: python_type must be a class, got {python_type!r}; "
                "pass the class that payload fields are annotated with"
            )
        for name, func in (("to_avro", to_avro), ("from_avro", from_avro)):
            if not callable(func):
                raise EventDefinitionError(
                    f"{where}: {name} must be callable, got {func!r}; pass a function "
                    "that converts one value"
                )
        try:
            parse_schema(avro_schema)
        except Exception as exc:
            raise EventDefinitionError(
                f"{where}: avro_schema {avro_schema!r} is not a valid Avro schema ({exc}); "
                'use a type name such as "string" or a schema object such as '
                '{"type": "long", "logicalType": "timestamp-micros"}'
            ) from exc
        codec = Codec(python_type, avro_schema, to_avro, from_avro)
        self._codecs[python_type] = codec
        return codec

    def unregister(self, python_type: type) -> None:
        """Forget the codec of ``python_type``; do nothing if it has none."""
        self._codecs.pop(python_type, None)

    def lookup(self, python_type: type) -> Codec | None:
        """The codec for ``python_type`` or its nearest registered base class, if any."""
        for klass in python_type.__mro__:
            codec = self._codecs.get(klass)
            if codec is not None:
                return codec
        return None

    def __contains__(self, python_type: object) -> bool:
        return isinstance(python_type, type) and self.lookup(python_type) is not None

    def __iter__(self) -> Iterator[Codec]:
        return iter(tuple(self._codecs.values()))

    def __len__(self) -> int:
        return len(self._codecs)


codecs = CodecRegistry()
"""The registry serializers use when none is given."""


def register_codec(
    python_type: type,
    avro_schema: AvroSchema,
    to_avro: Callable[[Any], Any],
    from_avro: Callable[[Any], Any],
) -> Codec:
    """Declare, in the default registry :data:`codecs`, how ``python_type`` travels in Avro.

    Register codecs before the events that use them are defined (event definitions resolve
    their payload types when they are created).

    Example::

        register_codec(CourseKey, "string", to_avro=str, from_avro=CourseKey.from_string)

    Args:
        python_type: the class payload fields are annotated with.
        avro_schema: the Avro schema of the converted value.
        to_avro: converts a ``python_type`` value for writing.
        from_avro: converts a read value back to ``python_type``.

    Returns:
        The registered :class:`Codec`.

    Raises:
        EventDefinitionError: the arguments do not describe a usable codec.
    """
    return codecs.register(python_type, avro_schema, to_avro, from_avro)
