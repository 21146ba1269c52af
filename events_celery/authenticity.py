"""Who may publish an event: the broker user behind it, and the Ed25519 keys that sign it.

Two proofs, each optional, transport-free like :mod:`events_celery.wire`:

* ``user_id``: RabbitMQ refuses a message whose ``user_id`` property is not the user of the
  connection that publishes it, so a ``user_id`` a consumer receives is the broker's word.
  :class:`Authenticity` maps event types and sources to the broker users allowed to publish
  them (``EVENT_BUS_TRUSTED_PUBLISHERS``).
* signatures: where an event crosses brokers or is stored and replayed, the broker's word does
  not travel with it; an Ed25519 signature over :func:`~events_celery.wire.signed_bytes` does.
  Each service signs with its key (two during a rotation); a consumer keeps a trust list of
  key id → public key, the sources and the event types that key may sign.

An event that fails a check the settings ask for is a poison message: :meth:`Authenticity.check`
raises :class:`~events_celery.wire.PoisonMessageError` with the reason, and the consumer
dead-letters it. The ``cryptography`` package (extra ``signing``) is needed for signatures only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from events_celery.wire import HEADER_SIGNATURE, PoisonMessageError, header_text, signed_bytes

if TYPE_CHECKING:
    from events_celery.metadata import EventMetadata

#: A key id: what names a key in ``EVENT_BUS_SIGNING_KEYS`` and ``EVENT_BUS_TRUSTED_KEYS``.
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: How an entry of ``EVENT_BUS_TRUSTED_PUBLISHERS`` names a source instead of an event type.
SOURCE_PREFIX = "source:"
#: Most signatures one message may carry (two keys during a rotation, and room for a third).
MAX_SIGNATURES = 4


@attrs.frozen
class SigningKey:
    """This service's Ed25519 private key, and the id that names it in signatures."""

    key_id: str
    #: An ``Ed25519PrivateKey`` of ``cryptography``.
    private_key: Any = attrs.field(repr=False)


@attrs.frozen
class TrustedKey:
    """A publisher's Ed25519 public key, and what it may sign.

    Attributes:
        key_id: the id its signatures name.
        public_key: an ``Ed25519PublicKey`` of ``cryptography``.
        sources: the ``ce_source`` values it may sign.
        event_types: the event types it may sign.
    """

    key_id: str
    public_key: Any = attrs.field(repr=False)
    sources: frozenset[str]
    event_types: frozenset[str]


def sign(headers: Mapping[str, Any], body: bytes, keys: Iterable[SigningKey]) -> str:
    """The value of the ``ce_signature`` header: one signature per key, separated by spaces."""
    data = signed_bytes(headers, body)
    return " ".join(
        f"{key.key_id}:{base64.b64encode(key.private_key.sign(data)).decode('ascii')}"
        for key in keys
    )


def read_signatures(value: object) -> list[tuple[str, bytes]]:
    """The ``(key id, signature)`` pairs of a ``ce_signature`` header.

    Raises:
        PoisonMessageError: the header is not of that form.
    """
    pairs = []
    entries = header_text(value).split()
    if not entries or len(entries) > MAX_SIGNATURES:
        raise PoisonMessageError(
            f"header {HEADER_SIGNATURE!r} holds {len(entries)} signatures; 1 to "
            f"{MAX_SIGNATURES} '<key id>:<base64 signature>' separated by spaces are read"
        )
    for entry in entries:
        key_id, _, text = entry.partition(":")
        try:
            signature = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if not KEY_ID_PATTERN.match(key_id) or len(signature) != 64:
            raise PoisonMessageError(
                f"header {HEADER_SIGNATURE!r} has a malformed entry {entry[:100]!r}; each is "
                "'<key id>:<base64 of a 64-byte Ed25519 signature>'"
            )
        pairs.append((key_id, signature))
    return pairs


@attrs.frozen
class Authenticity:
    """What a consumer requires of an event's publisher; built from the settings.

    Attributes:
        publishers: ``EVENT_BUS_TRUSTED_PUBLISHERS``: an event type, or ``source:<source>``,
            → the broker users that may publish it.
        trusted_keys: ``EVENT_BUS_TRUSTED_KEYS``, by key id.
        require_signatures: ``EVENT_BUS_REQUIRE_SIGNATURES``: every event must carry a valid
            signature of a trusted key that may sign its source and type.
    """

    publishers: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    trusted_keys: Mapping[str, TrustedKey] = attrs.field(factory=dict)
    require_signatures: bool = False

    @property
    def active(self) -> bool:
        """Whether it checks anything."""
        return bool(self.publishers) or self.require_signatures

    def check(
        self,
        metadata: EventMetadata,
        headers: Mapping[str, Any],
        body: bytes,
        *,
        user_id: str | None,
    ) -> None:
        """Check an event's publisher: its ``user_id``, then its signature, as configured.

        Args:
            metadata: the event's metadata, read from ``headers``.
            headers: the message headers.
            body: the Avro body.
            user_id: the message's ``user_id`` property (the broker checked it), or, for an
                event that has been dead-lettered, the one it arrived with.

        Raises:
            PoisonMessageError: the event fails a check (the reason says which, and why).
        """
        if self.publishers:
            self.check_user(metadata, user_id)
        if self.require_signatures:
            self.check_signature(metadata, headers, body)

    def check_user(self, metadata: EventMetadata, user_id: str | None) -> None:
        """Check ``user_id`` against every entry of the event's type and source.

        Raises:
            PoisonMessageError: it is missing or not an allowed user of an entry.
        """
        event_type, source = metadata.event_type, metadata.source
        for entry in (event_type, SOURCE_PREFIX + source):
            allowed = self.publishers.get(entry)
            if allowed is None or user_id in allowed:
                continue
            users = " or ".join(repr(u) for u in sorted(allowed))
            if not user_id:
                raise PoisonMessageError(
                    f"{event_type} from {source!r} has no user_id, but "
                    f"EVENT_BUS_TRUSTED_PUBLISHERS[{entry!r}] allows only broker user {users}: "
                    "its publisher must set user_id to its broker user (events_celery does)"
                )
            raise PoisonMessageError(
                f"{event_type} from {source!r} was published by broker user {user_id!r}, but "
                f"EVENT_BUS_TRUSTED_PUBLISHERS[{entry!r}] allows only {users}"
            )

    def check_signature(
        self, metadata: EventMetadata, headers: Mapping[str, Any], body: bytes
    ) -> None:
        """Require one valid signature of a trusted key allowed to sign the event.

        Raises:
            PoisonMessageError: unsigned, signed only by keys not trusted (for its source or
                type), or its signature does not match its headers and body (tampered).
        """
        value = headers.get(HEADER_SIGNATURE)
        event_type, source = metadata.event_type, metadata.source
        if value is None:
            raise PoisonMessageError(
                f"{event_type} from {source!r} is not signed (no {HEADER_SIGNATURE!r} header), "
                "and EVENT_BUS_REQUIRE_SIGNATURES is on"
            )
        from cryptography.exceptions import InvalidSignature

        data = signed_bytes(headers, body)
        problems: list[str] = []
        for key_id, signature in read_signatures(value):
            key = self.trusted_keys.get(key_id)
            if key is None:
                problems.append(f"key {key_id!r} is not in EVENT_BUS_TRUSTED_KEYS")
                continue
            if source not in key.sources:
                problems.append(
                    f"key {key_id!r} may sign sources {sorted(key.sources)}, not {source!r}"
                )
                continue
            if event_type not in key.event_types:
                problems.append(f"key {key_id!r} may not sign event type {event_type!r}")
                continue
            try:
                key.public_key.verify(signature, data)
            except InvalidSignature:
                problems.append(
                    f"the signature of key {key_id!r} does not match: the body or a signed "
                    "header changed after signing, or another key signed it"
                )
                continue
            return
        raise PoisonMessageError(
            f"{event_type} from {source!r}: no valid trusted signature ({'; '.join(problems)})"
        )
