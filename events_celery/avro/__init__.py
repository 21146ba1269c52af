"""Payload types to Avro: schema, validation, encode/decode and schema compatibility.

The names here are the public interface of the Avro layer; the submodules are importable but
not promised.
"""

from events_celery.avro.codec import Codec, CodecRegistry, codecs, register_codec
from events_celery.avro.compatibility import Incompatibility, check_compatibility
from events_celery.avro.schema import fingerprint
from events_celery.avro.serializer import PayloadSerializer

__all__ = [
    "Codec",
    "CodecRegistry",
    "Incompatibility",
    "PayloadSerializer",
    "check_compatibility",
    "codecs",
    "fingerprint",
    "register_codec",
]
